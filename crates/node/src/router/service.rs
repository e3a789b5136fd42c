//! The `Router` service: calls and streams, routed by service name.
//!
//! A call's deadline is the earlier of its `timeout_ms` and the client's
//! gRPC deadline (`grpc-timeout`, renamed on the way in: `authority.rs`);
//! when it passes the call ends with `DEADLINE_EXCEEDED` and is cancelled
//! in the module. A request without `payload` is a JSON request: params
//! from `params`, replies in `result` (`json.rs`).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use polis_mesh::pb::{self, router_server::Router};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{
    authority::DEADLINE_HEADER,
    calls::{self, CallSpec},
    json,
    sessions::{self, Lease, SessionHub, SessionStream},
};
use crate::host::{Host, Item, PendingCall};

pub(crate) struct RouterService {
    pub(crate) host: Arc<Host>,
    pub(crate) hub: SessionHub,
}

/// What a gRPC request asks for, and whether it asked in JSON.
fn spec(request: Request<pb::CallRequest>) -> Result<(CallSpec, bool), Status> {
    let deadline = grpc_deadline(request.metadata());
    let req = request.into_inner();
    let in_json = req.payload.is_none();
    let payload = match (req.payload, req.params) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument("a call has its params as payload or as params, not both"));
        }
        (Some(payload), None) => payload,
        (None, Some(params)) => {
            pb::Payload { content_type: polis_mesh::JSON.into(), data: json::params_text(params)?.into() }
        }
        (None, None) => pb::Payload::default(),
    };
    let timeout_ms = match (req.timeout_ms, deadline) {
        (asked, None) => asked,
        (0, Some(d)) => millis_up(d),
        (asked, Some(d)) => asked.min(millis_up(d)),
    };
    let spec = CallSpec {
        service: req.service,
        method: req.method,
        payload,
        caller: req.caller,
        timeout_ms,
        unary_only: req.unary_only,
    };
    Ok((spec, in_json))
}

fn millis_up(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000).clamp(1, u128::from(u64::MAX)) as u64
}

/// The client's deadline, as gRPC's `grpc-timeout` says it: at most eight
/// digits and a unit. A header that does not parse is ignored, as tonic
/// ignores it.
fn grpc_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get(DEADLINE_HEADER)?.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A reply as the caller asked for it: JSON as `result` for a JSON request
/// (unless the module answered something else), the payload otherwise.
fn reply(payload: pb::Payload, in_json: bool) -> pb::CallReply {
    let is_json = payload.content_type.is_empty() || payload.content_type == polis_mesh::JSON;
    if in_json
        && is_json
        && let Some(result) = json::result_value(&payload.data)
    {
        return pb::CallReply { payload: None, result: Some(result) };
    }
    pb::CallReply { payload: Some(payload), result: None }
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn call(&self, request: Request<pb::CallRequest>) -> Result<Response<pb::CallReply>, Status> {
        // A call in flight keeps the router, as a session does.
        let _lease = self.hub.leases.take_call().ok_or_else(sessions::not_run)?;
        let (spec, in_json) = spec(request)?;
        let payload = calls::unary(&self.host, spec).await?;
        Ok(Response::new(reply(payload, in_json)))
    }

    type CallStreamStream = ReplyStream;

    async fn call_stream(&self, request: Request<pb::CallRequest>) -> Result<Response<ReplyStream>, Status> {
        let (spec, in_json) = spec(request)?;
        // A stream with a deadline is a call a handover waits out; one
        // without may never end, and is let go with its module.
        let lease = match spec.stream_timeout() {
            Some(_) => self.hub.leases.take_call(),
            None => self.hub.leases.take(),
        };
        let lease = lease.ok_or_else(sessions::not_run)?;
        let (call, deadline) = match spec.stream_timeout() {
            Some(t) => {
                let status = spec.deadline_status(t);
                let ends = Box::pin(tokio::time::sleep_until(Instant::now() + t));
                let start = tokio::time::timeout(t, calls::start(&self.host, spec, Some(t)));
                (start.await.map_err(|_| status.clone())??, Some((ends, status)))
            }
            None => (calls::start(&self.host, spec, None).await?, None),
        };
        Ok(Response::new(ReplyStream { call, deadline, in_json, finished: false, _lease: lease }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionUp>>,
    ) -> Result<Response<SessionStream>, Status> {
        Ok(Response::new(self.hub.open(request.into_inner()).await?))
    }

    type SubscribeStream = super::events::EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let lease = self.hub.leases.take().ok_or_else(sessions::not_run)?;
        let stream = super::events::subscribe(self.host.bus(), &request.into_inner().pattern, lease).await?;
        Ok(Response::new(stream))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        let pb::PublishRequest { topic, payload, publisher } = request.into_inner();
        let publisher = if publisher.is_empty() { "grpc".to_owned() } else { publisher };
        let delivered = self.host.bus().publish(&publisher, false, topic, payload.unwrap_or_default())?;
        Ok(Response::new(pb::PublishReply { delivered: delivered as u64 }))
    }

    type AttachModuleStream = ReceiverStream<Result<pb::Frame, Status>>;

    async fn attach_module(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Self::AttachModuleStream>, Status> {
        let frames = self.host.attach(request.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(frames)))
    }
}

/// The replies of a streaming call, forwarded as the module sends them.
/// Dropped early (the caller went away), it cancels the call in the module.
pub(crate) struct ReplyStream {
    call: PendingCall,
    /// When the stream's deadline passes, and what the caller is told then.
    deadline: Option<(Pin<Box<Sleep>>, Status)>,
    /// Replies go as `result`.
    in_json: bool,
    finished: bool,
    _lease: Lease,
}

impl Stream for ReplyStream {
    type Item = Result<pb::CallReply, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        if let Some((sleep, status)) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let status = status.clone();
            self.finished = true;
            return Poll::Ready(Some(Err(status)));
        }
        let polled = self.call.poll_next(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) | Poll::Ready(Some(Ok(Item::End(None)))) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(Item::Data(p)))) => Poll::Ready(Some(Ok(reply(p, self.in_json)))),
            Poll::Ready(Some(Ok(Item::End(Some(p))))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(reply(p, self.in_json))))
            }
            Poll::Ready(Some(Err(status))) => {
                self.finished = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(text: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(DEADLINE_HEADER, text.parse().unwrap());
        grpc_deadline(&metadata)
    }

    #[test]
    fn grpc_timeouts_parse_as_grpc_says_and_bad_ones_are_ignored() {
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(deadline("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(deadline(bad), None, "{bad:?}");
        }
        assert_eq!(millis_up(Duration::from_micros(1)), 1);
        assert_eq!(millis_up(Duration::from_micros(1001)), 2);
    }
}
