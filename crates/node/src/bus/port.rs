//! A link's membership of the bus: its queue, the task that forwards the
//! queue to the link's writer, and its subscriptions, which end with it.

use std::sync::{Arc, atomic::Ordering};

use polis_mesh::pb::Frame;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{Bus, QUEUE_CAPACITY, queue::Queue};

/// Frames the forwarder takes from the queue at once.
const BATCH: usize = 64;

/// One link on the bus. Dropping it ends every subscription it holds.
#[derive(Debug)]
pub(crate) struct Port {
    bus: Arc<Bus>,
    link: u64,
    queue: Arc<Queue>,
    _forwarder: AbortOnDropHandle<()>,
}

impl Port {
    /// Joins the bus; events for this link go to `sink`, the link's writer.
    /// Waiting on `sink` only holds this link's forwarder: the publisher
    /// never waits, and the queue drops this link's oldest events instead.
    pub(crate) fn open(bus: &Arc<Bus>, sink: mpsc::Sender<Frame>) -> Port {
        Self::open_with(bus, sink, QUEUE_CAPACITY)
    }

    pub(crate) fn open_with(bus: &Arc<Bus>, sink: mpsc::Sender<Frame>, capacity: usize) -> Port {
        let link = bus.next_link.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::new(capacity));
        let forwarder = tokio::spawn(forward(queue.clone(), sink));
        Port { bus: bus.clone(), link, queue, _forwarder: AbortOnDropHandle::new(forwarder) }
    }

    /// Starts subscription `id` on `pattern`; the `Subscribed` answer (with
    /// an error if refused) comes through the queue, before its events.
    pub(crate) fn subscribe(&self, id: u64, pattern: &str) {
        self.bus.subscribe(self.link, &self.queue, id, pattern);
    }

    /// Ends subscription `id`; events already queued may still arrive.
    pub(crate) fn unsubscribe(&self, id: u64) {
        self.bus.unsubscribe(self.link, id);
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.bus.leave(self.link);
    }
}

async fn forward(queue: Arc<Queue>, sink: mpsc::Sender<Frame>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        queue.next(&mut batch, BATCH).await;
        for out in batch.drain(..) {
            if sink.send(out.into_frame()).await.is_err() {
                return;
            }
        }
    }
}
