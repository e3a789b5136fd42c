//! The one path of a call through the router: the request (caller, deadline,
//! payload), the retry of an idempotent call while the router changes, and
//! the items of a stream. [`Client`](crate::Client) uses it for a frontend
//! holding a session, [`Caller`] for a script's one-shot calls.

use std::{future::Future, str::FromStr, sync::Arc, time::Duration};

use bytes::Bytes;
use polis_discovery::MeshDir;
use polis_mesh::pb::{self, router_client::RouterClient};
use tokio::time::Instant;
use tonic::{Status, transport::Channel};

use crate::{
    ClientError,
    connect::{self, Launcher},
    frames::{FrameConn, FrameStream},
    reach,
};

/// How a frontend talks to the router: both share `router.sock`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Length-delimited protobuf frames after the polis preamble: one
    /// connection multiplexes the session and every call.
    #[default]
    Frames,
    /// gRPC (HTTP/2), as standard gRPC tools speak it.
    Grpc,
}

impl Transport {
    /// The transport `POLIS_TRANSPORT` names (`frames` or `grpc`); frames
    /// when it is unset, with a warning when it names neither.
    pub fn from_env() -> Transport {
        match std::env::var("POLIS_TRANSPORT") {
            Ok(name) if !name.is_empty() => name.parse().unwrap_or_else(|e| {
                tracing::warn!("{e}; using frames");
                Transport::Frames
            }),
            _ => Transport::Frames,
        }
    }
}

impl FromStr for Transport {
    type Err = String;

    /// `frames` or `grpc`.
    fn from_str(name: &str) -> Result<Transport, String> {
        match name {
            "frames" => Ok(Transport::Frames),
            "grpc" => Ok(Transport::Grpc),
            other => Err(format!("unknown transport {other:?}: use frames or grpc")),
        }
    }
}

/// What one try of a call goes over.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    Grpc(Channel),
    Frames(FrameConn),
}

impl Route {
    /// A route to the router that `record` describes, without a session.
    pub(crate) async fn open(
        record: &polis_discovery::NodeRecord,
        transport: Transport,
    ) -> Result<Route, ClientError> {
        Ok(match transport {
            Transport::Grpc => Route::Grpc(connect::dial(record).await?),
            Transport::Frames => Route::Frames(FrameConn::open(&connect::socket(record)?).await?.0),
        })
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
    /// A method that streams its answer is refused (`FAILED_PRECONDITION`,
    /// naming `call_stream`) instead of answering with its last item.
    pub unary_only: bool,
}

/// How long an idempotent call keeps retrying when it names no timeout.
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// How much longer than its timeout a call waits for a router that hangs;
/// the router keeps the deadline itself.
const HUNG_ROUTER_GRACE: Duration = Duration::from_secs(1);

/// Calls `service.method` on whatever route `route` gives at each try (a
/// client swaps it when the router changes), as `caller`.
pub(crate) async fn unary<F, R>(
    route: F,
    caller: &str,
    service: &str,
    method: &str,
    payload: Bytes,
    options: CallOptions,
) -> Result<Bytes, ClientError>
where
    F: Fn() -> R,
    R: Future<Output = Result<Route, ClientError>>,
{
    let deadline = Instant::now() + options.timeout.unwrap_or(RETRY_WINDOW);
    let mut backoff = Duration::from_millis(1);
    // The first try carries the timeout as given (the router's message names
    // it); a retry carries what is left of it.
    let mut left = options.timeout;
    loop {
        let call = Call {
            caller,
            service,
            method,
            data: payload.clone(),
            timeout: left,
            unary_only: options.unary_only,
        };
        let result = match route().await {
            Ok(route) => call.unary(route).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(reply) => return Ok(reply),
            // A call no router ran is safe to try again, idempotent or not.
            Err(err)
                if (options.idempotent || err.was_not_run())
                    && err.code() == tonic::Code::Unavailable
                    && Instant::now() + backoff < deadline =>
            {
                tracing::debug!("retrying {service}.{method}: {err}");
                tokio::time::sleep(backoff).await;
                // Short: a failover takes milliseconds, and waiting longer
                // than it would only add to the caller's gap.
                backoff = (backoff * 2).min(Duration::from_millis(5));
                left = options.timeout.map(|_| deadline.saturating_duration_since(Instant::now()));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Calls a streaming method; never retried, since items may have arrived.
pub(crate) async fn stream(
    route: Route,
    caller: &str,
    service: &str,
    method: &str,
    payload: Bytes,
    timeout: Option<Duration>,
) -> Result<CallStream, ClientError> {
    Call { caller, service, method, data: payload, timeout, unary_only: false }.stream(route).await
}

/// One try of a call: the request's fields, whatever the transport.
struct Call<'a> {
    caller: &'a str,
    service: &'a str,
    method: &'a str,
    data: Bytes,
    timeout: Option<Duration>,
    unary_only: bool,
}

impl Call<'_> {
    fn payload(&self) -> pb::Payload {
        pb::Payload { content_type: polis_mesh::JSON.into(), data: self.data.clone() }
    }

    /// 0 is the router's default (unary) or none (stream).
    fn timeout_ms(&self) -> u64 {
        self.timeout.map_or(0, |t| t.as_millis().max(1) as u64)
    }

    async fn unary(&self, route: Route) -> Result<Bytes, ClientError> {
        match route {
            Route::Grpc(channel) => {
                let reply = grpc_router(channel).call(self.grpc()).await?;
                Ok(reply.into_inner().payload.map(|p| p.data).unwrap_or_default())
            }
            Route::Frames(conn) => {
                let reply = conn.unary(self.frame(false));
                match self.timeout {
                    Some(t) => tokio::time::timeout(t + HUNG_ROUTER_GRACE, reply)
                        .await
                        .unwrap_or_else(|_| Err(self.hung())),
                    None => reply.await,
                }
                .map_err(ClientError::from)
            }
        }
    }

    async fn stream(&self, route: Route) -> Result<CallStream, ClientError> {
        let items = match route {
            Route::Grpc(channel) => {
                Items::Grpc(grpc_router(channel).call_stream(self.grpc()).await?.into_inner())
            }
            Route::Frames(conn) => Items::Frames {
                items: conn.stream(self.frame(true))?,
                deadline: self.timeout.map(|t| (Instant::now() + t + HUNG_ROUTER_GRACE, t)),
            },
        };
        Ok(CallStream { items })
    }

    fn hung(&self) -> Status {
        let t = self.timeout.unwrap_or_default();
        Status::deadline_exceeded(format!("no reply from {}.{} within {t:?}", self.service, self.method))
    }

    fn grpc(&self) -> tonic::Request<pb::CallRequest> {
        let call = pb::CallRequest {
            service: self.service.into(),
            method: self.method.into(),
            payload: Some(self.payload()),
            timeout_ms: self.timeout_ms(),
            caller: self.caller.into(),
            unary_only: self.unary_only,
            ..Default::default()
        };
        let mut request = tonic::Request::new(call);
        if let Some(t) = self.timeout {
            request.set_timeout(t + HUNG_ROUTER_GRACE);
        }
        request
    }

    fn frame(&self, stream: bool) -> pb::Request {
        pb::Request {
            id: 0,
            method: self.method.into(),
            payload: Some(self.payload()),
            caller: self.caller.into(),
            timeout_ms: self.timeout_ms(),
            service: self.service.into(),
            stream,
            unary_only: !stream && self.unary_only,
            ..Default::default()
        }
    }
}

/// The items of a streaming call.
#[derive(Debug)]
pub struct CallStream {
    items: Items,
}

#[derive(Debug)]
enum Items {
    Grpc(tonic::Streaming<pb::CallReply>),
    Frames {
        items: FrameStream,
        /// When to stop waiting for a router that hangs, and the timeout asked for.
        deadline: Option<(Instant, Duration)>,
    },
}

impl CallStream {
    /// The next item as the module sent it (JSON bytes, empty for none);
    /// `None` at the end of the stream.
    pub async fn next_payload(&mut self) -> Option<Result<Bytes, ClientError>> {
        match &mut self.items {
            Items::Grpc(items) => match items.message().await {
                Ok(Some(reply)) => Some(Ok(reply.payload.map(|p| p.data).unwrap_or_default())),
                Ok(None) => None,
                Err(status) => Some(Err(status.into())),
            },
            Items::Frames { items, deadline: None } => Some(items.next().await?.map_err(ClientError::from)),
            Items::Frames { items, deadline: Some((at, timeout)) } => {
                match tokio::time::timeout_at(*at, items.next()).await {
                    Ok(item) => Some(item?.map_err(ClientError::from)),
                    Err(_) => Some(Err(Status::deadline_exceeded(format!(
                        "the stream did not end within {timeout:?}"
                    ))
                    .into())),
                }
            }
        }
    }

    /// The next item, decoded from JSON; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<serde_json::Value, ClientError>> {
        let data = match self.next_payload().await? {
            Ok(data) => data,
            Err(err) => return Some(Err(err)),
        };
        Some(serde_json::from_slice(&data).map_err(ClientError::from))
    }
}

/// One-shot calls without a session, as a script makes them: no node
/// record, and nothing that keeps the router alive beyond each call. A
/// router launched for them alone lingers, then exits.
///
/// ```no_run
/// # async fn demo() -> Result<(), polis_client::ClientError> {
/// use polis_client::{CallOptions, Caller, Launcher};
///
/// let mesh = polis_discovery::MeshDir::open(polis_discovery::default_mesh_dir())?;
/// let caller = Caller::connect(&mesh, Some(&Launcher::from_env()), "my-script").await?;
/// let pong = caller.call("echo", "ping", Default::default(), CallOptions::default()).await?;
/// assert_eq!(&pong[..], b"\"pong\"");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Caller {
    route: Arc<CallerRoute>,
    name: String,
}

#[derive(Debug)]
enum CallerRoute {
    /// A tonic channel reconnects to the same socket by itself.
    Grpc(Channel),
    /// A frame connection does not: a broken one (or one whose router
    /// said it is leaving) is replaced on the next call, with one to the
    /// router in office then, found or launched anew.
    // tokio Mutex: held across the reconnect, so that concurrent calls make one.
    Frames { mesh: MeshDir, launcher: Option<Launcher>, conn: tokio::sync::Mutex<FrameConn> },
}

impl Caller {
    /// Connects to the mesh's router over frames, launching one with
    /// `launcher` if none runs; calls carry `name` as their caller.
    pub async fn connect(
        mesh: &MeshDir,
        launcher: Option<&Launcher>,
        name: impl Into<String>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(mesh, launcher, name, Transport::Frames).await
    }

    /// [`Caller::connect`] over the given transport.
    pub async fn connect_with(
        mesh: &MeshDir,
        launcher: Option<&Launcher>,
        name: impl Into<String>,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        let route = match reach::route(mesh, launcher, transport, reach::WINDOW).await? {
            Route::Grpc(channel) => CallerRoute::Grpc(channel),
            Route::Frames(conn) => CallerRoute::Frames {
                mesh: mesh.clone(),
                launcher: launcher.cloned(),
                conn: tokio::sync::Mutex::new(conn),
            },
        };
        Ok(Self { route: Arc::new(route), name: name.into() })
    }

    /// A caller over a gRPC channel made elsewhere, such as one to a
    /// router's TCP endpoint (`polis_mesh::tcp::connect_channel`).
    pub fn from_channel(channel: Channel, name: impl Into<String>) -> Self {
        Self { route: Arc::new(CallerRoute::Grpc(channel)), name: name.into() }
    }

    async fn route(&self) -> Result<Route, ClientError> {
        match &*self.route {
            CallerRoute::Grpc(channel) => Ok(Route::Grpc(channel.clone())),
            CallerRoute::Frames { mesh, launcher, conn } => {
                let mut conn = conn.lock().await;
                if !conn.is_usable() {
                    // One try: the call's own retry loop keeps to its deadline.
                    let fresh =
                        reach::route(mesh, launcher.as_ref(), Transport::Frames, Duration::ZERO).await?;
                    if let Route::Frames(fresh) = fresh {
                        *conn = fresh;
                    }
                }
                Ok(Route::Frames(conn.clone()))
            }
        }
    }

    /// Calls `service.method` with a JSON payload (empty for none); returns
    /// the reply's bytes.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, ClientError> {
        unary(|| self.route(), &self.name, service, method, payload, options).await
    }

    /// Calls a streaming method; items arrive as the module sends them.
    pub async fn call_stream(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<CallStream, ClientError> {
        stream(self.route().await?, &self.name, service, method, payload, timeout).await
    }
}

/// The Router over gRPC, taking replies as large as a frame (tonic's
/// default of 4 MiB would refuse a module's larger reply).
fn grpc_router(channel: Channel) -> RouterClient<Channel> {
    RouterClient::new(channel).max_decoding_message_size(polis_mesh::codec::DEFAULT_MAX_FRAME_LEN + 64 * 1024)
}
