//! A frontend's call as the router runs it, whichever wire it came on
//! (gRPC or a frame session): check the payload, load the module, send the
//! request; a unary call answers with its last piece.

use std::{sync::Arc, time::Duration};

use polis_mesh::pb;
use tonic::Status;

use crate::host::{Host, Item, PendingCall};

/// The deadline of a unary call that names none.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a call asks for.
#[derive(Debug)]
pub(crate) struct CallSpec {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) payload: pb::Payload,
    pub(crate) caller: String,
    /// As the caller asked: 0 is the router's default for a unary call, and
    /// none for a stream.
    pub(crate) timeout_ms: u64,
    /// A unary caller's `unary_only`: an answer that streams is refused.
    pub(crate) unary_only: bool,
}

impl CallSpec {
    /// The deadline of the call made as unary.
    pub(crate) fn unary_timeout(&self) -> Duration {
        match self.timeout_ms {
            0 => DEFAULT_CALL_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }

    /// The deadline of the call made as a stream, if it has one.
    pub(crate) fn stream_timeout(&self) -> Option<Duration> {
        (self.timeout_ms > 0).then(|| Duration::from_millis(self.timeout_ms))
    }

    /// `DEADLINE_EXCEEDED`, naming the call.
    pub(crate) fn deadline_status(&self, timeout: Duration) -> Status {
        Status::deadline_exceeded(format!(
            "{}.{} did not answer within {timeout:?}",
            self.service, self.method
        ))
    }
}

/// Validates a call, loads its module and sends the request.
pub(crate) async fn start(
    host: &Arc<Host>,
    spec: CallSpec,
    timeout: Option<Duration>,
) -> Result<PendingCall, Status> {
    start_at(host, spec, timeout, 1).await
}

/// [`start`] for a call `depth` deep in a chain (1: a frontend's call; more:
/// a module's call made while serving one).
pub(crate) async fn start_at(
    host: &Arc<Host>,
    spec: CallSpec,
    timeout: Option<Duration>,
    depth: u32,
) -> Result<PendingCall, Status> {
    let CallSpec { service, method, payload, caller, .. } = spec;
    let max = host.config().max_frame_len;
    if payload.data.len() > max {
        return Err(Status::resource_exhausted(format!(
            "payload of {} bytes exceeds the frame limit of {max} bytes",
            payload.data.len()
        )));
    }
    let instance = host.instance(&service).await?;
    if instance.protocol == crate::manifest::Protocol::JsonRpc
        && !payload.data.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(&payload.data).is_err()
    {
        return Err(Status::invalid_argument(format!(
            "module {service} speaks JSON-RPC: its params must be JSON"
        )));
    }
    instance.call_at(method, payload, timeout, caller, depth)
}

/// Runs a unary call to its answer: a streaming method called as unary
/// answers with its last piece, or, for a `unary_only` caller, is refused
/// at its first item (so that no item is dropped unseen). Dropping the future at the deadline (or
/// earlier) cancels the call in the module.
pub(crate) async fn unary(host: &Arc<Host>, spec: CallSpec) -> Result<pb::Payload, Status> {
    unary_at(host, spec, 1).await
}

/// [`unary`] for a call `depth` deep in a chain.
pub(crate) async fn unary_at(host: &Arc<Host>, spec: CallSpec, depth: u32) -> Result<pb::Payload, Status> {
    let timeout = spec.unary_timeout();
    let deadline = spec.deadline_status(timeout);
    let service = spec.service.clone();
    // Only a `unary_only` caller's error needs the method's name.
    let refuse_stream = spec.unary_only.then(|| spec.method.clone());
    let answer = async {
        let mut call = start_at(host, spec, Some(timeout), depth).await?;
        let mut last = None;
        while let Some(item) = call.next().await {
            match item? {
                // Returning drops the call, which cancels it in the module.
                Item::Data(_) if refuse_stream.is_some() => {
                    return Err(streams_its_answer(&service, refuse_stream.as_deref().unwrap_or_default()));
                }
                Item::Data(p) => last = Some(p),
                Item::End(p) => return Ok(p.or(last).unwrap_or_else(json_null)),
            }
        }
        Err(Status::unavailable(format!("module {service} ended the call without an answer")))
    };
    tokio::time::timeout(timeout, answer).await.unwrap_or(Err(deadline))
}

fn streams_its_answer(service: &str, method: &str) -> Status {
    Status::failed_precondition(format!(
        "{service}.{method} streams its answer: call it as a stream to get every item \
         (`polis call --stream`, `call_stream`, Router.CallStream)"
    ))
}

fn json_null() -> pb::Payload {
    pb::Payload { content_type: polis_mesh::JSON.into(), data: bytes::Bytes::from_static(b"null") }
}
