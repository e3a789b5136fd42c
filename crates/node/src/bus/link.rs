//! The bus as one link sees it: the event frames it sends (`Publish`,
//! `Subscribe`, `Unsubscribe`) acted on, and a [`Port`] opened on its first
//! subscription.

use std::sync::Arc;

use polis_mesh::pb::{Frame, frame::Kind};
use tokio::sync::mpsc;

use super::{Bus, Port};

/// A link's events: what it publishes goes out as `publisher`; what it
/// subscribes to comes back through `sink`, its writer.
#[derive(Debug)]
pub(crate) struct LinkEvents {
    bus: Arc<Bus>,
    sink: mpsc::Sender<Frame>,
    publisher: String,
    /// Opened on the first Subscribe; dropped with the link.
    port: Option<Port>,
}

impl LinkEvents {
    pub(crate) fn new(bus: Arc<Bus>, sink: mpsc::Sender<Frame>, publisher: impl Into<String>) -> Self {
        Self { bus, sink, publisher: publisher.into(), port: None }
    }

    /// The name events from this link carry (a frontend's, once it says it).
    pub(crate) fn set_publisher(&mut self, publisher: impl Into<String>) {
        self.publisher = publisher.into();
    }

    /// Acts on `frame` if it is an event frame a node may send; gives it
    /// back otherwise.
    ///
    /// `Publish` has no answer frame: one the router refuses (an empty or
    /// bad topic, a `polis.` topic) is logged and dropped, and the client
    /// libraries refuse it before sending. A refused `Subscribe` is answered
    /// by `Subscribed` with the error.
    pub(crate) fn handle(&mut self, frame: Frame) -> Option<Frame> {
        match frame.kind {
            Some(Kind::Publish(publish)) => {
                let payload = publish.payload.unwrap_or_default();
                if let Err(status) = self.bus.publish(&self.publisher, false, publish.topic, payload) {
                    tracing::warn!("dropped a publish from {}: {}", self.publisher, status.message());
                }
                None
            }
            Some(Kind::Subscribe(subscribe)) => {
                let (bus, sink) = (&self.bus, &self.sink);
                let port = self.port.get_or_insert_with(|| Port::open(bus, sink.clone()));
                port.subscribe(subscribe.id, &subscribe.pattern);
                None
            }
            Some(Kind::Unsubscribe(unsubscribe)) => {
                if let Some(port) = &self.port {
                    port.unsubscribe(unsubscribe.id);
                }
                None
            }
            kind => Some(Frame { kind }),
        }
    }

    /// Ends every subscription now, before the link itself goes.
    pub(crate) fn close(&mut self) {
        self.port = None;
    }
}
