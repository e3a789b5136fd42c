//! A module's events: [`Call::publish`](crate::Call::publish) and
//! [`Call::subscribe`](crate::Call::subscribe) on its link to the router.
//!
//! The subscriptions belong to the module, not to one link: when the module
//! re-attaches to the next router, each one is subscribed again there, and
//! its stream yields [`Notice::Lagged`] with `count` 0 first, since events
//! published in the gap may be lost.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use polis_mesh::pb::{self, Frame, frame::Kind};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{Code, ModuleError, json_payload};

/// Notices a subscription holds before it counts the rest as lagged.
const BUFFER: usize = 4096;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// One event: its topic and its JSON value (`null` if not JSON).
    Event {
        /// The topic it was published on.
        topic: String,
        /// The value published.
        value: Value,
        /// Who published it: a module's name, a frontend's, or `router`.
        publisher: String,
    },
    /// `count` events were lost because this subscriber fell behind; 0 when
    /// the router changed and how many is unknown.
    Lagged {
        /// How many, or 0 for "unknown".
        count: u64,
    },
}

/// The module's subscriptions and its current link.
#[derive(Debug, Default)]
pub(crate) struct Events {
    // std Mutex: never held across an await.
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    link: Option<mpsc::Sender<Frame>>,
    subs: HashMap<u64, Sub>,
    answers: HashMap<u64, oneshot::Sender<Option<pb::Error>>>,
}

#[derive(Debug)]
struct Sub {
    pattern: String,
    tx: mpsc::Sender<Notice>,
    dropped: Arc<AtomicU64>,
}

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

/// The `Publish` frame for `value` on `topic`, or why it may not go out.
fn publish_frame(topic: &str, value: &impl Serialize) -> Result<Frame, ModuleError> {
    if topic.is_empty() || topic.contains('*') || topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ModuleError::invalid_argument(format!(
            "bad topic {topic:?}: not empty, no `*`, no spaces or control characters"
        )));
    }
    if topic.starts_with("polis.") {
        return Err(ModuleError::new(
            Code::PermissionDenied,
            format!("topic {topic:?}: topics starting \"polis.\" are the router's own"),
        ));
    }
    let publish = pb::Publish { topic: topic.to_owned(), payload: Some(json_payload(value)?) };
    Ok(frame(Kind::Publish(publish)))
}

/// Publishes the module's events from anywhere in it (a file watcher's
/// thread, a timer), outliving the call that handed it out; events go out
/// on whichever router link is current. From [`crate::Call::publisher`].
#[derive(Debug, Clone)]
pub struct Publisher(pub(crate) Arc<Events>);

impl Publisher {
    /// As [`crate::Call::publish`].
    pub async fn publish(&self, topic: &str, value: &impl Serialize) -> Result<(), ModuleError> {
        self.0.publish(topic, value).await
    }

    /// Publishes without waiting, from any thread (no runtime needed): an
    /// event that finds the link's outbox full is refused with
    /// `RESOURCE_EXHAUSTED` rather than queued.
    pub fn try_publish(&self, topic: &str, value: &impl Serialize) -> Result<(), ModuleError> {
        self.0.try_publish(topic, value)
    }
}

impl Events {
    /// A new link is up: events go out on `tx`, and every subscription is
    /// made again on it.
    pub(crate) fn attach(&self, tx: &mpsc::Sender<Frame>) {
        let mut state = self.state.lock().expect("events lock");
        let again = state.link.replace(tx.clone()).is_some();
        for (id, sub) in &state.subs {
            if again {
                notify(sub, Notice::Lagged { count: 0 });
            }
            let subscribe = Kind::Subscribe(pb::Subscribe { id: *id, pattern: sub.pattern.clone() });
            if tx.try_send(frame(subscribe)).is_err() {
                eprintln!("warning: cannot subscribe to {:?} again: the link is full", sub.pattern);
            }
        }
    }

    fn link(&self) -> Result<mpsc::Sender<Frame>, ModuleError> {
        self.state
            .lock()
            .expect("events lock")
            .link
            .clone()
            .ok_or_else(|| ModuleError::unavailable("the module has no router link"))
    }

    pub(crate) async fn publish(&self, topic: &str, value: &impl Serialize) -> Result<(), ModuleError> {
        let publish = publish_frame(topic, value)?;
        self.link()?.send(publish).await.map_err(|_| ModuleError::unavailable("the router link is closed"))
    }

    /// [`Events::publish`] without waiting: an event that finds the link's
    /// outbox full is refused, not queued (events may be lost; calls may not).
    pub(crate) fn try_publish(&self, topic: &str, value: &impl Serialize) -> Result<(), ModuleError> {
        let publish = publish_frame(topic, value)?;
        self.link()?.try_send(publish).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ModuleError::new(Code::ResourceExhausted, "the router link is full: event dropped")
            }
            mpsc::error::TrySendError::Closed(_) => ModuleError::unavailable("the router link is closed"),
        })
    }

    pub(crate) async fn subscribe(self: &Arc<Self>, pattern: &str) -> Result<Subscription, ModuleError> {
        let link = self.link()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.state.lock().expect("events lock");
            state.subs.insert(id, Sub { pattern: pattern.to_owned(), tx, dropped: dropped.clone() });
            state.answers.insert(id, answer);
        }
        let subscription = Subscription { id, rx, dropped, events: self.clone() };
        let subscribe = pb::Subscribe { id, pattern: pattern.to_owned() };
        link.send(frame(Kind::Subscribe(subscribe)))
            .await
            .map_err(|_| ModuleError::unavailable("the router link is closed"))?;
        match answered.await {
            Ok(None) => Ok(subscription),
            Ok(Some(error)) => {
                // Refused: nothing to unsubscribe when `subscription` drops.
                self.forget(id);
                Err(ModuleError::new(error.code, error.message))
            }
            Err(_) => Err(ModuleError::unavailable("the router link closed before it answered")),
        }
    }

    /// An event frame from the router.
    pub(crate) fn deliver(&self, kind: Kind) {
        let mut state = self.state.lock().expect("events lock");
        match kind {
            Kind::Event(e) => {
                if let Some(sub) = state.subs.get(&e.subscription) {
                    let value =
                        e.payload.and_then(|p| serde_json::from_slice(&p.data).ok()).unwrap_or(Value::Null);
                    notify(sub, Notice::Event { topic: e.topic, value, publisher: e.publisher });
                }
            }
            Kind::Lagged(l) => {
                if let Some(sub) = state.subs.get(&l.subscription) {
                    notify(sub, Notice::Lagged { count: l.count });
                }
            }
            Kind::Subscribed(s) => {
                if let Some(answer) = state.answers.remove(&s.id) {
                    let _ = answer.send(s.error);
                } else if s.error.is_some() {
                    state.subs.remove(&s.id);
                }
            }
            _ => {}
        }
    }

    fn forget(&self, id: u64) -> Option<mpsc::Sender<Frame>> {
        let mut state = self.state.lock().expect("events lock");
        state.answers.remove(&id);
        state.subs.remove(&id).and_then(|_| state.link.clone())
    }
}

fn notify(sub: &Sub, notice: Notice) {
    let count = match &notice {
        Notice::Lagged { count } => (*count).max(1),
        Notice::Event { .. } => 1,
    };
    if sub.tx.try_send(notice).is_err() {
        sub.dropped.fetch_add(count, Ordering::Relaxed);
    }
}

/// A subscription's notices, in order. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Notice>,
    dropped: Arc<AtomicU64>,
    events: Arc<Events>,
}

impl Subscription {
    /// The next notice; `None` once the module is gone.
    pub async fn next(&mut self) -> Option<Notice> {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            return Some(Notice::Lagged { count: dropped });
        }
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(link) = self.events.forget(self.id) {
            let _ = link.try_send(frame(Kind::Unsubscribe(pb::Unsubscribe { id: self.id })));
        }
    }
}
