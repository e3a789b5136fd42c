//! The one path of a call through the router: the request (caller, deadline,
//! payload), the retry of an idempotent call while the router changes, and
//! the items of a stream. [`Client`](crate::Client) uses it for a frontend
//! holding a session, [`Caller`] for a script's one-shot calls.

use std::time::Duration;

use bytes::Bytes;
use polis_discovery::MeshDir;
use polis_mesh::pb::{self, router_client::RouterClient};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::{
    ClientError,
    connect::{self, Launcher},
};

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

/// Calls `service.method` on whatever channel `channel` gives at each try
/// (a client swaps it when the router changes), as `caller`.
pub(crate) async fn unary(
    channel: impl Fn() -> Channel,
    caller: &str,
    service: &str,
    method: &str,
    payload: Bytes,
    options: CallOptions,
) -> Result<Bytes, ClientError> {
    let deadline = Instant::now() + options.timeout.unwrap_or(RETRY_WINDOW);
    let mut backoff = Duration::from_millis(1);
    // The first try carries the timeout as given (the router's message names
    // it); a retry carries what is left of it.
    let mut left = options.timeout;
    loop {
        let request = request(caller, service, method, payload.clone(), left);
        match RouterClient::new(channel()).call(request).await.map_err(ClientError::from) {
            Ok(reply) => return Ok(reply.into_inner().payload.map(|p| p.data).unwrap_or_default()),
            Err(err)
                if options.idempotent
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
    channel: Channel,
    caller: &str,
    service: &str,
    method: &str,
    payload: Bytes,
    timeout: Option<Duration>,
) -> Result<CallStream, ClientError> {
    let request = request(caller, service, method, payload, timeout);
    let items = RouterClient::new(channel).call_stream(request).await?.into_inner();
    Ok(CallStream { items })
}

fn request(
    caller: &str,
    service: &str,
    method: &str,
    data: Bytes,
    timeout: Option<Duration>,
) -> tonic::Request<pb::CallRequest> {
    let timeout_ms = timeout.map_or(0, |t| t.as_millis().max(1) as u64);
    let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data };
    let call = pb::CallRequest {
        service: service.into(),
        method: method.into(),
        payload: Some(payload),
        timeout_ms,
        caller: caller.into(),
    };
    let mut request = tonic::Request::new(call);
    if let Some(t) = timeout {
        // The router keeps the deadline; this guards against a router that hangs.
        request.set_timeout(t + Duration::from_secs(1));
    }
    request
}

/// The items of a streaming call.
#[derive(Debug)]
pub struct CallStream {
    items: tonic::Streaming<pb::CallReply>,
}

impl CallStream {
    /// The next item as the module sent it (JSON bytes, empty for none);
    /// `None` at the end of the stream.
    pub async fn next_payload(&mut self) -> Option<Result<Bytes, ClientError>> {
        match self.items.message().await {
            Ok(Some(reply)) => Some(Ok(reply.payload.map(|p| p.data).unwrap_or_default())),
            Ok(None) => None,
            Err(status) => Some(Err(status.into())),
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
    channel: Channel,
    name: String,
}

impl Caller {
    /// Connects to the mesh's router, launching one with `launcher` if none
    /// runs; calls carry `name` as their caller.
    pub async fn connect(
        mesh: &MeshDir,
        launcher: Option<&Launcher>,
        name: impl Into<String>,
    ) -> Result<Self, ClientError> {
        Ok(Self { channel: connect::connect(mesh, launcher).await?, name: name.into() })
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
        unary(|| self.channel.clone(), &self.name, service, method, payload, options).await
    }

    /// Calls a streaming method; items arrive as the module sends them.
    pub async fn call_stream(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<CallStream, ClientError> {
        stream(self.channel.clone(), &self.name, service, method, payload, timeout).await
    }
}
