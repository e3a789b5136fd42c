//! For the fuzz targets in `fuzz/` only, not an API: the router's door and
//! frame session (`accept.rs`'s sniff, then `frames.rs`) served on a real
//! socket to whatever bytes a fuzzer makes up, with a host that has no
//! modules (every call is answered from the router itself).

use std::{path::Path, sync::Arc, time::Duration};

use polis_discovery::MeshDir;
use polis_mesh::transport::{self, LocalListener, Opened};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    frames::FrameDoor,
    sessions::{Leases, SessionConfig, SessionHub, SessionTable},
};
use crate::{
    HostConfig,
    host::{Host, RouterIdentity},
    manifest::ModulePath,
};

/// The largest module payload the harness's router takes: small, so that
/// the fuzzer reaches the limit (a frontend's frame may be 64 KiB more).
pub const MAX_FRAME_LEN: usize = 4096;

/// How long one connection may take to end once its input has ended.
const SESSION_END: Duration = Duration::from_secs(10);

/// A router's frame door on a socket in a directory of the caller's.
#[allow(missing_debug_implementations)]
pub struct FrameSession {
    runtime: tokio::runtime::Runtime,
    door: Arc<FrameDoor>,
    listener: LocalListener,
}

impl FrameSession {
    /// A door on `dir/router.sock`; `dir` is a fresh, private directory.
    pub fn new(dir: &Path) -> Self {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let mesh = MeshDir::open(dir).expect("the mesh directory");
        let mut config = HostConfig::new(ModulePath::from_dirs(Vec::new()));
        config.max_frame_len = MAX_FRAME_LEN;
        let (door, listener) = runtime.block_on(async {
            let host = Host::new(config, mesh, RouterIdentity { id: uuid::Uuid::new_v4(), epoch: 1 });
            let hub = SessionHub {
                config: SessionConfig::default(),
                leases: Leases::new(),
                table: Arc::new(SessionTable::default()),
                router_id: "fuzz".to_owned(),
                epoch: 1,
                tracker: TaskTracker::new(),
                leaving: CancellationToken::new(),
                handover: CancellationToken::new(),
            };
            let uid = rustix::process::geteuid().as_raw();
            let listener = transport::bind(&dir.join("router.sock")).expect("bind the socket");
            (Arc::new(FrameDoor { host, hub, uid }), listener)
        });
        Self { runtime, door, listener }
    }

    /// Connects, sends `input` and ends the connection's writing half, as
    /// a client that then only reads; returns everything the router wrote
    /// back until it closed. Panics if the router has not closed the
    /// connection within 10 s of the input's end.
    pub fn run(&self, input: &[u8]) -> Vec<u8> {
        self.runtime.block_on(async {
            let path = self.listener.path().to_owned();
            let (client, server) =
                tokio::join!(tokio::net::UnixStream::connect(&path), self.listener.accept());
            let (client, server) = (client.expect("connect"), server.expect("accept"));
            let door = self.door.clone();
            // As the door does (`accept.rs`): frames are served, anything
            // else would go to tonic, which is not fuzzed here.
            let serving = tokio::spawn(async move {
                if let Ok(Opened::Frames { conn, version }) = transport::sniff(server).await {
                    door.serve(conn, version).await;
                }
            });
            let (mut read, mut write) = client.into_split();
            let writing = async {
                let _ = write.write_all(input).await;
                let _ = write.shutdown().await;
            };
            let reading = async {
                let mut out = Vec::new();
                let _ = read.read_to_end(&mut out).await;
                out
            };
            let ((), out) = tokio::join!(writing, reading);
            tokio::time::timeout(SESSION_END, serving)
                .await
                .expect("the session ends once its input has")
                .expect("the session's task does not panic");
            out
        })
    }
}
