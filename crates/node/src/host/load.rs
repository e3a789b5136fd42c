//! How an instance comes to be: started on demand (manifest, dependencies,
//! backoff, launch, handshake), or taken in when a module attaches over the
//! socket.

use std::{sync::Arc, time::Instant};

use polis_discovery::Discovery;
use polis_mesh::pb::{self, Frame};
use tonic::Status;
use uuid::Uuid;

use super::{
    BoxFuture, Host, Instance, handshake,
    instance::{Parts, Process},
    link::{LinkReader, LinkWriter},
    lookup_status,
    methods::Declared,
    registry::Entry,
    spawn::{self, SpawnEnv},
};
use crate::manifest::{Manifest, Protocol};

impl Host {
    /// Starts every `autostart` module, in the background.
    pub(crate) fn autostart(self: &Arc<Self>) {
        for manifest in self.modules_path().scan().into_iter().flatten().filter(|m| m.autostart) {
            let host = self.clone();
            self.tracker.spawn(async move {
                if let Err(status) = host.instance(&manifest.name).await {
                    tracing::warn!("autostart of {} failed: {}", manifest.name, status.message());
                }
            });
        }
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
            if self.existing_entry(name).is_none() {
                self.modules_path().find(name).map_err(|e| lookup_status(&e))?;
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
            let order = self.modules_path().load_order(name).map_err(|e| lookup_status(&e))?;
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
            let wait = entry.state.lock().expect("state lock").crashes.backoff(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            // Until the instance is in the entry (or the start failed, or
            // this load was dropped), attaching is refused.
            let _starting = Starting::begin(&entry);
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
            self.announce_started(&instance);
            self.tracker.spawn(self.clone().supervise(entry.clone(), instance.clone()));
            Ok(instance)
        })
    }

    /// Loads a module (reading its manifest again) and reports it.
    pub(crate) async fn load(self: &Arc<Self>, name: &str) -> Result<pb::ModuleInfo, Status> {
        if let Some(entry) = self.existing_entry(name) {
            entry.state.lock().expect("state lock").failed = None;
        }
        self.instance(name).await?;
        let entry = self.entry(name);
        let state = entry.state.lock().expect("state lock");
        Ok(self.info(&entry, &state))
    }

    /// Waits (bounded) for a live module serving `entry`'s name that is
    /// not linked here, to attach. Such a module outlived its router, or
    /// lost its link to this one, and is on its way back with its state;
    /// starting another would lose that. It is looked for in this machine's
    /// mesh directory, then in the config's [`super::Sightings`] (a router
    /// on etcd: the whole mesh's records, which a module on another machine
    /// publishes there), leaving out the records of processes reaped here.
    /// The wait ends when it attaches, when its record is gone (it exited,
    /// or its lease lapsed: a change the watches wake this wait for), or
    /// at `reattach_wait`. Called with no live instance.
    async fn await_reattach(&self, entry: &Entry) -> Option<Arc<Instance>> {
        let reaped = entry.state.lock().expect("state lock").reaped.clone();
        let on_its_way = || async {
            let serving = |n: &polis_discovery::NodeRecord| {
                n.role == polis_discovery::Role::Module && n.services.contains(&entry.name)
            };
            let nodes = self.mesh.list().map(|l| l.nodes).unwrap_or_default();
            if nodes.iter().any(serving) {
                return true;
            }
            let Some(sightings) = &self.config.sightings else { return false };
            match sightings.records().await {
                Ok(nodes) => nodes.iter().any(|n| serving(n) && !reaped.contains(&n.id)),
                Err(why) => {
                    tracing::debug!("cannot look for module {} elsewhere in the mesh: {why}", entry.name);
                    false
                }
            }
        };
        // The common case (nothing on its way) costs one look and no watch.
        if !on_its_way().await {
            return None;
        }
        tracing::info!("waiting for module {} to re-attach", entry.name);
        let deadline = tokio::time::Instant::now() + self.config.reattach_wait;
        // Watching from here, then looking again before each wait: a change
        // made in between is kept for the wait.
        let sightings = self.config.sightings.as_deref();
        let mut changes =
            super::sightings::Wakeups::new(&self.mesh, sightings, self.config.reattach_poll, deadline).await;
        loop {
            let attached = entry.attached.notified();
            if let Some(live) = self.live(&entry.name) {
                return Some(live);
            }
            if tokio::time::Instant::now() >= deadline || !on_its_way().await {
                return None;
            }
            tokio::select! {
                () = attached => {}
                () = changes.next() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Launches a module and completes its handshake within the deadline.
    async fn start(self: &Arc<Self>, manifest: &Manifest) -> Result<Arc<Instance>, Status> {
        let node_id = Uuid::new_v4().to_string();
        let log = self.mesh.logs_dir().join(format!("{}.log", manifest.name));
        let env = SpawnEnv {
            mesh_dir: self.mesh.root(),
            node_id: &node_id,
            log: &log,
            extra: &self.config.module_env,
        };
        let spawn::Launched { mut stdin, stdout, mut child } =
            self.launcher.launch(manifest, &env).map_err(|e| {
                Status::failed_precondition(format!(
                    "cannot start module {} ({}): {e}",
                    manifest.name,
                    manifest.exec.display()
                ))
            })?;
        tracing::info!("started module {} (pid {:?})", manifest.name, child.id());

        let max = self.config.max_frame_len;
        let mut reader = LinkReader::new(manifest.protocol, stdout, max);
        let handshake = async {
            match manifest.protocol {
                Protocol::Frames => {
                    let mut writer = LinkWriter::new(Protocol::Frames, stdin, max);
                    let hello =
                        handshake::hello(&mut reader, &mut writer, self.router, Some(&manifest.name), |_| {
                            manifest.config.clone()
                        })
                        .await?;
                    let declared = Declared::from_hello(&hello);
                    let version =
                        if hello.version.is_empty() { manifest.version.to_string() } else { hello.version };
                    Ok((writer, version, declared))
                }
                Protocol::JsonRpc => {
                    let declared = handshake::initialize(&mut reader, &mut stdin, &manifest.config).await?;
                    Ok((
                        LinkWriter::new(Protocol::JsonRpc, stdin, max),
                        manifest.version.to_string(),
                        declared,
                    ))
                }
            }
        };
        // A WebAssembly module's first start compiles it (seconds for a big
        // module, more in a debug build): the handshake waits for that too.
        let deadline = match manifest.sandbox {
            Some(_) => self.config.handshake_timeout + super::wasm::COMPILE_ALLOWANCE,
            None => self.config.handshake_timeout,
        };
        let (writer, version, declared) = match handshake::within(deadline, handshake).await {
            Ok(link) => link,
            Err(why) => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                let code = status.and_then(|s| s.code());
                // polis-wasm could not load the module at all (not
                // WebAssembly, an import it lacks, a grant it cannot
                // honour); its last line says which.
                if manifest.sandbox.is_some() && code == Some(super::wasm::EX_CONFIG) {
                    let why = spawn::log_tail(&log, 1);
                    let why = why.strip_prefix("polis-wasm: ").unwrap_or(&why);
                    return Err(Status::failed_precondition(format!("module {}: {why}", manifest.name)));
                }
                let tail = spawn::log_tail(&log, 3);
                let mut message = format!("module {} failed its handshake: {why}", manifest.name);
                if let Some(code) = code {
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
            spawned_as: Uuid::parse_str(&node_id).ok(),
            version,
            protocol: manifest.protocol,
            process: Process::Child(child),
            reader,
            writer,
            log,
            host: Arc::downgrade(self),
            manifest: Some(manifest.clone()),
            declared,
            monitor: self.monitor.clone(),
            bus: self.bus.clone(),
        };
        Ok(Instance::run(parts, &self.tracker))
    }

    /// Takes in a module attached over the socket: one that outlived its
    /// router (`resumed`) or one that loaded itself. Answers the `Hello` with
    /// `Welcome` and routes to the module until its stream ends.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        inbound: tonic::Streaming<Frame>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Frame, Status>>, Status> {
        if self.closing.is_cancelled() {
            return Err(Status::unavailable("the router is shutting down"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let (mut reader, mut writer) = (LinkReader::Attached(inbound), LinkWriter::Attached(tx));
        let mut manifest = None;
        let hello = handshake::hello(&mut reader, &mut writer, self.router, None, |hello| {
            manifest = self.modules_path().find(&hello.name).ok();
            manifest.as_ref().map_or(serde_json::Value::Null, |m| m.config.clone())
        });
        let hello =
            handshake::within(self.config.handshake_timeout, hello).await.map_err(|e| e.attach_status())?;

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
            // A module of this name spawned here right now (a call came
            // before this module re-attached, on a router that could not
            // know it was on its way: one on another machine).
            if state.starting {
                return Err(Status::already_exists(format!(
                    "module {} is being started here; not attaching another",
                    hello.name
                )));
            }
            if let Some(live) = state.instance.as_ref().filter(|i| !i.is_closed()) {
                return Err(Status::already_exists(format!(
                    "module {} is already served here (pid {})",
                    hello.name,
                    live.pid.unwrap_or(0)
                )));
            }
            let parts = Parts {
                name: hello.name.clone(),
                spawned_as: None,
                version: hello.version.clone(),
                protocol: Protocol::Frames,
                process: Process::Attached {
                    pid: (hello.pid != 0).then_some(hello.pid),
                    node: node_id.map(|id| (self.mesh.clone(), id)),
                },
                reader,
                writer,
                log: self.mesh.logs_dir().join(format!("{}.log", hello.name)),
                host: Arc::downgrade(self),
                manifest: manifest.clone(),
                declared: Declared::from_hello(&hello),
                monitor: self.monitor.clone(),
                bus: self.bus.clone(),
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
        self.announce_started(&instance);
        self.tracker.spawn(self.clone().supervise(entry.clone(), instance));
        Ok(rx)
    }
}

/// Marks an entry's module as being started for as long as it lives.
struct Starting<'a>(&'a Entry);

impl<'a> Starting<'a> {
    fn begin(entry: &'a Entry) -> Self {
        entry.state.lock().expect("state lock").starting = true;
        Self(entry)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("state lock").starting = false;
    }
}
