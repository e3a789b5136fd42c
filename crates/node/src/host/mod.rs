//! The module host: finds manifests, starts modules on demand (dependencies
//! first), supervises them with a restart budget, and stops them.
//!
//! Every module has an entry for as long as the router knows it; an entry
//! has at most one live [`Instance`]. Loads of one module are serialized by
//! the entry's async mutex, so 64 first calls at once start one process.
//!
//! # Layout
//! - `registry`: the entries, and what `polis status` shows of them.
//! - `load`: a module comes to be: started on demand (manifest, dependencies,
//!   backoff, launch, handshake) or attached over the socket.
//! - `handshake`: the one `Hello`/`Welcome` path, and JSON-RPC's `initialize`.
//! - `supervise` and `restart`: what happens when an instance ends; the
//!   restart budget and backoff as a pure policy.
//! - `stop`: unload one module; release or shut down them all.
//! - `replace`: a running module replaced by its new files once its calls
//!   in flight are answered (a module-level drain).
//! - `instance`: one running module; `link` and `jsonrpc`: its wire;
//!   `spawn`: the one place its process is started, behind a seam for tests.
//! - `outgoing`: a module's own calls to other services, routed like a
//!   frontend's, with permission, depth and deadline checks.
//! - `methods`: what a module declared it serves, and the check of a call
//!   against it; `tap`: what the monitor sees of each call.
//! - `sightings`: where a lazy load looks for a module on its way back
//!   (this machine's directory, and the mesh beyond it), and the watches
//!   that wake it while it waits.
//! - `wasm`: a `.wasm` module's process is `polis-wasm` with its sandbox's
//!   grants.

mod events;
mod handshake;
mod instance;
mod jsonrpc;
mod link;
mod load;
mod methods;
mod outgoing;
mod registry;
mod replace;
mod restart;
mod search;
mod sightings;
mod spawn;
mod stop;
mod supervise;
mod tap;
#[cfg(test)]
mod tests;
mod unsolicited;
mod wasm;

pub use sightings::{Changes, Sightings};
pub(crate) use tap::{Monitor, Watch};

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use polis_discovery::MeshDir;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;
use uuid::Uuid;

use instance::Instance;
pub(crate) use instance::{Item, PendingCall};
use registry::Entry;
use spawn::Launch;

use crate::manifest::{LookupError, ModulePath};

/// How the host runs its modules.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where manifests are found.
    pub modules_path: ModulePath,
    /// How long a module has to say hello after it starts.
    pub handshake_timeout: Duration,
    /// How long a module has to exit after `Shutdown` before it is killed.
    pub grace: Duration,
    /// The largest frame, either way.
    pub max_frame_len: usize,
    /// How long a lazy load waits for a module of the same name that
    /// outlived its router to re-attach, before starting a new one.
    pub reattach_wait: Duration,
    /// How often such a load looks again at a source of records it cannot
    /// watch (a mesh directory watched by polling, sightings without a
    /// watch); a watched one wakes it when it changes.
    pub reattach_poll: Duration,
    /// Crashes tolerated within `restart_window` before giving up.
    pub restart_budget: usize,
    /// The window the budget counts over.
    pub restart_window: Duration,
    /// What every spawned module is told beside its mesh directory and
    /// node id: for a router on etcd, how to find and authenticate to the
    /// next router (`POLIS_DISCOVERY`, `POLIS_TOKEN_FILE`, `POLIS_TLS_CA`).
    pub module_env: Vec<(String, std::ffi::OsString)>,
    /// Where else than this machine's mesh directory a lazy load looks for
    /// a module on its way back (for a router on etcd: the mesh's records
    /// in etcd, where modules on every machine publish themselves). `None`:
    /// the mesh directory alone.
    pub sightings: Option<Arc<dyn Sightings>>,
}

impl HostConfig {
    /// Defaults: 5 s handshake, 3 s grace, 16 MiB frames, 5 crashes a minute,
    /// a 5 s re-attach wait.
    pub fn new(modules_path: ModulePath) -> Self {
        Self {
            modules_path,
            handshake_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(3),
            max_frame_len: polis_mesh::codec::DEFAULT_MAX_FRAME_LEN,
            reattach_wait: Duration::from_secs(5),
            reattach_poll: Duration::from_millis(50),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
            module_env: Vec::new(),
            sightings: None,
        }
    }

    fn budget(&self) -> restart::Budget {
        restart::Budget { limit: self.restart_budget, window: self.restart_window }
    }
}

/// Who the router is, as modules are told in `Welcome`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouterIdentity {
    pub(crate) id: Uuid,
    pub(crate) epoch: u64,
}

pub(crate) struct Host {
    config: HostConfig,
    mesh: MeshDir,
    router: RouterIdentity,
    /// How module processes are started: for real, or in-process in tests.
    launcher: Box<dyn Launch>,
    // std Mutex: only held to look up or insert an entry.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// The modules path: the config's, plus what frontends added (`search`).
    search: std::sync::RwLock<ModulePath>,
    tracker: TaskTracker,
    closing: CancellationToken,
    /// The watchers of the calls (`Admin.Monitor`).
    monitor: Arc<Monitor>,
    /// The event bus every link shares.
    bus: Arc<crate::bus::Bus>,
}

/// A boxed future, as [`Sightings`] answers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Host {
    pub(crate) fn new(config: HostConfig, mesh: MeshDir, router: RouterIdentity) -> Arc<Self> {
        Self::with_launcher(config, mesh, router, Box::new(spawn::Spawn))
    }

    fn with_launcher(
        config: HostConfig,
        mesh: MeshDir,
        router: RouterIdentity,
        launcher: Box<dyn Launch>,
    ) -> Arc<Self> {
        let monitor = Arc::new(Monitor::default());
        Arc::new(Self {
            search: std::sync::RwLock::new(config.modules_path.clone()),
            config,
            mesh,
            router,
            launcher,
            entries: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            closing: CancellationToken::new(),
            bus: Arc::new(crate::bus::Bus::new(monitor.clone())),
            monitor,
        })
    }

    pub(crate) fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The watchers of the calls, for `Admin.Monitor`.
    pub(crate) fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// The event bus, shared by modules, frontends and the router.
    pub(crate) fn bus(&self) -> &Arc<crate::bus::Bus> {
        &self.bus
    }
}

fn lookup_status(error: &LookupError) -> Status {
    match error {
        LookupError::InvalidName(m) => Status::invalid_argument(m.clone()),
        LookupError::NotFound { .. } => Status::not_found(error.to_string()),
        LookupError::Manifest(_) | LookupError::Dependency { .. } => {
            Status::failed_precondition(error.to_string())
        }
    }
}
