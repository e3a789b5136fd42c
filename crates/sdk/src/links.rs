//! The loop over links: serve a router until it says `Shutdown`; when it
//! goes away instead, wait for the next one and re-attach to it with the
//! module's state and node record, or exit.

use std::{sync::Arc, time::Duration};

use polis_discovery::{Discovery, MeshDir, NodeGuard, NodeRecord, Role};
use polis_mesh::codec::{FrameCodec, FrameReader, FrameWriter};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use uuid::Uuid;

use crate::{
    LinkError, Module,
    bridge::Bridge,
    session::{self, End, Session},
};

/// What the module does when the router goes away without `Shutdown`.
pub(crate) enum AfterLinkLoss {
    /// Stop serving: [`Module::run`] returns.
    Exit,
    /// Stop serving, for this reason (a refusal that waiting would not
    /// mend, such as a wrong token): [`Module::run`] fails with it. Only
    /// re-attaching across machines (the `etcd` feature) is refused so.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Fail(String),
    /// Serve the next router over this bridge.
    Reattach(Bridge),
}

/// How serving one link ended, for the loop over links.
enum LinkEnd {
    /// Done: `Shutdown` was served.
    Done,
    /// The router with this id went away.
    Lost { router_id: String },
}

/// Handshakes failing in a row on re-attach before the module gives up.
const REATTACH_TRIES: u32 = 5;

/// The module's node records, published after its first handshake and
/// kept across links; dropping them unpublishes.
#[derive(Default)]
struct Records {
    /// In this machine's mesh directory (`POLIS_MESH_DIR`).
    dir: Option<NodeGuard>,
    /// In etcd, on a mesh across machines (`POLIS_DISCOVERY`), so that a
    /// router on another machine sees this module (`across::Published`).
    #[cfg(feature = "etcd")]
    remote: Option<crate::across::Published>,
}

impl Records {
    /// Unpublishes: on etcd, the lease is revoked before the module exits,
    /// so that no router waits for a module that is gone.
    async fn close(self) {
        #[cfg(feature = "etcd")]
        if let Some(remote) = self.remote {
            remote.close().await;
        }
    }
}

impl Module {
    /// Serves one router over `reader` (frames from the router) and
    /// `writer` (frames to it) until it says `Shutdown`. When the router goes
    /// away instead, the module waits for the next one and re-attaches to it
    /// over its socket, keeping its state, or returns if none comes.
    ///
    /// [`Module::run`] calls this with stdin and stdout; tests and other
    /// transports can pass any byte streams.
    pub async fn serve<R, W>(self, reader: R, writer: W) -> Result<(), LinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let node_id = self.node_id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        let mut records = Records::default();
        let served = match self.serve_link(reader, writer, &node_id, false, &mut records).await {
            Ok(end) => self.serve_after(end, &node_id, &mut records).await,
            Err(err) => Err(err),
        };
        records.close().await;
        served
    }

    /// Attaches to the mesh's router (see [`Module::attach`]) and serves it.
    pub(super) async fn serve_attached(self) -> Result<(), LinkError> {
        let node_id = self.node_id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        let mut records = Records::default();
        // No router was ours yet: any live router will do.
        let served =
            self.serve_after(LinkEnd::Lost { router_id: String::new() }, &node_id, &mut records).await;
        records.close().await;
        served
    }

    /// The loop over links: after each loss, the next router.
    async fn serve_after(
        &self,
        mut end: LinkEnd,
        node_id: &str,
        records: &mut Records,
    ) -> Result<(), LinkError> {
        let mut failures = 0;
        loop {
            let LinkEnd::Lost { router_id } = end else { return Ok(()) };
            let mut bridge = match self.after_link_loss(&router_id).await {
                AfterLinkLoss::Exit => return Ok(()),
                AfterLinkLoss::Fail(why) => return Err(LinkError::Reattach(why)),
                AfterLinkLoss::Reattach(bridge) => bridge,
            };
            let (reader, writer) = bridge.take_module_side();
            end = match self.serve_link(reader, writer, node_id, true, records).await {
                Ok(end) => {
                    failures = 0;
                    end
                }
                Err(LinkError::Handshake(why)) if failures + 1 < REATTACH_TRIES => {
                    failures += 1;
                    eprintln!("{}: re-attach failed: {why}; trying again", self.name);
                    LinkEnd::Lost { router_id }
                }
                Err(err) => return Err(err),
            };
            drop(bridge);
        }
    }

    /// Handshakes and serves one link, publishing (or updating) the node record.
    async fn serve_link<R, W>(
        &self,
        reader: R,
        writer: W,
        node_id: &str,
        resumed: bool,
        records: &mut Records,
    ) -> Result<LinkEnd, LinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let codec = FrameCodec::default();
        let mut reader = FrameReader::new(reader, codec);
        let mut writer = FrameWriter::new(writer, codec);

        let welcome = session::handshake(self, &mut reader, &mut writer, node_id, resumed).await?;
        self.publish_records(records, node_id, &welcome.router_id);

        let mut session = Session::start(self.clone(), writer, Arc::new(welcome.config), welcome.epoch);
        let end = session.serve(&mut reader).await;
        let result = match end {
            End::Shutdown(grace) => {
                session.drain(&mut reader, grace).await;
                Ok(LinkEnd::Done)
            }
            End::Lost => Ok(LinkEnd::Lost { router_id: welcome.router_id }),
            End::Failed(err) => Err(err.into()),
        };
        session.close().await;
        result
    }

    /// Decides what to do when the router goes away without `Shutdown`:
    /// wait up to [`Module::reattach_wait`] for another live router in the
    /// mesh, and attach to it. On etcd (`POLIS_DISCOVERY`), that router may
    /// be on any machine (`across`); otherwise it is the one of this
    /// machine's mesh directory. Without either, or when none comes, the
    /// module exits.
    async fn after_link_loss(&self, old_router: &str) -> AfterLinkLoss {
        match &self.remote {
            Some(remote) => self.after_link_loss_remote(remote, old_router).await,
            None => self.after_link_loss_local(old_router).await,
        }
    }

    /// [`Module::after_link_loss`] in this machine's mesh directory: the
    /// next router's socket, found by watching the directory.
    pub(crate) async fn after_link_loss_local(&self, old_router: &str) -> AfterLinkLoss {
        let Some(dir) = &self.mesh_dir else { return AfterLinkLoss::Exit };
        let Ok(mesh) = MeshDir::open(dir) else { return AfterLinkLoss::Exit };
        let Ok(watch) = mesh.watch() else { return AfterLinkLoss::Exit };
        let deadline = Instant::now() + self.reattach_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = watch
                .wait_for(left, || Ok(mesh.current_router()?.filter(|r| r.id.to_string() != old_router)))
                .await;
            let Ok(Some(router)) = next else {
                eprintln!("{}: no router came within {:?}; exiting", self.name, self.reattach_wait);
                return AfterLinkLoss::Exit;
            };
            match Bridge::connect(&router, self.name.clone()).await {
                Ok(bridge) => return AfterLinkLoss::Reattach(bridge),
                // It may not listen yet, or already be gone: look again.
                Err(err) if Instant::now() < deadline => {
                    eprintln!("{}: cannot reach router {}: {err}", self.name, router.id);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return AfterLinkLoss::Exit,
            }
        }
    }

    /// This module's node record, attached to `router_id`.
    fn record(&self, node_id: &str, router_id: &str) -> Option<NodeRecord> {
        let id = Uuid::parse_str(node_id).ok()?;
        let mut record = NodeRecord::new(Role::Module, self.name.clone());
        record.id = id;
        record.services = vec![self.name.clone()];
        record.version = self.version.clone();
        record.router = Uuid::parse_str(router_id).ok();
        Some(record)
    }

    /// Publishes this module's node records (or updates them, on a
    /// re-attach) to name `router_id`.
    fn publish_records(&self, records: &mut Records, node_id: &str, router_id: &str) {
        match &records.dir {
            Some(guard) => {
                if let Some(updated) = self.record(node_id, router_id) {
                    let _ = guard.update(&updated);
                }
            }
            None => records.dir = self.publish(node_id, router_id),
        }
        // In etcd in the background, never in the way of the first call.
        #[cfg(feature = "etcd")]
        if let (Some(remote), Some(record)) = (&self.remote, self.record(node_id, router_id)) {
            match &records.remote {
                Some(published) => published.update(record),
                None => records.remote = Some(crate::across::Published::start(&self.name, remote, record)),
            }
        }
    }

    /// Publishes this module's node record when a mesh directory is set.
    /// Failing to is worth a warning, not an exit: calls still work.
    fn publish(&self, node_id: &str, router_id: &str) -> Option<NodeGuard> {
        let dir = self.mesh_dir.as_ref()?;
        let published = (|| {
            let record = self
                .record(node_id, router_id)
                .ok_or_else(|| format!("node id {node_id:?} is not a UUID"))?;
            let mesh = MeshDir::open(dir).map_err(|err| err.to_string())?;
            mesh.publish(&record).map_err(|err| err.to_string())
        })();
        match published {
            Ok(guard) => Some(guard),
            Err(err) => {
                eprintln!("{}: warning: not published in {}: {err}", self.name, dir.display());
                None
            }
        }
    }
}
