//! The `Router` service: calls and streams, routed by service name.

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

use super::sessions::{Lease, SessionHub, SessionStream};
use crate::host::{Host, Item, PendingCall};

/// The deadline of a unary call that names none.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct RouterService {
    pub(crate) host: Arc<Host>,
    pub(crate) hub: SessionHub,
}

impl RouterService {
    /// Validates a request, loads its module and sends the request.
    async fn start_call(
        &self,
        req: pb::CallRequest,
        timeout: Option<Duration>,
    ) -> Result<PendingCall, Status> {
        let payload = req.payload.unwrap_or_default();
        let max = self.host.config().max_frame_len;
        if payload.data.len() > max {
            return Err(Status::resource_exhausted(format!(
                "payload of {} bytes exceeds the frame limit of {max} bytes",
                payload.data.len()
            )));
        }
        let instance = self.host.instance(&req.service).await?;
        if instance.protocol == crate::manifest::Protocol::JsonRpc
            && !payload.data.is_empty()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&payload.data).is_err()
        {
            return Err(Status::invalid_argument(format!(
                "module {} speaks JSON-RPC: its params must be JSON",
                req.service
            )));
        }
        instance.call(req.method, payload, timeout, req.caller)
    }
}

fn deadline_status(service: &str, method: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("{service}.{method} did not answer within {timeout:?}"))
}

fn json_null() -> pb::Payload {
    pb::Payload { content_type: polis_mesh::JSON.into(), data: bytes::Bytes::from_static(b"null") }
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn call(&self, request: Request<pb::CallRequest>) -> Result<Response<pb::CallReply>, Status> {
        let req = request.into_inner();
        let timeout = match req.timeout_ms {
            0 => DEFAULT_CALL_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let (service, method) = (req.service.clone(), req.method.clone());
        // A call in flight keeps the router, as a session does.
        let _lease = self.hub.leases.take();
        let answer = async {
            let mut call = self.start_call(req, Some(timeout)).await?;
            // A streaming method called as unary answers with its last piece.
            let mut last = None;
            while let Some(item) = call.next().await {
                match item? {
                    Item::Data(p) => last = Some(p),
                    Item::End(p) => return Ok(p.or(last).unwrap_or_else(json_null)),
                }
            }
            Err(Status::unavailable(format!("module {service} ended the call without an answer")))
        };
        // Dropping the call at the deadline cancels it in the module.
        match tokio::time::timeout(timeout, answer).await {
            Ok(payload) => Ok(Response::new(pb::CallReply { payload: Some(payload?) })),
            Err(_) => Err(deadline_status(&service, &method, timeout)),
        }
    }

    type CallStreamStream = ReplyStream;

    async fn call_stream(&self, request: Request<pb::CallRequest>) -> Result<Response<ReplyStream>, Status> {
        let req = request.into_inner();
        let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        let (service, method) = (req.service.clone(), req.method.clone());
        let lease = self.hub.leases.take();
        let start = self.start_call(req, timeout);
        let call = match timeout {
            Some(t) => {
                tokio::time::timeout(t, start).await.map_err(|_| deadline_status(&service, &method, t))??
            }
            None => start.await?,
        };
        let deadline = timeout.map(|t| (Box::pin(tokio::time::sleep_until(Instant::now() + t)), t));
        Ok(Response::new(ReplyStream { call, deadline, service, method, finished: false, _lease: lease }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionUp>>,
    ) -> Result<Response<SessionStream>, Status> {
        Ok(Response::new(self.hub.open(request.into_inner()).await?))
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
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    service: String,
    method: String,
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
        if let Some((sleep, timeout)) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let status = deadline_status(&this.service, &this.method, *timeout);
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
            Poll::Ready(Some(Ok(Item::Data(p)))) => Poll::Ready(Some(Ok(pb::CallReply { payload: Some(p) }))),
            Poll::Ready(Some(Ok(Item::End(Some(p))))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(pb::CallReply { payload: Some(p) })))
            }
            Poll::Ready(Some(Err(status))) => {
                self.finished = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}
