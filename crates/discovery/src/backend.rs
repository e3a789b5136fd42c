//! The asynchronous discovery interface that every backend implements: the
//! mesh directory ([`MeshDir`]) and etcd (the `polis-etcd` crate).
//!
//! It is what [`crate::Discovery`] (the directory's blocking view) cannot
//! be: etcd's client is asynchronous, and its campaign waits until elected.
//! The router's term is an [`Office`]: it carries the epoch, a fencing token
//! that only grows from one term to the next, and tells its holder when the
//! office is lost (an etcd lease that could not be renewed in time), so
//! that a deposed router stops taking calls before anyone else can be
//! elected.

use std::future::Future;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{Campaign, Listing, MeshDir, NodeGuard, NodeRecord, Result, Term};

/// Holding the router office of one backend.
pub trait Office: Send + Sync + 'static {
    /// The fencing token: greater than every earlier term's.
    fn epoch(&self) -> u64;
    /// Cancelled once the office is lost while still held (never for a
    /// lock held by this process): stop serving at once.
    fn lost(&self) -> CancellationToken;
}

/// Discovery of the nodes of one mesh, and election of its router, on any
/// backend.
pub trait AsyncDiscovery: Send + Sync + 'static {
    /// Keeps a published record alive; dropping it unpublishes the record.
    type Guard: Send + 'static;
    /// Proof of holding the router office; dropping it resigns.
    type Term: Office;
    /// Wakes (one item, coalesced) on changes to the published records.
    type Watch: tokio_stream::Stream<Item = ()> + Send + Unpin + 'static;

    /// Publishes `record`, live for as long as the guard is kept.
    fn publish(&self, record: &NodeRecord) -> impl Future<Output = Result<Self::Guard>> + Send;
    /// Every live record.
    fn list(&self) -> impl Future<Output = Result<Listing>> + Send;
    /// The live record serving `name`: the router's for `"router"`, with its
    /// epoch.
    fn resolve(&self, name: &str) -> impl Future<Output = Result<Option<NodeRecord>>> + Send;
    /// Waits until this candidate holds the router office. `record` is what
    /// frontends will resolve as the router (where the backend stores it
    /// with the office, as etcd's election value does).
    fn campaign(&self, record: &NodeRecord) -> impl Future<Output = Result<Self::Term>> + Send;
    /// A stream that yields after changes to the published records.
    fn watch(&self) -> impl Future<Output = Result<Self::Watch>> + Send;
}

impl Office for Term {
    fn epoch(&self) -> u64 {
        Term::epoch(self)
    }

    fn lost(&self) -> CancellationToken {
        // A lock held by a live process is never lost.
        CancellationToken::new()
    }
}

impl AsyncDiscovery for MeshDir {
    type Guard = NodeGuard;
    type Term = Term;
    type Watch = ReceiverStream<()>;

    async fn publish(&self, record: &NodeRecord) -> Result<NodeGuard> {
        crate::Discovery::publish(self, record)
    }

    async fn list(&self) -> Result<Listing> {
        crate::Discovery::list(self)
    }

    async fn resolve(&self, name: &str) -> Result<Option<NodeRecord>> {
        crate::Discovery::resolve(self, name)
    }

    /// Takes `router.lock`, waiting on a thread of its own while another
    /// router holds it; `router.json` is the router's to write once its
    /// socket listens ([`Term::publish_router`]).
    async fn campaign(&self, _record: &NodeRecord) -> Result<Term> {
        if let Campaign::Won(term) = crate::Discovery::campaign(self)? {
            return Ok(term);
        }
        let mesh = self.clone();
        tokio::task::spawn_blocking(move || crate::Discovery::standby(&mesh))
            .await
            .map_err(|e| crate::Error::Watch { path: self.root().to_owned(), reason: e.to_string() })?
    }

    async fn watch(&self) -> Result<ReceiverStream<()>> {
        let watch = crate::Discovery::watch(self)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // The watch lives in this task until the stream is dropped (seen at
        // the next change).
        tokio::spawn(async move {
            loop {
                watch.changed().await;
                match tx.try_send(()) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => break,
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use tokio_stream::StreamExt;

    /// The directory through the asynchronous interface: the same records,
    /// the same epochs, and a watch that wakes on a publication.
    #[tokio::test]
    async fn the_directory_serves_the_async_interface() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();
        let mut watch = AsyncDiscovery::watch(&mesh).await.unwrap();

        let record = NodeRecord::new(Role::Router, "router");
        let term = AsyncDiscovery::campaign(&mesh, &record).await.unwrap();
        assert_eq!(Office::epoch(&term), 1);
        assert!(!term.lost().is_cancelled());
        let _guard = AsyncDiscovery::publish(&mesh, &record).await.unwrap();
        term.publish_router(&record).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await.unwrap().unwrap();

        let router = AsyncDiscovery::resolve(&mesh, "router").await.unwrap().unwrap();
        assert_eq!((router.id, router.epoch), (record.id, Some(1)));
        let listing = AsyncDiscovery::list(&mesh).await.unwrap();
        assert_eq!(listing.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [record.id]);

        // A second candidate waits until the first resigns, then holds a
        // greater epoch.
        let standby = tokio::spawn({
            let mesh = mesh.clone();
            async move { AsyncDiscovery::campaign(&mesh, &NodeRecord::new(Role::Router, "router")).await }
        });
        tokio::task::yield_now().await;
        assert!(!standby.is_finished());
        drop(term);
        assert_eq!(Office::epoch(&standby.await.unwrap().unwrap()), 2);
    }
}
