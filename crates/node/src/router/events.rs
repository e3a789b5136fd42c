//! `Router.Subscribe` for gRPC clients: one subscription on a port of its
//! own, its event frames turned into `SubscribeReply`s.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use polis_mesh::pb::{self, Frame, frame::Kind, subscribe_reply};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Code, Status};

use super::sessions::Lease;
use crate::bus::{Bus, Port};

/// Frames between the port's forwarder and the gRPC stream.
const BUFFER: usize = 256;

/// The events of one gRPC subscription. Dropped (the client cancelled),
/// it ends the subscription.
pub(crate) struct EventStream {
    rx: mpsc::Receiver<Frame>,
    _port: Port,
    _lease: Lease,
}

/// Subscribes to `pattern`, or says why not.
pub(crate) async fn subscribe(bus: &Arc<Bus>, pattern: &str, lease: Lease) -> Result<EventStream, Status> {
    let (tx, mut rx) = mpsc::channel(BUFFER);
    let port = Port::open(bus, tx);
    port.subscribe(1, pattern);
    match rx.recv().await.and_then(|f| f.kind) {
        Some(Kind::Subscribed(pb::Subscribed { error: None, .. })) => {}
        Some(Kind::Subscribed(pb::Subscribed { error: Some(e), .. })) => {
            return Err(Status::new(Code::from(e.code), e.message));
        }
        _ => return Err(Status::internal("the bus did not answer the subscription")),
    }
    Ok(EventStream { rx, _port: port, _lease: lease })
}

impl Stream for EventStream {
    type Item = Result<pb::SubscribeReply, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let kind = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(frame)) => frame.kind,
            };
            let kind = match kind {
                Some(Kind::Event(e)) => subscribe_reply::Kind::Event(e),
                Some(Kind::Lagged(l)) => subscribe_reply::Kind::Lagged(l),
                _ => continue,
            };
            return Poll::Ready(Some(Ok(pb::SubscribeReply { kind: Some(kind) })));
        }
    }
}
