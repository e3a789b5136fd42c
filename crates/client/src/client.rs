//! [`Client`]: a frontend's connection to its mesh: a node record, a
//! session that keeps the router alive and re-attaches when it changes, and
//! calls over [`crate::call`].

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use polis_discovery::{Discovery, MeshDir, NodeGuard, NodeRecord, Role};
use polis_mesh::pb::{self, router_client::RouterClient, session_down, session_up};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, transport::Channel};

use crate::{
    CallOptions, CallStream, ClientError, Transport,
    call::{self, Route},
    connect::{self, Launcher},
    frames::{Ended, FrameSession},
};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The frontend's name, shown by `polis status` and in its node record.
    pub name: String,
    /// The mesh directory; `None` picks it as `polis` does:
    /// `POLIS_MESH_DIR`, else the default (`polis_discovery::locate`).
    pub mesh_dir: Option<PathBuf>,
    /// Module directories (`:`-separated) this frontend brings: passed to a
    /// router it launches, and added to the search path of a router that
    /// runs already (`Admin.AddModulePath`, after every (re-)attach).
    /// [`ClientOptions::new`] takes `POLIS_MODULES_PATH`.
    pub modules_path: Option<String>,
    /// Launch a router with these settings when none runs; `None` fails instead.
    pub launch: Option<Launcher>,
    /// Host the router inside this process when none runs (instead of
    /// launching one). When this frontend leaves, its router hands over: the
    /// modules go on to the next router, hosted by another frontend.
    #[cfg(feature = "host")]
    pub host: Option<polis_node::router::RouterConfig>,
    /// How the session and the calls reach the router.
    pub transport: Transport,
}

impl ClientOptions {
    /// Options for a frontend called `name`, in the mesh `polis` would use,
    /// bringing `POLIS_MODULES_PATH`, launching `$POLIS_BIN` (else `polis`)
    /// when no router runs, over the transport `POLIS_TRANSPORT` names
    /// (frames by default).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mesh_dir: None,
            modules_path: polis_discovery::locate::modules_path(None),
            launch: Some(Launcher::from_env()),
            transport: Transport::from_env(),
            #[cfg(feature = "host")]
            host: None,
        }
    }
}

/// A frontend's connection: a session that keeps the router alive, and calls.
///
/// When the router changes (it crashed and a standby took over, or it was
/// restarted), the session re-attaches by itself, launching a router if none
/// is left. A call in flight at that moment fails with `UNAVAILABLE`; later
/// calls go to the new router.
///
/// [`Client::close`] says goodbye and waits for it to be heard; a client
/// that is dropped instead says goodbye (and stops a router it hosts) as
/// long as the runtime runs on.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    session: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    mesh: MeshDir,
    options: ClientOptions,
    record: Mutex<NodeRecord>,
    // std Mutex: swapped on re-attach, cloned by calls, never held across an await.
    route: Mutex<Route>,
    guard: NodeGuard,
    closed: CancellationToken,
    /// Subscriptions, subscribed again on each new session.
    subs: Arc<crate::events::Subs>,
    #[cfg(feature = "host")]
    hosting: crate::host::Hosting,
}

impl Client {
    /// Connects to the mesh's router, launching one if allowed and needed,
    /// opens a session and publishes this frontend's node record.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let path = polis_discovery::locate::mesh_dir(options.mesh_dir.clone());
        let mesh = MeshDir::open(path)?;
        #[cfg(feature = "host")]
        let hosting = crate::host::Hosting::default();
        let router = find_router(
            &mesh,
            &options,
            #[cfg(feature = "host")]
            &hosting,
        )
        .await?;
        let mut record = NodeRecord::new(Role::Frontend, options.name.clone());
        record.version = env!("CARGO_PKG_VERSION").to_owned();
        record.router = Some(router.id);
        let guard = mesh.publish(&record)?;
        // The first session is opened before returning, so that the router
        // counts this frontend from the start.
        let (route, first) = open_session(options.transport, &router, &record).await?;
        let subs = Arc::new(crate::events::Subs::default());
        if let Session::Frames(session) = &first {
            subs.attach(session.conn());
        }
        // Told before the first call: a path the router cannot take fails
        // the connect, rather than a later call with NOT_FOUND.
        add_modules_path(&router, options.modules_path.as_deref()).await?;
        let shared = Arc::new(Shared {
            mesh,
            options,
            record: Mutex::new(record),
            route: Mutex::new(route),
            guard,
            closed: CancellationToken::new(),
            subs,
            #[cfg(feature = "host")]
            hosting,
        });
        let session = tokio::spawn(shared.clone().keep_session(first));
        Ok(Client { shared, session: Some(session) })
    }

    /// The mesh directory this client is in.
    pub fn mesh(&self) -> &MeshDir {
        &self.shared.mesh
    }

    fn route(&self) -> Route {
        self.shared.route.lock().expect("route lock").clone()
    }

    fn caller(&self) -> String {
        self.shared.record.lock().expect("record lock").id.to_string()
    }

    /// Calls `service.method` with a JSON payload; returns the reply's bytes.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        self.call_with(
            service,
            method,
            payload,
            CallOptions { timeout, idempotent: false, ..Default::default() },
        )
        .await
    }

    /// [`Client::call`] with [`CallOptions`]; an idempotent call is retried
    /// while the router is unavailable, until its timeout.
    pub async fn call_with(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, ClientError> {
        let route = || {
            let route = self.route();
            async move { Ok(route) }
        };
        call::unary(route, &self.caller(), service, method, payload, options).await
    }

    /// Calls with JSON params and decodes the JSON reply.
    pub async fn call_json(
        &self,
        service: &str,
        method: &str,
        params: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call_json_with(
            service,
            method,
            params,
            CallOptions { timeout, idempotent: false, ..Default::default() },
        )
        .await
    }

    /// [`Client::call_json`] with [`CallOptions`].
    pub async fn call_json_with(
        &self,
        service: &str,
        method: &str,
        params: &serde_json::Value,
        options: CallOptions,
    ) -> Result<serde_json::Value, ClientError> {
        let data = self.call_with(service, method, serde_json::to_vec(params)?.into(), options).await?;
        if data.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&data)?)
    }

    /// Calls a streaming method; items arrive as the module sends them.
    pub async fn call_stream(
        &self,
        service: &str,
        method: &str,
        params: &serde_json::Value,
    ) -> Result<CallStream, ClientError> {
        let payload = serde_json::to_vec(params)?.into();
        call::stream(self.route(), &self.caller(), service, method, payload, None).await
    }

    /// Publishes `value` as JSON on `topic` to every matching subscription
    /// in the mesh. A topic may not be empty, hold `*` or spaces, or start
    /// `polis.` (the router's own): those fail with `INVALID_ARGUMENT` or
    /// `PERMISSION_DENIED`, a payload over the frame limit with
    /// `RESOURCE_EXHAUSTED`, all before anything is sent.
    pub fn publish(&self, topic: &str, value: &serde_json::Value) -> Result<(), ClientError> {
        self.shared.subs.publish(topic, serde_json::to_vec(value)?.into())
    }

    /// Subscribes to `pattern`: a topic, or a prefix ending in `*` (`*`
    /// alone matches every topic). The subscription lasts until dropped, on
    /// whichever router is in office; see [`crate::Notice`].
    ///
    /// ```no_run
    /// # async fn demo(client: &polis_client::Client) -> Result<(), polis_client::ClientError> {
    /// let mut notes = client.subscribe("notes.*").await?;
    /// while let Some(polis_client::Notice::Event(event)) = notes.next().await {
    ///     println!("{}: {}", event.topic, event.json()?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, pattern: &str) -> Result<crate::Subscription, ClientError> {
        self.shared.subs.subscribe(pattern).await
    }

    /// Says goodbye to the router, unpublishes this frontend, and waits for
    /// a router hosted here to hand over.
    pub async fn close(mut self) {
        self.shared.closed.cancel();
        if let Some(session) = self.session.take() {
            let _ = session.await;
        }
        #[cfg(feature = "host")]
        self.shared.hosting.stop().await;
    }

    /// Whether the router this client uses runs inside this process.
    #[cfg(feature = "host")]
    pub fn hosts_router(&self) -> bool {
        self.shared.hosting.is_serving()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Without close(), the session task still says goodbye, and a hosted
        // router hands over, if the runtime lives on.
        self.shared.closed.cancel();
        #[cfg(feature = "host")]
        self.shared.hosting.cancel();
    }
}

/// An open session, over either transport.
enum Session {
    Grpc(GrpcSession),
    Frames(FrameSession),
}

/// A gRPC session: its upstream sender and its downstream replies.
struct GrpcSession {
    up: mpsc::Sender<pb::SessionUp>,
    down: tonic::Streaming<pb::SessionDown>,
    interval: Duration,
}

fn up(kind: session_up::Kind) -> pb::SessionUp {
    pb::SessionUp { kind: Some(kind) }
}

fn hello(record: &NodeRecord) -> pb::SessionHello {
    pb::SessionHello {
        node_id: record.id.to_string(),
        name: record.name.clone(),
        pid: std::process::id(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        protocol_versions: polis_mesh::versions::SESSION_PROTOCOLS.to_vec(),
        features: Vec::new(),
    }
}

/// Opens a session with `router` as the frontend `record`, and the route
/// its calls take: over frames, the session's own connection.
async fn open_session(
    transport: Transport,
    router: &NodeRecord,
    record: &NodeRecord,
) -> Result<(Route, Session), ClientError> {
    match transport {
        Transport::Frames => {
            let session = FrameSession::open(&connect::socket(router)?, hello(record)).await?;
            Ok((Route::Frames(session.conn().clone()), Session::Frames(session)))
        }
        Transport::Grpc => {
            let channel = connect::dial(router).await?;
            let session = open_grpc_session(channel.clone(), hello(record)).await?;
            Ok((Route::Grpc(channel), Session::Grpc(session)))
        }
    }
}

async fn open_grpc_session(channel: Channel, hello: pb::SessionHello) -> Result<GrpcSession, ClientError> {
    let (tx, rx) = mpsc::channel(4);
    let _ = tx.send(up(session_up::Kind::Hello(hello))).await;
    let mut down = RouterClient::new(channel).session(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = match down.message().await? {
        Some(pb::SessionDown { kind: Some(session_down::Kind::Welcome(w)) }) => w,
        _ => return Err(Status::unavailable("the router did not welcome the session").into()),
    };
    let interval = Duration::from_millis(welcome.keepalive_interval_ms.max(10));
    tracing::debug!("session open with router {} (epoch {})", welcome.router_id, welcome.epoch);
    Ok(GrpcSession { up: tx, down, interval })
}

impl Shared {
    /// Keeps a session open for the client's life, re-attaching whenever
    /// the router goes away.
    async fn keep_session(self: Arc<Self>, mut session: Session) {
        loop {
            let closed = match &mut session {
                Session::Grpc(grpc) => self.hold(grpc).await,
                Session::Frames(frames) => match frames.hold(&self.closed).await {
                    None => true,
                    Some(Ended::Leaving { handover, reason }) => {
                        tracing::debug!(
                            "re-attaching after the router left (handover: {handover}): {reason}"
                        );
                        false
                    }
                    Some(Ended::Closed) => false,
                },
            };
            if closed {
                return;
            }
            match self.reattach().await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    /// Sends keepalives until the session ends; `true` when the client closed.
    async fn hold(&self, session: &mut GrpcSession) -> bool {
        let mut ticks = tokio::time::interval(session.interval);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    seq += 1;
                    if session.up.send(up(session_up::Kind::Keepalive(pb::Keepalive { seq }))).await.is_err() {
                        return false;
                    }
                }
                message = session.down.message() => match message {
                    Ok(Some(pb::SessionDown { kind: Some(session_down::Kind::Leaving(l)) })) => {
                        tracing::info!("router leaving ({}); re-attaching", l.reason);
                        return false;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return false,
                },
                () = self.closed.cancelled() => {
                    let _ = session.up.send(up(session_up::Kind::Goodbye(pb::Goodbye {}))).await;
                    return true;
                }
            }
        }
    }

    /// Finds (or launches) the next router and opens a session with it.
    async fn reattach(&self) -> Option<Session> {
        let mut backoff = Duration::from_millis(10);
        loop {
            let attempt = async {
                let router = self.find_router().await?;
                let record = {
                    let mut record = self.record.lock().expect("record lock");
                    record.router = Some(router.id);
                    record.clone()
                };
                self.guard.update(&record)?;
                let (route, session) = open_session(self.options.transport, &router, &record).await?;
                // Calls go to the new router at once (its own modules are
                // there); the next router knows only its own path, so ours
                // is brought again right after.
                *self.route.lock().expect("route lock") = route;
                if let Session::Frames(session) = &session {
                    self.subs.attach(session.conn());
                }
                if let Err(e) = add_modules_path(&router, self.options.modules_path.as_deref()).await {
                    tracing::warn!("the new router did not take this frontend's modules path: {e}");
                }
                Ok::<_, ClientError>(session)
            };
            tokio::select! {
                // Biased: a client closed before this attempt starts none
                // (an attempt may host a router on its first poll).
                biased;
                () = self.closed.cancelled() => return None,
                result = attempt => match result {
                    Ok(session) => return Some(session),
                    Err(e) => tracing::debug!("re-attach failed: {e}; retrying in {backoff:?}"),
                }
            }
            tokio::select! {
                () = self.closed.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

impl Shared {
    async fn find_router(&self) -> Result<NodeRecord, ClientError> {
        find_router(
            &self.mesh,
            &self.options,
            #[cfg(feature = "host")]
            &self.hosting,
        )
        .await
    }
}

/// The router in office; or, when this frontend may host one, one hosted
/// here if it wins the election; or one launched.
async fn find_router(
    mesh: &MeshDir,
    options: &ClientOptions,
    #[cfg(feature = "host")] hosting: &crate::host::Hosting,
) -> Result<NodeRecord, ClientError> {
    #[cfg(feature = "host")]
    if let Some(config) = &options.host {
        return hosting.connect(mesh, config).await;
    }
    // A launched router gets the frontend's modules path unless the
    // launcher names one itself.
    let launcher = options.launch.as_ref().map(|launcher| Launcher {
        modules_path: launcher.modules_path.clone().or_else(|| options.modules_path.clone()),
        ..launcher.clone()
    });
    Ok(connect::find(mesh, launcher.as_ref()).await?)
}

/// Adds `paths` to the search path of `router` (`Admin.AddModulePath`);
/// directories it has already are left as they are.
async fn add_modules_path(router: &NodeRecord, paths: Option<&str>) -> Result<(), ClientError> {
    let Some(paths) = paths else { return Ok(()) };
    let dirs: Vec<String> = std::env::split_paths(&polis_discovery::locate::absolute_paths(paths))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let channel = connect::dial(router).await?;
    let reply = pb::admin_client::AdminClient::new(channel)
        .add_module_path(pb::AddModulePathRequest { dirs })
        .await?
        .into_inner();
    if !reply.added.is_empty() {
        tracing::info!("added to the router's modules path: {}", reply.added.join(":"));
    }
    Ok(())
}
