//! [`Client`]: a frontend's connection to its mesh.

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

use crate::connect::{self, ConnectError, Launcher};

/// What can go wrong for a frontend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No router could be reached or launched.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The router or the module answered with an error.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Call(#[from] Status),
    /// A payload was not JSON.
    #[error("the reply is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The mesh directory failed.
    #[error(transparent)]
    Discovery(#[from] polis_discovery::Error),
}

impl ClientError {
    /// The gRPC code: `Unavailable` when no router could be had.
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::Call(status) => status.code(),
            ClientError::Connect(_) => tonic::Code::Unavailable,
            ClientError::Json(_) => tonic::Code::Internal,
            ClientError::Discovery(_) => tonic::Code::FailedPrecondition,
        }
    }
}

/// How to make one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Give up after this long (the router enforces it); `None` is the router's default.
    pub timeout: Option<Duration>,
    /// The call is safe to repeat (it has no effect, or carries its own
    /// idempotency key): while the router changes, it is retried instead of
    /// failing with `UNAVAILABLE`.
    pub idempotent: bool,
}

/// How long an idempotent call keeps retrying when it names no timeout.
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The frontend's name, shown by `polis status` and in its node record.
    pub name: String,
    /// The mesh directory; `None` picks it as `polis` does.
    pub mesh_dir: Option<PathBuf>,
    /// Launch a router with these settings when none runs; `None` fails instead.
    pub launch: Option<Launcher>,
    /// Host the router inside this process when none runs (instead of
    /// launching one). When this frontend leaves, its router hands over: the
    /// modules go on to the next router, hosted by another frontend.
    pub host: Option<polis_node::router::RouterConfig>,
}

impl ClientOptions {
    /// Options for a frontend called `name`, in the default mesh, launching
    /// `$POLIS_BIN` (else `polis`) when no router runs.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), mesh_dir: None, launch: Some(Launcher::from_env()), host: None }
    }
}

/// A frontend's connection: a session that keeps the router alive, and calls.
///
/// When the router changes (it crashed and a standby took over, or it was
/// restarted), the session re-attaches by itself, launching a router if none
/// is left. A call in flight at that moment fails with `UNAVAILABLE`; later
/// calls go to the new router.
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
    channel: Mutex<Channel>,
    guard: NodeGuard,
    closed: CancellationToken,
    // std Mutex: set or taken, never held across an await.
    hosted: Mutex<Option<Hosted>>,
}

/// A router running inside this process.
#[derive(Debug)]
struct Hosted {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to the mesh's router, launching one if allowed and needed,
    /// opens a session and publishes this frontend's node record.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let path = options.mesh_dir.clone().unwrap_or_else(polis_discovery::default_mesh_dir);
        let mesh = MeshDir::open(path)?;
        let mut hosted = None;
        let (channel, router) = connect_or_host(&mesh, &options, &mut hosted).await?;
        let mut record = NodeRecord::new(Role::Frontend, options.name.clone());
        record.version = env!("CARGO_PKG_VERSION").to_owned();
        record.router = Some(router.id);
        let guard = mesh.publish(&record)?;
        let shared = Arc::new(Shared {
            mesh,
            options,
            record: Mutex::new(record),
            channel: Mutex::new(channel),
            guard,
            closed: CancellationToken::new(),
            hosted: Mutex::new(hosted),
        });
        // The first session is opened before returning, so that the router
        // counts this frontend from the start.
        let first = shared.open_session().await?;
        let session = tokio::spawn(shared.clone().keep_session(first));
        Ok(Client { shared, session: Some(session) })
    }

    /// The mesh directory this client is in.
    pub fn mesh(&self) -> &MeshDir {
        &self.shared.mesh
    }

    fn router(&self) -> RouterClient<Channel> {
        RouterClient::new(self.shared.channel.lock().expect("channel lock").clone())
    }

    /// Calls `service.method` with a JSON payload; returns the reply's bytes.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        self.call_with(service, method, payload, CallOptions { timeout, idempotent: false }).await
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
        let deadline = tokio::time::Instant::now() + options.timeout.unwrap_or(RETRY_WINDOW);
        let mut backoff = Duration::from_millis(1);
        loop {
            let left =
                options.timeout.map(|_| deadline.saturating_duration_since(tokio::time::Instant::now()));
            let request = self.request(service, method, payload.clone(), left);
            match self.router().call(request).await.map_err(from_transport) {
                Ok(reply) => return Ok(reply.into_inner().payload.map(|p| p.data).unwrap_or_default()),
                Err(status)
                    if options.idempotent
                        && status.code() == tonic::Code::Unavailable
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::debug!("retrying {service}.{method}: {}", status.message());
                    tokio::time::sleep(backoff).await;
                    // Short: a failover takes milliseconds, and waiting
                    // longer than it would only add to the caller's gap.
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Calls with JSON params and decodes the JSON reply.
    pub async fn call_json(
        &self,
        service: &str,
        method: &str,
        params: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call_json_with(service, method, params, CallOptions { timeout, idempotent: false }).await
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
        let request = self.request(service, method, serde_json::to_vec(params)?.into(), None);
        let items = self.router().call_stream(request).await.map_err(from_transport)?.into_inner();
        Ok(CallStream { items })
    }

    fn request(
        &self,
        service: &str,
        method: &str,
        data: Bytes,
        timeout: Option<Duration>,
    ) -> tonic::Request<pb::CallRequest> {
        let caller = self.shared.record.lock().expect("record lock").id.to_string();
        let timeout_ms = timeout.map_or(0, |t| t.as_millis().max(1) as u64);
        let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data };
        let call = pb::CallRequest {
            service: service.into(),
            method: method.into(),
            payload: Some(payload),
            timeout_ms,
            caller,
        };
        let mut request = tonic::Request::new(call);
        if let Some(t) = timeout {
            // The router keeps the deadline; this guards against a router that hangs.
            request.set_timeout(t + Duration::from_secs(1));
        }
        request
    }

    /// Says goodbye to the router and unpublishes this frontend.
    pub async fn close(mut self) {
        self.shared.closed.cancel();
        if let Some(session) = self.session.take() {
            let _ = session.await;
        }
        let hosted = self.shared.hosted.lock().expect("hosted lock").take();
        if let Some(hosted) = hosted {
            hosted.stop.cancel();
            let _ = hosted.task.await;
        }
    }

    /// Whether the router this client uses runs inside this process.
    pub fn hosts_router(&self) -> bool {
        self.shared.hosted.lock().expect("hosted lock").as_ref().is_some_and(|h| !h.task.is_finished())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Without close(), the session task still says goodbye if the runtime lives on.
        self.shared.closed.cancel();
    }
}

/// The items of a streaming call.
#[derive(Debug)]
pub struct CallStream {
    items: tonic::Streaming<pb::CallReply>,
}

impl CallStream {
    /// The next item; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<serde_json::Value, ClientError>> {
        match self.items.message().await {
            Ok(Some(reply)) => {
                let data = reply.payload.map(|p| p.data).unwrap_or_default();
                Some(serde_json::from_slice(&data).map_err(ClientError::from))
            }
            Ok(None) => None,
            Err(status) => Some(Err(from_transport(status).into())),
        }
    }
}

/// An open session: its upstream sender and its downstream replies.
struct Session {
    up: mpsc::Sender<pb::SessionUp>,
    down: tonic::Streaming<pb::SessionDown>,
    interval: Duration,
}

fn up(kind: session_up::Kind) -> pb::SessionUp {
    pb::SessionUp { kind: Some(kind) }
}

impl Shared {
    async fn open_session(&self) -> Result<Session, ClientError> {
        let (tx, rx) = mpsc::channel(4);
        let (node_id, name) = {
            let record = self.record.lock().expect("record lock");
            (record.id.to_string(), record.name.clone())
        };
        let hello = pb::SessionHello { node_id, name, pid: std::process::id() };
        let _ = tx.send(up(session_up::Kind::Hello(hello))).await;
        let channel = self.channel.lock().expect("channel lock").clone();
        let mut down = RouterClient::new(channel).session(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match down.message().await? {
            Some(pb::SessionDown { kind: Some(session_down::Kind::Welcome(w)) }) => w,
            _ => return Err(Status::unavailable("the router did not welcome the session").into()),
        };
        let interval = Duration::from_millis(welcome.keepalive_interval_ms.max(10));
        tracing::debug!("session open with router {} (epoch {})", welcome.router_id, welcome.epoch);
        Ok(Session { up: tx, down, interval })
    }

    /// Keeps a session open for the client's life, re-attaching whenever
    /// the router goes away.
    async fn keep_session(self: Arc<Self>, mut session: Session) {
        loop {
            if self.hold(&mut session).await {
                return;
            }
            match self.reattach().await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    /// Sends keepalives until the session ends; `true` when the client closed.
    async fn hold(&self, session: &mut Session) -> bool {
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
                let mut hosted = None;
                let (channel, router) = connect_or_host(&self.mesh, &self.options, &mut hosted).await?;
                if hosted.is_some() {
                    *self.hosted.lock().expect("hosted lock") = hosted;
                }
                *self.channel.lock().expect("channel lock") = channel;
                let record = {
                    let mut record = self.record.lock().expect("record lock");
                    record.router = Some(router.id);
                    record.clone()
                };
                self.guard.update(&record)?;
                self.open_session().await
            };
            tokio::select! {
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

/// The router in office, or one hosted here (when the options allow and
/// this process wins the election), or one launched.
async fn connect_or_host(
    mesh: &MeshDir,
    options: &ClientOptions,
    hosted: &mut Option<Hosted>,
) -> Result<(Channel, NodeRecord), ClientError> {
    let Some(config) = &options.host else {
        return Ok(connect::connect_with_record(mesh, options.launch.as_ref()).await?);
    };
    let watch = mesh.watch()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(router) = mesh.current_router()? {
            return Ok((connect::dial(&router).await?, router));
        }
        if let polis_discovery::Campaign::Won(term) = mesh.campaign()? {
            let stop = CancellationToken::new();
            let task = tokio::spawn({
                let (config, stop) = (config.clone(), stop.clone());
                async move {
                    if let Err(e) = polis_node::router::serve(term, config, stop).await {
                        tracing::error!("the hosted router failed: {e}");
                    }
                }
            });
            *hosted = Some(Hosted { stop, task });
            let router = watch.wait_for(Duration::from_secs(10), || mesh.current_router()).await?;
            let router = router.ok_or_else(|| Status::unavailable("the hosted router did not start"))?;
            return Ok((connect::dial(&router).await?, router));
        }
        // Another holds the office: it publishes soon, or it is leaving and
        // the office comes free. Either way, look again.
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::unavailable("no router took office within 10 s").into());
        }
        tokio::select! {
            () = watch.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// A status made by the transport, not sent by the router (the connection
/// broke mid-call, or nobody listens), is the router being unavailable:
/// tonic reports some of these as `UNKNOWN`.
fn from_transport(status: Status) -> Status {
    let from_transport = std::error::Error::source(&status).is_some();
    if from_transport
        && matches!(status.code(), tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled)
    {
        Status::unavailable(format!("the router went away during the call ({})", status.message()))
    } else {
        status
    }
}

/// `UNAVAILABLE`, `NOT_FOUND`…: the names the CLI prints too.
fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::new();
    for (i, c) in camel.char_indices() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}
