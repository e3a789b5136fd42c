//! A frontend's events: [`Client::publish`](crate::Client::publish) and
//! [`Client::subscribe`](crate::Client::subscribe) over the frame session.
//!
//! The subscriptions live here, not on a connection: when the client
//! re-attaches to the next router, each one is subscribed again on the new
//! session, and its stream first yields [`Notice::Lagged`] with `count` 0,
//! since events published in the gap may be lost.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use polis_mesh::pb::{self, frame::Kind};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use crate::{ClientError, frames::FrameConn};

/// Notices a subscription holds before it counts the rest as lagged.
const BUFFER: usize = 4096;

/// How long the router has to answer a Subscribe.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest topic or pattern, in bytes (as the router checks).
const MAX_TOPIC_LEN: usize = 256;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// One event.
    Event(Event),
    /// `count` events were lost because this subscriber fell behind; 0 when
    /// the router changed and how many is unknown.
    Lagged {
        /// How many, or 0 for "unknown".
        count: u64,
    },
}

/// One event, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The topic it was published on.
    pub topic: String,
    /// Who published it: a module's name, a frontend's, or `router`.
    pub publisher: String,
    /// The payload's content type (`application/json` from polis's libraries).
    pub content_type: String,
    /// The payload.
    pub data: Bytes,
}

impl Event {
    /// The payload as JSON (`null` when empty).
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        if self.data.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&self.data)?)
    }
}

/// Checks a topic before it is sent: the router would drop it silently.
pub(crate) fn check_topic(topic: &str) -> Result<(), ClientError> {
    let bad = |why: &str| ClientError::Call(Status::invalid_argument(format!("bad topic {topic:?}: {why}")));
    if topic.is_empty() {
        return Err(bad("a topic may not be empty"));
    }
    if topic.contains('*') {
        return Err(bad("`*` belongs in patterns, not in topics"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(bad(&format!("longer than {MAX_TOPIC_LEN} bytes")));
    }
    if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces or control characters"));
    }
    if topic.starts_with("polis.") {
        return Err(ClientError::Call(Status::permission_denied(format!(
            "topic {topic:?}: topics starting \"polis.\" are the router's own; pick another name"
        ))));
    }
    Ok(())
}

/// The client's subscriptions, across sessions.
#[derive(Debug, Default)]
pub(crate) struct Subs {
    // std Mutex: held to look up, insert or remove, never across an await.
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The session's connection, where Subscribe and Unsubscribe go.
    conn: Option<FrameConn>,
    subs: HashMap<u64, Sub>,
    answers: HashMap<u64, oneshot::Sender<Option<pb::Error>>>,
}

#[derive(Debug)]
struct Sub {
    pattern: String,
    tx: mpsc::Sender<Notice>,
    /// Notices dropped because the subscriber did not take them.
    dropped: Arc<AtomicU64>,
}

impl Subs {
    /// Makes `conn` (a new session's) the one subscriptions use, and
    /// subscribes every live subscription on it again.
    pub(crate) fn attach(self: &Arc<Self>, conn: &FrameConn) {
        let weak: Weak<Subs> = Arc::downgrade(self);
        conn.on_events(Arc::new(move |kind| {
            if let Some(subs) = weak.upgrade() {
                subs.deliver(kind);
            }
        }));
        let mut state = self.state.lock().expect("subs lock");
        let again = state.conn.replace(conn.clone()).is_some();
        for (id, sub) in &state.subs {
            if again {
                // The gap between the routers may have lost events.
                notify(sub, Notice::Lagged { count: 0 });
            }
            let _ = conn.send(Kind::Subscribe(pb::Subscribe { id: *id, pattern: sub.pattern.clone() }));
        }
    }

    fn conn(&self) -> Result<FrameConn, ClientError> {
        self.state.lock().expect("subs lock").conn.clone().ok_or_else(|| {
            ClientError::Call(Status::failed_precondition(
                "events need the frame transport; this client uses gRPC (unset POLIS_TRANSPORT)",
            ))
        })
    }

    /// Publishes `data` on `topic`.
    pub(crate) fn publish(&self, topic: &str, data: Bytes) -> Result<(), ClientError> {
        check_topic(topic)?;
        let limit = polis_mesh::codec::DEFAULT_MAX_FRAME_LEN;
        if data.len() > limit {
            return Err(ClientError::Call(Status::resource_exhausted(format!(
                "the payload is {} bytes, over the frame limit of {limit} bytes",
                data.len()
            ))));
        }
        let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data };
        self.conn()?.send(Kind::Publish(pb::Publish { topic: topic.to_owned(), payload: Some(payload) }))?;
        Ok(())
    }

    /// Subscribes to `pattern`, waiting for the router's answer.
    pub(crate) async fn subscribe(self: &Arc<Self>, pattern: &str) -> Result<Subscription, ClientError> {
        let conn = self.conn()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.state.lock().expect("subs lock");
            state.subs.insert(id, Sub { pattern: pattern.to_owned(), tx, dropped: dropped.clone() });
            state.answers.insert(id, answer);
        }
        // From here on, dropping the subscription cleans up (and unsubscribes).
        let subscription = Subscription { id, rx, dropped, subs: self.clone() };
        conn.send(Kind::Subscribe(pb::Subscribe { id, pattern: pattern.to_owned() }))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answered).await {
            Ok(Ok(None)) => Ok(subscription),
            Ok(Ok(Some(error))) => {
                self.forget(id);
                Err(ClientError::Call(Status::new(Code::from(error.code), error.message)))
            }
            Ok(Err(_)) => Err(ClientError::Call(conn.closed_status())),
            Err(_) => Err(ClientError::Call(Status::deadline_exceeded(format!(
                "the router did not answer the subscription within {ANSWER_TIMEOUT:?}"
            )))),
        }
    }

    /// Removes a subscription here (not on the router).
    fn forget(&self, id: u64) -> Option<FrameConn> {
        let mut state = self.state.lock().expect("subs lock");
        state.answers.remove(&id);
        state.subs.remove(&id).and_then(|_| state.conn.clone())
    }

    /// An event frame from the session's connection.
    fn deliver(&self, kind: Kind) {
        let mut state = self.state.lock().expect("subs lock");
        match kind {
            Kind::Event(e) => {
                if let Some(sub) = state.subs.get(&e.subscription) {
                    let payload = e.payload.unwrap_or_default();
                    let event = Event {
                        topic: e.topic,
                        publisher: e.publisher,
                        content_type: payload.content_type,
                        data: payload.data,
                    };
                    notify(sub, Notice::Event(event));
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
                } else if let Some(error) = s.error {
                    // A re-subscription the next router refused.
                    tracing::warn!("the router refused subscription {} again: {}", s.id, error.message);
                    state.subs.remove(&s.id);
                }
            }
            _ => {}
        }
    }
}

fn notify(sub: &Sub, notice: Notice) {
    let count = match &notice {
        Notice::Lagged { count } => (*count).max(1),
        Notice::Event(_) => 1,
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
    /// Counted here when the buffer was full, told as `Lagged` first.
    dropped: Arc<AtomicU64>,
    subs: Arc<Subs>,
}

impl Subscription {
    /// The subscription's id on the session.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next notice; `None` once the client is gone.
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
        if let Some(conn) = self.subs.forget(self.id) {
            let _ = conn.send(Kind::Unsubscribe(pb::Unsubscribe { id: self.id }));
        }
    }
}
