//! Where a lazy load looks for a module on its way back, and what wakes it
//! while it waits: [`Sightings`] (the mesh's records beyond this machine's
//! directory) and [`Wakeups`] (a change in the directory or in the
//! sightings).
//!
//! The wait is woken by changes, not by a clock: this machine's directory
//! through its [`DirWatch`] (inotify sees a record written or removed, and
//! a lock let go by a process that died), the sightings through their
//! [`Sightings::changes`] (etcd: a watch on the mesh's prefix, which sees a
//! record put, deleted, or gone with its lease). Only a source that cannot
//! be watched is looked at again now and then (`HostConfig::reattach_poll`):
//! a directory watched by polling (which compares files' times and sizes,
//! and so misses a lock let go), or sightings whose watch could not be had
//! or broke (etcd out of reach, a watch it cancelled).

use std::time::Duration;

use polis_discovery::{AsyncDiscovery, DirWatch, Discovery, MeshDir, NodeRecord};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};

use super::BoxFuture;

/// A stream that yields after changes to a set of records (one item may
/// stand for many changes).
pub type Changes = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

/// The live node records of a mesh beyond this machine's directory, as a
/// lazy load asks for them: whether a module serving the name lives
/// somewhere, on its way back to a router, before another is started.
/// Every [`AsyncDiscovery`] backend is one (its `list` and `watch`); a
/// record whose liveness is over (an etcd lease lapsed or revoked) is not
/// among them.
///
/// ```
/// # use std::sync::Arc;
/// # async fn demo(mesh: polis_discovery::MeshDir) {
/// let mut config = polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(None));
/// config.sightings = Some(Arc::new(mesh)); // for a router on etcd: its `polis_etcd::Etcd`
/// # }
/// ```
pub trait Sightings: Send + Sync + 'static {
    /// The live records, or why they cannot be had (then nothing is seen).
    fn records(&self) -> BoxFuture<'_, Result<Vec<NodeRecord>, String>>;

    /// A stream that yields after the records change, in place when this
    /// returns: a change made after it returns is never missed by a caller
    /// that then asks for [`Sightings::records`]. The stream ends if the
    /// watch does. An error (the default: no watch) makes a waiting load
    /// look again every `HostConfig::reattach_poll` instead.
    fn changes(&self) -> BoxFuture<'_, Result<Changes, String>> {
        Box::pin(async { Err("these sightings cannot be watched".to_owned()) })
    }
}

impl<D: AsyncDiscovery> Sightings for D {
    fn records(&self) -> BoxFuture<'_, Result<Vec<NodeRecord>, String>> {
        Box::pin(async move { self.list().await.map(|listing| listing.nodes).map_err(|e| e.to_string()) })
    }

    fn changes(&self) -> BoxFuture<'_, Result<Changes, String>> {
        Box::pin(async move {
            let watch = self.watch().await.map_err(|e| e.to_string())?;
            Ok(Box::pin(watch) as Changes)
        })
    }
}

impl std::fmt::Debug for dyn Sightings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sightings")
    }
}

/// What wakes a load waiting for a module on its way back: a change in this
/// machine's directory or in the sightings, or, only while one of them
/// cannot be watched, the passing of `poll`. Made before the look that
/// precedes each wait, so that a change between the two is kept.
pub(super) struct Wakeups {
    dir: Option<DirWatch>,
    elsewhere: Option<Changes>,
    poll: Duration,
    /// Whether some source is not watched, so that `poll` applies.
    polling: bool,
}

impl Wakeups {
    /// Watches `mesh` and `sightings`; asking for the sightings' watch is
    /// bounded by `deadline` (the load's own).
    pub(super) async fn new(
        mesh: &MeshDir,
        sightings: Option<&dyn Sightings>,
        poll: Duration,
        deadline: Instant,
    ) -> Self {
        let mut polling = false;
        let dir = match Discovery::watch(mesh) {
            Ok(watch) => {
                polling |= !watch.sees_lock_release();
                Some(watch)
            }
            Err(why) => {
                tracing::debug!("cannot watch the mesh directory ({why}); looking every {poll:?}");
                polling = true;
                None
            }
        };
        let elsewhere = match sightings {
            None => None,
            Some(sightings) => match tokio::time::timeout_at(deadline, sightings.changes()).await {
                Ok(Ok(changes)) => Some(changes),
                Ok(Err(why)) => {
                    tracing::debug!(
                        "cannot watch the mesh beyond this machine ({why}); looking every {poll:?}"
                    );
                    polling = true;
                    None
                }
                Err(_) => {
                    polling = true;
                    None
                }
            },
        };
        Self { dir, elsewhere, poll, polling }
    }

    /// Returns after a change (or what may be one), or after `poll` while
    /// a source is not watched.
    pub(super) async fn next(&mut self) {
        let Self { dir, elsewhere, poll, polling } = self;
        let dir_changed = async {
            match dir {
                Some(watch) => watch.changed().await,
                None => std::future::pending().await,
            }
        };
        let elsewhere_changed = async {
            match elsewhere.as_mut() {
                Some(changes) => changes.next().await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            if *polling {
                tokio::time::sleep(*poll).await;
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = dir_changed => {}
            item = elsewhere_changed => {
                if item.is_none() {
                    tracing::debug!("the watch beyond this machine ended; looking every {poll:?}");
                    *elsewhere = None;
                    *polling = true;
                }
            }
            () = tick => {}
        }
    }
}
