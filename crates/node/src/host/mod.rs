//! The module host: finds manifests, starts modules on demand (dependencies
//! first), supervises them with a restart budget, and stops them.
//!
//! Every module has an [`Entry`] for as long as the router knows it; an
//! entry has at most one live [`Instance`]. Loads of one module are
//! serialized by the entry's async mutex, so 64 first calls at once start
//! one process.

mod instance;
mod jsonrpc;
mod link;
mod spawn;

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use polis_discovery::{Discovery, MeshDir};
use polis_mesh::{
    PROTOCOL_VERSION,
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind},
};
use tokio::io::AsyncWriteExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;
use uuid::Uuid;

use instance::{Instance, Parts, Process};
pub(crate) use instance::{Item, PendingCall};
use link::{LinkReader, LinkWriter};

use crate::manifest::{LookupError, Manifest, ModulePath, Protocol, RestartPolicy};

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
    /// Crashes tolerated within `restart_window` before giving up.
    pub restart_budget: usize,
    /// The window the budget counts over.
    pub restart_window: Duration,
}

impl HostConfig {
    /// Defaults: 5 s handshake, 3 s grace, 16 MiB frames, 5 crashes a minute.
    pub fn new(modules_path: ModulePath) -> Self {
        Self {
            modules_path,
            handshake_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(3),
            max_frame_len: polis_mesh::codec::DEFAULT_MAX_FRAME_LEN,
            reattach_wait: Duration::from_secs(5),
            restart_budget: 5,
            restart_window: Duration::from_secs(60),
        }
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
    // std Mutex: only held to look up or insert an entry.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    tracker: TaskTracker,
    closing: CancellationToken,
}

struct Entry {
    name: String,
    /// Woken when a module attaches under this name.
    attached: tokio::sync::Notify,
    // Held across the await of a load: one load of a module at a time.
    load: tokio::sync::Mutex<()>,
    // std Mutex: never held across an await.
    state: Mutex<EntryState>,
}

#[derive(Default)]
struct EntryState {
    instance: Option<Arc<Instance>>,
    manifest: Option<Manifest>,
    crashes: VecDeque<Instant>,
    restarts: u32,
    /// Set when the module may not be started again without a hand load.
    failed: Option<String>,
    last_error: Option<String>,
    /// Calls served by earlier instances.
    past_calls: u64,
}

/// A module as `polis status` shows it.
pub(crate) fn module_info(name: &str, state: &str) -> pb::ModuleInfo {
    pb::ModuleInfo { name: name.to_owned(), state: state.to_owned(), ..Default::default() }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Host {
    pub(crate) fn new(config: HostConfig, mesh: MeshDir, router: RouterIdentity) -> Arc<Self> {
        Arc::new(Self {
            config,
            mesh,
            router,
            entries: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            closing: CancellationToken::new(),
        })
    }

    pub(crate) fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Starts every `autostart` module, in the background.
    pub(crate) fn autostart(self: &Arc<Self>) {
        for manifest in self.config.modules_path.scan().into_iter().flatten().filter(|m| m.autostart) {
            let host = self.clone();
            self.tracker.spawn(async move {
                if let Err(status) = host.instance(&manifest.name).await {
                    tracing::warn!("autostart of {} failed: {}", manifest.name, status.message());
                }
            });
        }
    }

    fn entry(&self, name: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("entries lock");
        entries
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    name: name.to_owned(),
                    attached: tokio::sync::Notify::new(),
                    load: tokio::sync::Mutex::new(()),
                    state: Mutex::new(EntryState::default()),
                })
            })
            .clone()
    }

    /// The running instance serving `name`, started (with its dependencies)
    /// if it is not running.
    pub(crate) fn instance<'a>(
        self: &'a Arc<Self>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Instance>, Status>> {
        Box::pin(async move {
            if self.closing.is_cancelled() {
                return Err(Status::unavailable("the router is shutting down"));
            }
            crate::manifest::validate_name(name).map_err(Status::invalid_argument)?;
            if let Some(live) = self.live(name) {
                return Ok(live);
            }
            // Only modules that exist get an entry (and a line in `polis status`).
            if !self.entries.lock().expect("entries lock").contains_key(name) {
                self.config.modules_path.find(name).map_err(|e| lookup_status(&e))?;
            }
            let entry = self.entry(name);
            let _loading = entry.load.lock().await;
            if let Some(live) = self.live(name) {
                return Ok(live);
            }
            if let Some(failed) = entry.state.lock().expect("state lock").failed.clone() {
                return Err(Status::unavailable(failed));
            }
            // A module of this name that outlived its router is re-attaching:
            // starting another would lose its state.
            if let Some(live) = self.await_reattach(&entry).await {
                return Ok(live);
            }
            let order = self.config.modules_path.load_order(name).map_err(|e| lookup_status(&e))?;
            let (manifest, deps) = order.split_last().expect("load order ends with the module itself");
            for dep in deps {
                self.instance(&dep.name).await.map_err(|s| {
                    Status::failed_precondition(format!(
                        "cannot load {name}: its dependency {} failed to start: {}",
                        dep.name,
                        s.message()
                    ))
                })?;
            }
            self.backoff(&entry).await;
            let instance = match self.start(manifest).await {
                Ok(i) => i,
                Err(status) => {
                    entry.state.lock().expect("state lock").last_error = Some(status.message().to_owned());
                    return Err(status);
                }
            };
            {
                let mut state = entry.state.lock().expect("state lock");
                state.instance = Some(instance.clone());
                state.manifest = Some(manifest.clone());
            }
            self.tracker.spawn(self.clone().supervise(entry.clone(), instance.clone()));
            Ok(instance)
        })
    }

    /// Waits (bounded) for a live module serving `entry`'s name that is
    /// not linked here, to attach. Such a module outlived its router, or
    /// lost its link to this one, and is on its way back with its state;
    /// starting another would lose that. Called with no live instance.
    async fn await_reattach(&self, entry: &Entry) -> Option<Arc<Instance>> {
        let on_its_way = || -> bool {
            let nodes = self.mesh.list().map(|l| l.nodes).unwrap_or_default();
            nodes.iter().any(|n| n.role == polis_discovery::Role::Module && n.services.contains(&entry.name))
        };
        if !on_its_way() {
            return None;
        }
        tracing::info!("waiting for module {} to re-attach", entry.name);
        let deadline = tokio::time::Instant::now() + self.config.reattach_wait;
        loop {
            let attached = entry.attached.notified();
            if let Some(live) = self.live(&entry.name) {
                return Some(live);
            }
            // It may be exiting rather than coming back: look again now and then.
            if !on_its_way() || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                () = attached => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Takes in a module attached over the socket: one that outlived its
    /// router (`resumed`) or one that loaded itself. Answers the `Hello` with
    /// `Welcome` and routes to the module until its stream ends.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        mut inbound: tonic::Streaming<Frame>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Frame, Status>>, Status> {
        if self.closing.is_cancelled() {
            return Err(Status::unavailable("the router is shutting down"));
        }
        let hello = match tokio::time::timeout(self.config.handshake_timeout, inbound.message()).await {
            Ok(Ok(Some(Frame { kind: Some(Kind::Hello(hello)) }))) => hello,
            Ok(Ok(_)) => return Err(Status::invalid_argument("an attached module starts with Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello in time")),
        };
        crate::manifest::validate_name(&hello.name).map_err(Status::invalid_argument)?;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "module {} speaks frame protocol {}, this router speaks {PROTOCOL_VERSION}",
                hello.name, hello.protocol_version
            )));
        }
        let manifest = self.config.modules_path.find(&hello.name).ok();
        let config = manifest.as_ref().map_or(serde_json::Value::Null, |m| m.config.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let welcome = pb::Welcome {
            router_id: self.router.id.to_string(),
            epoch: self.router.epoch,
            config_json: serde_json::to_vec(&config).unwrap_or_default().into(),
        };
        let _ = tx.send(Ok(Frame { kind: Some(Kind::Welcome(welcome)) })).await;

        let node_id = Uuid::parse_str(&hello.node_id).ok();
        let entry = self.entry(&hello.name);
        // The same module attaching again means its previous link is gone,
        // even if this side has not noticed yet: let go of that one.
        let stale = {
            let state = entry.state.lock().expect("state lock");
            state.instance.clone().filter(|i| !i.is_closed() && node_id.is_some() && i.node_id == node_id)
        };
        if let Some(stale) = stale {
            tracing::info!("module {} re-attached; dropping its previous link", hello.name);
            stale.release().await;
        }
        let instance = {
            let mut state = entry.state.lock().expect("state lock");
            if let Some(live) = state.instance.as_ref().filter(|i| !i.is_closed()) {
                return Err(Status::already_exists(format!(
                    "module {} is already served here (pid {})",
                    hello.name,
                    live.pid.unwrap_or(0)
                )));
            }
            let parts = Parts {
                name: hello.name.clone(),
                version: hello.version.clone(),
                protocol: Protocol::Frames,
                process: Process::Attached {
                    pid: (hello.pid != 0).then_some(hello.pid),
                    node: node_id.map(|id| (self.mesh.clone(), id)),
                },
                reader: LinkReader::Attached(inbound),
                writer: LinkWriter::Attached(tx),
                log: self.mesh.logs_dir().join(format!("{}.log", hello.name)),
            };
            let instance = Instance::run(parts, &self.tracker);
            state.instance = Some(instance.clone());
            state.manifest = manifest;
            instance
        };
        tracing::info!(
            "module {} attached (pid {}, {})",
            hello.name,
            hello.pid,
            if hello.resumed { "re-parented" } else { "self-loaded" }
        );
        entry.attached.notify_waiters();
        self.tracker.spawn(self.clone().supervise(entry.clone(), instance));
        Ok(rx)
    }

    fn live(&self, name: &str) -> Option<Arc<Instance>> {
        let entry = self.entries.lock().expect("entries lock").get(name).cloned()?;
        let state = entry.state.lock().expect("state lock");
        state.instance.clone().filter(|i| !i.is_closed())
    }

    /// After a crash, waits out a doubling delay (100 ms, 200 ms, … up to 5 s)
    /// counted from the crash.
    async fn backoff(&self, entry: &Entry) {
        let wait = {
            let state = entry.state.lock().expect("state lock");
            let Some(last) = state.crashes.back() else { return };
            let n = state.crashes.len().min(7) as u32;
            let delay = Duration::from_millis(100 * 2u64.pow(n - 1)).min(Duration::from_secs(5));
            delay.saturating_sub(last.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for an instance to end, then applies the restart policy.
    async fn supervise(self: Arc<Self>, entry: Arc<Entry>, instance: Arc<Instance>) {
        let exit = instance.closed().await;
        let restart_now = {
            let mut state = entry.state.lock().expect("state lock");
            if state.instance.as_ref().is_some_and(|i| Arc::ptr_eq(i, &instance)) {
                state.instance = None;
            }
            state.past_calls += instance.calls.load(std::sync::atomic::Ordering::Relaxed);
            if !exit.crashed {
                false
            } else {
                state.last_error = Some(exit.reason.clone());
                let now = Instant::now();
                state.crashes.push_back(now);
                while state
                    .crashes
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.config.restart_window)
                {
                    state.crashes.pop_front();
                }
                let policy = state.manifest.as_ref().map_or(RestartPolicy::OnFailure, |m| m.restart);
                if policy == RestartPolicy::Never {
                    state.failed = Some(format!(
                        "{}; its restart policy is \"never\": run `polis module load {}` to start it again",
                        exit.reason, entry.name
                    ));
                } else if state.crashes.len() > self.config.restart_budget {
                    state.failed = Some(format!(
                        "module {} crashed {} times within {:?}: its restart budget is spent; \
                         fix it, then run `polis module reload {}` (last: {})",
                        entry.name,
                        state.crashes.len(),
                        self.config.restart_window,
                        entry.name,
                        exit.reason
                    ));
                } else {
                    state.restarts += 1;
                }
                state.failed.is_none() && policy == RestartPolicy::Always
            }
        };
        if restart_now
            && !self.closing.is_cancelled()
            && let Err(status) = self.instance(&entry.name).await
        {
            tracing::warn!("restart of {} failed: {}", entry.name, status.message());
        }
    }

    /// Spawns a module and completes its handshake within the deadline.
    async fn start(&self, manifest: &Manifest) -> Result<Arc<Instance>, Status> {
        let node_id = Uuid::new_v4().to_string();
        let log = self.mesh.logs_dir().join(format!("{}.log", manifest.name));
        let env = spawn::SpawnEnv { mesh_dir: self.mesh.root(), node_id: &node_id, log: &log };
        let mut child = spawn::spawn(manifest, &env).map_err(|e| {
            Status::failed_precondition(format!(
                "cannot start module {} ({}): {e}",
                manifest.name,
                manifest.exec.display()
            ))
        })?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(Status::internal("spawned module has no stdio pipes"));
        };
        tracing::info!("started module {} (pid {:?})", manifest.name, child.id());

        let handshake = self.handshake(manifest, stdin, stdout);
        let (reader, writer, version) =
            match tokio::time::timeout(self.config.handshake_timeout, handshake).await {
                Ok(Ok(link)) => link,
                outcome => {
                    let _ = child.start_kill();
                    let status = child.wait().await.ok();
                    let why = match outcome {
                        Ok(Err(why)) => why,
                        _ => format!("no hello within {:?}", self.config.handshake_timeout),
                    };
                    let tail = spawn::log_tail(&log, 3);
                    let mut message = format!("module {} failed its handshake: {why}", manifest.name);
                    if let Some(code) = status.and_then(|s| s.code()) {
                        message += &format!(" (exit status {code})");
                    }
                    if !tail.is_empty() {
                        message += &format!("; last stderr: {tail}");
                    }
                    return Err(Status::unavailable(message));
                }
            };
        let parts = Parts {
            name: manifest.name.clone(),
            version,
            protocol: manifest.protocol,
            process: Process::Child(child),
            reader,
            writer,
            log,
        };
        Ok(Instance::run(parts, &self.tracker))
    }

    async fn handshake(
        &self,
        manifest: &Manifest,
        mut stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
    ) -> Result<(LinkReader, LinkWriter, String), String> {
        let max = self.config.max_frame_len;
        match manifest.protocol {
            Protocol::Frames => {
                let mut reader = FrameReader::new(stdout, FrameCodec::new(max));
                let hello = match reader.read_frame().await {
                    Ok(Some(Frame { kind: Some(Kind::Hello(h)) })) => h,
                    Ok(Some(_)) => return Err("its first frame was not Hello".into()),
                    Ok(None) => return Err("it closed its stdout before saying hello".into()),
                    Err(e) => return Err(format!("{e}; its stdout is for frames only")),
                };
                if hello.name != manifest.name {
                    return Err(format!("it calls itself {:?}, not {:?}", hello.name, manifest.name));
                }
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Err(format!(
                        "it speaks frame protocol {}, this router speaks {PROTOCOL_VERSION}",
                        hello.protocol_version
                    ));
                }
                let mut writer = FrameWriter::new(stdin, FrameCodec::new(max));
                let welcome = pb::Welcome {
                    router_id: self.router.id.to_string(),
                    epoch: self.router.epoch,
                    config_json: serde_json::to_vec(&manifest.config).unwrap_or_default().into(),
                };
                writer
                    .write_frame(&Frame { kind: Some(Kind::Welcome(welcome)) })
                    .await
                    .map_err(|e| e.to_string())?;
                let version =
                    if hello.version.is_empty() { manifest.version.to_string() } else { hello.version };
                Ok((LinkReader::Frames(reader), LinkWriter::Frames(writer), version))
            }
            Protocol::JsonRpc => {
                stdin.write_all(&jsonrpc::initialize(&manifest.config)).await.map_err(|e| e.to_string())?;
                stdin.flush().await.map_err(|e| e.to_string())?;
                let mut reader = LinkReader::new(Protocol::JsonRpc, stdout, max);
                match reader.read().await {
                    Ok(Some(Frame { kind: Some(Kind::Reply(r)) })) if r.id == jsonrpc::INITIALIZE_ID => {
                        if let Some(pb::reply::Outcome::Error(e)) = r.outcome {
                            return Err(format!("initialize failed: {}", e.message));
                        }
                    }
                    Ok(Some(_)) => return Err("its first message did not answer initialize".into()),
                    Ok(None) => return Err("it closed its stdout before answering initialize".into()),
                    Err(e) => return Err(e.to_string()),
                }
                Ok((reader, LinkWriter::JsonRpc(stdin), manifest.version.to_string()))
            }
        }
    }

    /// Stops a module and forgets its failures.
    pub(crate) async fn unload(self: &Arc<Self>, name: &str) -> Result<pb::ModuleInfo, Status> {
        crate::manifest::validate_name(name).map_err(Status::invalid_argument)?;
        let entry = self.entries.lock().expect("entries lock").get(name).cloned();
        let Some(entry) = entry else {
            return Err(Status::not_found(format!("module {name} is not loaded")));
        };
        let _loading = entry.load.lock().await;
        let instance = entry.state.lock().expect("state lock").instance.take();
        if let Some(instance) = instance {
            instance.stop(self.config.grace).await;
        }
        let mut state = entry.state.lock().expect("state lock");
        state.failed = None;
        state.crashes.clear();
        Ok(self.info(&entry, &state))
    }

    /// Loads a module (reading its manifest again) and reports it.
    pub(crate) async fn load(self: &Arc<Self>, name: &str) -> Result<pb::ModuleInfo, Status> {
        if let Some(entry) = self.entries.lock().expect("entries lock").get(name).cloned() {
            entry.state.lock().expect("state lock").failed = None;
        }
        self.instance(name).await?;
        let entry = self.entry(name);
        let state = entry.state.lock().expect("state lock");
        Ok(self.info(&entry, &state))
    }

    /// Every module known: loaded ones, and those available on the search path.
    pub(crate) fn modules(&self) -> Vec<pb::ModuleInfo> {
        let entries: Vec<Arc<Entry>> = self.entries.lock().expect("entries lock").values().cloned().collect();
        let mut infos: Vec<pb::ModuleInfo> =
            entries.iter().map(|e| self.info(e, &e.state.lock().expect("state lock"))).collect();
        for manifest in self.config.modules_path.scan() {
            match manifest {
                Ok(m) if !infos.iter().any(|i| i.name == m.name) => infos.push(pb::ModuleInfo {
                    name: m.name.clone(),
                    version: m.version.to_string(),
                    state: "available".into(),
                    protocol: m.protocol.to_string(),
                    manifest: m.path.display().to_string(),
                    ..Default::default()
                }),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    fn info(&self, entry: &Entry, state: &EntryState) -> pb::ModuleInfo {
        let live = state.instance.as_ref().filter(|i| !i.is_closed());
        let state_name = match (live, &state.failed) {
            (Some(_), _) => "running",
            (None, Some(_)) => "failed",
            (None, None) => "available",
        };
        let calls = state.past_calls + live.map_or(0, |i| i.calls.load(std::sync::atomic::Ordering::Relaxed));
        let mut info = module_info(&entry.name, state_name);
        info.version = live
            .map(|i| i.version.clone())
            .or_else(|| state.manifest.as_ref().map(|m| m.version.to_string()))
            .unwrap_or_default();
        info.pid = live.and_then(|i| i.pid).unwrap_or(0);
        info.restarts = state.restarts;
        info.calls = calls;
        info.protocol = state.manifest.as_ref().map(|m| m.protocol.to_string()).unwrap_or_default();
        info.manifest = state.manifest.as_ref().map(|m| m.path.display().to_string()).unwrap_or_default();
        info.last_error = state.failed.clone().or_else(|| state.last_error.clone()).unwrap_or_default();
        info
    }

    fn instances(&self) -> Vec<Arc<Instance>> {
        let entries: Vec<Arc<Entry>> = self.entries.lock().expect("entries lock").values().cloned().collect();
        entries.iter().filter_map(|e| e.state.lock().expect("state lock").instance.clone()).collect()
    }

    /// For a planned handover: lets every module go without stopping it.
    /// SDK modules re-attach to the next router; JSON-RPC modules exit when
    /// their input closes and are loaded again on demand.
    pub(crate) async fn release(&self) {
        self.closing.cancel();
        let mut releases = tokio::task::JoinSet::new();
        for instance in self.instances() {
            releases.spawn(async move { instance.release().await });
        }
        while releases.join_next().await.is_some() {}
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Stops every module: `Shutdown`, the grace period, then kill; reaps them all.
    pub(crate) async fn shutdown(&self) {
        self.closing.cancel();
        let instances = self.instances();
        // All at once: every module gets its Shutdown now and the same grace.
        let mut stops = tokio::task::JoinSet::new();
        for instance in instances {
            let grace = self.config.grace;
            stops.spawn(async move { instance.stop(grace).await });
        }
        while stops.join_next().await.is_some() {}
        self.tracker.close();
        self.tracker.wait().await;
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
