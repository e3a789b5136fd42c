//! Finding the router through the mesh directory, and launching one when
//! none runs (DESIGN.md §7): take `spawn.lock`, look again, start
//! `polis router --detach` with its output in `logs/router.log`, and wait
//! for `router.json` by watching the directory, never with a fixed sleep.
//! Any number of frontends doing this at once end with one router.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    time::Duration,
};

use polis_discovery::{Discovery, MeshDir, NodeRecord};
use tonic::transport::Channel;

/// Why no channel to a router could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No router runs and launching was not asked for.
    #[error("no router is running in the mesh at {}; start one with `polis router`", mesh.display())]
    NoRouter {
        /// The mesh directory.
        mesh: PathBuf,
    },
    /// A router was launched but did not come up.
    #[error("could not launch a router: {reason}; see {}", log.display())]
    Launch {
        /// What went wrong.
        reason: String,
        /// The router's log.
        log: PathBuf,
    },
    /// The router's record names an endpoint this client cannot use.
    #[error("the router's endpoint {0:?} is not a unix: socket")]
    Endpoint(String),
    /// The router is published but does not answer.
    #[error("cannot connect to the router at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The router's socket does not take connections.
    #[error("cannot connect to the router at {}: {source}", path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer on the router's socket did not answer the frame transport's
    /// preamble.
    #[error(
        "the peer at {} is not a polis router speaking frames ({reason}); a router older than the frame \
         transport speaks gRPC only: use --grpc or POLIS_TRANSPORT=grpc",
        path.display()
    )]
    NotARouter {
        /// The socket.
        path: PathBuf,
        /// What it did instead.
        reason: String,
    },
    /// The mesh directory failed.
    #[error(transparent)]
    Discovery(#[from] polis_discovery::Error),
}

/// How to start a router when none runs.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `polis` executable.
    pub polis: PathBuf,
    /// Passed on as `--modules-path`.
    pub modules_path: Option<String>,
    /// How long to wait for the new router to publish itself.
    pub timeout: Duration,
}

impl Launcher {
    /// A launcher running `polis`, waiting up to 10 s.
    pub fn new(polis: impl Into<PathBuf>) -> Self {
        Self { polis: polis.into(), modules_path: None, timeout: Duration::from_secs(10) }
    }

    /// A launcher running `$POLIS_BIN`, else `polis` from `PATH`. It names
    /// no modules path: a [`crate::Client`] passes its own
    /// (`ClientOptions::modules_path`), and the launched router reads
    /// `POLIS_MODULES_PATH` from the environment it inherits.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("POLIS_BIN").map_or_else(|| PathBuf::from("polis"), PathBuf::from))
    }
}

/// A channel to the mesh's router, launching one with `launcher` if none runs.
pub async fn connect(mesh: &MeshDir, launcher: Option<&Launcher>) -> Result<Channel, ConnectError> {
    Ok(connect_with_record(mesh, launcher).await?.0)
}

/// [`connect`], also giving the router's record.
pub(crate) async fn connect_with_record(
    mesh: &MeshDir,
    launcher: Option<&Launcher>,
) -> Result<(Channel, NodeRecord), ConnectError> {
    let router = find(mesh, launcher).await?;
    Ok((dial(&router).await?, router))
}

/// The record of the router in office, launching one with `launcher` if
/// none runs.
pub(crate) async fn find(mesh: &MeshDir, launcher: Option<&Launcher>) -> Result<NodeRecord, ConnectError> {
    match mesh.current_router()? {
        Some(router) => Ok(router),
        None => match launcher {
            Some(launcher) => launch(mesh, launcher).await,
            None => Err(ConnectError::NoRouter { mesh: mesh.root().to_owned() }),
        },
    }
}

/// A channel to the router that `record` describes.
pub async fn dial(record: &NodeRecord) -> Result<Channel, ConnectError> {
    let path = socket(record)?;
    polis_mesh::transport::connect_channel(&path)
        .await
        .map_err(|source| ConnectError::Connect { path, source })
}

/// The socket path of the router that `record` describes.
pub(crate) fn socket(record: &NodeRecord) -> Result<PathBuf, ConnectError> {
    let endpoint = record.endpoint.clone().unwrap_or_default();
    match endpoint.strip_prefix("unix:") {
        Some(path) => Ok(PathBuf::from(path)),
        None => Err(ConnectError::Endpoint(endpoint)),
    }
}

/// Starts a router unless another frontend already has, and returns its record.
async fn launch(mesh: &MeshDir, launcher: &Launcher) -> Result<NodeRecord, ConnectError> {
    let log = mesh.logs_dir().join("router.log");
    let fail = |reason: String| ConnectError::Launch { reason, log: log.clone() };

    // Only one frontend launches at a time; the others find its router on
    // their second look.
    let lock = spawn_lock(mesh).await.map_err(|e| fail(format!("cannot take spawn.lock ({e})")))?;
    if let Some(router) = mesh.current_router()? {
        return Ok(router);
    }

    // A candidate that loses the election exits 0: the office is still
    // held, by a router that is leaving (it withdrew `router.json` first).
    // Then launch again, until one takes office or the time is up.
    let deadline = tokio::time::Instant::now() + launcher.timeout;
    let mut backoff = Duration::from_millis(5);
    let router = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match spawn_and_wait(mesh, launcher, &log, left).await? {
            Launched::Published(router) => break router,
            Launched::Failed(reason) => return Err(fail(reason)),
            Launched::Lost if tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!("the launched router lost the election; launching again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            Launched::Lost | Launched::TimedOut => {
                return Err(fail(format!("no router.json within {:?}", launcher.timeout)));
            }
        }
    };
    drop(lock);
    Ok(router)
}

/// Takes `spawn.lock`: at once when it is free, as it is for a cold start,
/// else on a blocking thread (a thread started only when another frontend is
/// launching, whose router we then find on our second look).
async fn spawn_lock(mesh: &MeshDir) -> std::io::Result<std::fs::File> {
    let path = mesh.spawn_lock();
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(std::io::Error::other)?
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// What became of one launched router.
enum Launched {
    Published(NodeRecord),
    /// It exited 0 without taking office: another router holds it.
    Lost,
    Failed(String),
    TimedOut,
}

/// Starts `polis router --detach` and waits up to `timeout` for a router
/// to publish itself, or for the child to exit.
async fn spawn_and_wait(
    mesh: &MeshDir,
    launcher: &Launcher,
    log: &Path,
    timeout: Duration,
) -> Result<Launched, ConnectError> {
    let fail = |reason: String| ConnectError::Launch { reason, log: log.to_owned() };
    let out = OpenOptions::new().create(true).append(true).open(log).map_err(|e| fail(e.to_string()))?;
    let err = out.try_clone().map_err(|e| fail(e.to_string()))?;
    // The router runs in `/`, not in this frontend's working directory: it
    // outlives the frontend, and must not keep a directory busy (or alive,
    // once deleted) that has nothing to do with it. So the paths it is
    // given are made absolute here, where they were meant.
    let polis = absolute_if_relative(&launcher.polis);
    // `--detach` calls setsid, which a group leader may not: Group::Parent.
    let mut cmd = polis_mesh::process::command(&polis, Path::new("/"), polis_mesh::process::Group::Parent);
    cmd.arg("--mesh-dir").arg(mesh.root());
    if let Some(paths) = &launcher.modules_path {
        cmd.arg("--modules-path").arg(polis_discovery::locate::absolute_paths(paths));
    }
    cmd.args(["router", "--detach"]).stdout(out).stderr(err);
    let mut child =
        cmd.spawn().map_err(|e| fail(format!("cannot run {} ({e})", launcher.polis.display())))?;
    tracing::info!("launched router pid {:?}", child.id());

    // The watch is made while the router starts, not before: starting
    // notify's thread and adding its watches is a millisecond of a cold
    // start that the router's exec now covers. Nothing is missed: the
    // first look below is made after the watch is in place, so a router
    // that published before it is seen by that look.
    let watch = mesh.watch()?;
    // Wait for the router to publish itself, or for our child to exit:
    // its exit changes nothing in the directory, so it is waited for too.
    let published = watch.wait_for(timeout, || Ok(mesh.current_router()?.map(Launched::Published)));
    tokio::select! {
        published = published => Ok(published?.unwrap_or(Launched::TimedOut)),
        status = child.wait() => match status {
            Ok(status) if !status.success() => {
                Ok(Launched::Failed(format!("the router exited at start with {status}")))
            }
            // It may have lost to a router that published meanwhile.
            _ => Ok(mesh.current_router()?.map_or(Launched::Lost, Launched::Published)),
        },
    }
}

/// `path` made absolute if it names a file relative to this directory; a
/// bare name is left for the `PATH` lookup.
fn absolute_if_relative(path: &Path) -> PathBuf {
    if path.is_relative() && path.components().count() > 1 {
        std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
    } else {
        path.to_owned()
    }
}
