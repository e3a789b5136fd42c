//! The `Router` service: calls and streams, routed by service name.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use polis_mesh::pb::{self, router_server::Router};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::{
    calls::{self, CallSpec},
    sessions::{Lease, SessionHub, SessionStream},
};
use crate::host::{Host, Item, PendingCall};

pub(crate) struct RouterService {
    pub(crate) host: Arc<Host>,
    pub(crate) hub: SessionHub,
}

fn spec(req: pb::CallRequest) -> CallSpec {
    CallSpec {
        service: req.service,
        method: req.method,
        payload: req.payload.unwrap_or_default(),
        caller: req.caller,
        timeout_ms: req.timeout_ms,
    }
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn call(&self, request: Request<pb::CallRequest>) -> Result<Response<pb::CallReply>, Status> {
        // A call in flight keeps the router, as a session does.
        let _lease = self.hub.leases.take();
        let payload = calls::unary(&self.host, spec(request.into_inner())).await?;
        Ok(Response::new(pb::CallReply { payload: Some(payload) }))
    }

    type CallStreamStream = ReplyStream;

    async fn call_stream(&self, request: Request<pb::CallRequest>) -> Result<Response<ReplyStream>, Status> {
        let spec = spec(request.into_inner());
        let lease = self.hub.leases.take();
        let (call, deadline) = match spec.stream_timeout() {
            Some(t) => {
                let status = spec.deadline_status(t);
                let ends = Box::pin(tokio::time::sleep_until(Instant::now() + t));
                let start = tokio::time::timeout(t, calls::start(&self.host, spec, Some(t)));
                (start.await.map_err(|_| status.clone())??, Some((ends, status)))
            }
            None => (calls::start(&self.host, spec, None).await?, None),
        };
        Ok(Response::new(ReplyStream { call, deadline, finished: false, _lease: lease }))
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
        let lease = self.hub.leases.take();
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
