//! A subscriber's bounded queue: the publisher pushes without waiting; when
//! the queue is full the oldest event is dropped and counted against its
//! subscription, and the reader is told `Lagged {count}` before the events
//! that remain.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use polis_mesh::pb;
use tokio::sync::Notify;

/// One published event, shared by every subscriber it goes to.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) topic: String,
    /// `bytes::Bytes` inside: cloning it shares the bytes.
    pub(crate) payload: pb::Payload,
    pub(crate) publisher: String,
}

/// What the reader takes from a queue, in order.
#[derive(Debug)]
pub(crate) enum Out {
    Event {
        subscription: u64,
        event: Arc<Published>,
    },
    Lagged {
        subscription: u64,
        count: u64,
    },
    /// The answer to a Subscribe: never dropped, never counted.
    Subscribed {
        id: u64,
        error: Option<pb::Error>,
    },
}

impl Out {
    pub(crate) fn into_frame(self) -> pb::Frame {
        use pb::frame::Kind;
        let kind = match self {
            Out::Event { subscription, event } => Kind::Event(pb::Event {
                subscription,
                topic: event.topic.clone(),
                payload: Some(event.payload.clone()),
                publisher: event.publisher.clone(),
            }),
            Out::Lagged { subscription, count } => Kind::Lagged(pb::Lagged { subscription, count }),
            Out::Subscribed { id, error } => Kind::Subscribed(pb::Subscribed { id, error }),
        };
        pb::Frame { kind: Some(kind) }
    }
}

/// A bounded queue of deliveries for one link.
#[derive(Debug)]
pub(crate) struct Queue {
    // std Mutex: held to push or take, never across an await.
    state: Mutex<State>,
    wake: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Events and answers, oldest first; only events count toward capacity.
    items: VecDeque<Out>,
    events: usize,
    /// Events dropped per subscription since the reader last took.
    lagged: BTreeMap<u64, u64>,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), wake: Notify::new(), capacity: capacity.max(1) }
    }

    /// Queues an event for `subscription`; never waits. When full, the
    /// oldest event goes and is counted as lagged.
    pub(crate) fn push(&self, subscription: u64, event: Arc<Published>) {
        {
            let mut state = self.state.lock().expect("queue lock");
            if state.events >= self.capacity {
                let oldest = state.items.iter().position(|o| matches!(o, Out::Event { .. }));
                if let Some(Out::Event { subscription, .. }) = oldest.and_then(|i| state.items.remove(i)) {
                    *state.lagged.entry(subscription).or_default() += 1;
                    state.events -= 1;
                }
            }
            state.items.push_back(Out::Event { subscription, event });
            state.events += 1;
        }
        self.wake.notify_one();
    }

    /// Queues a Subscribed answer, after what is already queued.
    pub(crate) fn answer(&self, id: u64, error: Option<pb::Error>) {
        self.state.lock().expect("queue lock").items.push_back(Out::Subscribed { id, error });
        self.wake.notify_one();
    }

    /// Takes up to `max` items into `out`: lag notices first (the events
    /// they count were older than any still queued), then the rest in order.
    pub(crate) fn take(&self, out: &mut Vec<Out>, max: usize) {
        let mut state = self.state.lock().expect("queue lock");
        for (subscription, count) in std::mem::take(&mut state.lagged) {
            out.push(Out::Lagged { subscription, count });
        }
        while out.len() < max {
            let Some(item) = state.items.pop_front() else { break };
            if matches!(item, Out::Event { .. }) {
                state.events -= 1;
            }
            out.push(item);
        }
    }

    /// Waits for something to take, then takes it (at least one item).
    pub(crate) async fn next(&self, out: &mut Vec<Out>, max: usize) {
        loop {
            self.take(out, max);
            if !out.is_empty() {
                return;
            }
            // A permit left by a push since the take makes this return at once.
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Arc<Published> {
        Arc::new(Published {
            topic: format!("t{n}"),
            payload: pb::Payload::default(),
            publisher: "test".into(),
        })
    }

    fn topics(out: &[Out]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Out::Event { subscription, event } => format!("{subscription}:{}", event.topic),
                Out::Lagged { subscription, count } => format!("lagged {subscription}:{count}"),
                Out::Subscribed { id, .. } => format!("subscribed {id}"),
            })
            .collect()
    }

    #[test]
    fn keeps_order_within_capacity() {
        let q = Queue::new(4);
        q.answer(1, None);
        for n in 0..3 {
            q.push(1, event(n));
        }
        let mut out = Vec::new();
        q.take(&mut out, 16);
        assert_eq!(topics(&out), ["subscribed 1", "1:t0", "1:t1", "1:t2"]);
    }

    #[test]
    fn overflow_drops_the_oldest_and_says_so_first() {
        let q = Queue::new(3);
        for n in 0..5 {
            q.push(1, event(n));
        }
        q.push(2, event(5));
        let mut out = Vec::new();
        q.take(&mut out, 16);
        // 6 pushed into 3 places: t0, t1 (sub 1) and t2 (sub 1) went.
        assert_eq!(topics(&out), ["lagged 1:3", "1:t3", "1:t4", "2:t5"]);
        out.clear();
        q.take(&mut out, 16);
        assert!(out.is_empty(), "a lag is told once");
    }

    #[test]
    fn answers_are_never_dropped_or_counted() {
        let q = Queue::new(1);
        q.answer(7, None);
        q.push(1, event(0));
        q.push(1, event(1));
        let mut out = Vec::new();
        q.take(&mut out, 16);
        assert_eq!(topics(&out), ["lagged 1:1", "subscribed 7", "1:t1"]);
    }

    #[test]
    fn take_respects_max() {
        let q = Queue::new(10);
        for n in 0..5 {
            q.push(1, event(n));
        }
        let mut out = Vec::new();
        q.take(&mut out, 2);
        assert_eq!(out.len(), 2);
        out.clear();
        q.take(&mut out, 10);
        assert_eq!(topics(&out), ["1:t2", "1:t3", "1:t4"]);
    }

    #[tokio::test]
    async fn next_wakes_on_push() {
        let q = Arc::new(Queue::new(4));
        let reader = tokio::spawn({
            let q = q.clone();
            async move {
                let mut out = Vec::new();
                q.next(&mut out, 4).await;
                topics(&out)
            }
        });
        tokio::task::yield_now().await;
        q.push(3, event(9));
        assert_eq!(reader.await.unwrap(), ["3:t9"]);
    }
}
