//! The event bus: publish / subscribe across every link (`frame.proto`,
//! "Events").
//!
//! A link (a module's, a frontend's frame session, a gRPC `Subscribe`
//! stream) joins as a [`Port`]: one bounded [`queue::Queue`] and a task
//! forwarding it to the link's writer. A publish matches the topic against
//! an exact map and a list of prefixes under a read lock, and pushes one
//! `Arc` of the event (its payload's bytes shared) onto each matching
//! queue without waiting: a slow subscriber loses its oldest events and is
//! told `Lagged`, and never slows the publisher or anyone else. Pushes
//! happen in the publisher's order, so per publisher order is kept.
//!
//! # Layout
//! - `pattern`: valid topics and patterns, and the reserved `polis.` prefix.
//! - `queue`: a subscriber's bounded queue with lag counts.
//! - `link`: the event frames a link sends, acted on.
//! - `port`: a link's membership: its subscriptions, its forwarder, and
//!   their end with the link.

mod link;
mod pattern;
mod port;
mod queue;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock, atomic::AtomicU64},
};

use polis_mesh::pb;
use tonic::Status;

use crate::host::Monitor;

pub(crate) use link::LinkEvents;
use pattern::Pattern;
pub(crate) use pattern::check_topic;
pub(crate) use port::Port;
use queue::{Published, Queue};

/// Subscriptions one link may hold at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 1024;

/// Events queued for one link before the oldest are dropped.
pub(crate) const QUEUE_CAPACITY: usize = 4096;

/// The router's event bus. Cheap to share: hold it in an `Arc`.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    // std RwLock: publishes read it, (un)subscribes write it; never held
    // across an await.
    table: RwLock<Table>,
    next_link: AtomicU64,
    /// The monitor's watchers, shown every event published (`polis monitor`).
    monitor: Arc<Monitor>,
}

/// Where a matching event goes.
#[derive(Debug, Clone)]
struct Target {
    link: u64,
    subscription: u64,
    queue: Arc<Queue>,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Vec<Target>>,
    /// Prefix patterns, `""` for `*`; scanned in full on each publish.
    prefixes: Vec<(String, Target)>,
    /// Each link's subscriptions and their patterns.
    links: HashMap<u64, HashMap<u64, Pattern>>,
}

impl Bus {
    /// A bus whose events `monitor`'s watchers see.
    pub(crate) fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor, ..Self::default() }
    }

    /// Publishes an event from `publisher` (a module's name, a frontend's,
    /// "router"). Refuses a bad topic, and a `polis.` topic from anyone but
    /// the router. Returns how many subscriptions it went to.
    pub(crate) fn publish(
        &self,
        publisher: &str,
        from_router: bool,
        topic: String,
        payload: pb::Payload,
    ) -> Result<usize, Status> {
        check_topic(&topic, from_router)?;
        // Before the subscribers are looked up: the monitor sees events that
        // nobody subscribed to, too. One relaxed load when nobody watches.
        if self.monitor.is_watched() {
            self.monitor.event(publisher, &topic, &payload);
        }
        let table = self.table.read().expect("bus lock");
        let exact = table.exact.get(&topic).map(Vec::as_slice).unwrap_or_default();
        let first_prefix = table.prefixes.iter().position(|(p, _)| topic.starts_with(p.as_str()));
        let Some(first_prefix) =
            first_prefix.or(if exact.is_empty() { None } else { Some(table.prefixes.len()) })
        else {
            return Ok(0);
        };
        let event = Arc::new(Published { topic, payload, publisher: publisher.to_owned() });
        let mut delivered = 0;
        let prefixes =
            table.prefixes[first_prefix..].iter().filter(|(p, _)| event.topic.starts_with(p.as_str()));
        for target in exact.iter().chain(prefixes.map(|(_, t)| t)) {
            target.queue.push(target.subscription, event.clone());
            delivered += 1;
        }
        Ok(delivered)
    }

    /// A JSON event from the router itself (`polis.…`), logged if it fails.
    pub(crate) fn announce(&self, topic: &str, value: &serde_json::Value) {
        let payload = pb::Payload {
            content_type: polis_mesh::JSON.into(),
            data: serde_json::to_vec(value).expect("JSON values serialize").into(),
        };
        if let Err(status) = self.publish("router", true, topic.to_owned(), payload) {
            tracing::warn!("router event {topic} not published: {}", status.message());
        }
    }

    /// Adds a subscription; the answer is queued on the link either way.
    fn subscribe(&self, link: u64, queue: &Arc<Queue>, id: u64, pattern: &str) {
        let result = self.try_subscribe(link, queue, id, pattern);
        let error =
            result.err().map(|s| pb::Error { code: s.code() as i32, message: s.message().to_owned() });
        // Queued after the subscription is in the table, and before any of
        // its events: the queue keeps that order.
        queue.answer(id, error);
    }

    fn try_subscribe(&self, link: u64, queue: &Arc<Queue>, id: u64, pattern: &str) -> Result<(), Status> {
        let parsed = Pattern::parse(pattern)?;
        let mut table = self.table.write().expect("bus lock");
        let subs = table.links.entry(link).or_default();
        if subs.contains_key(&id) {
            return Err(Status::invalid_argument(format!(
                "subscription id {id} is already in use on this link; pick another"
            )));
        }
        if subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(Status::resource_exhausted(format!(
                "this link holds {MAX_SUBSCRIPTIONS} subscriptions, the limit; unsubscribe some first"
            )));
        }
        subs.insert(id, parsed.clone());
        let target = Target { link, subscription: id, queue: queue.clone() };
        match parsed {
            Pattern::Exact(topic) => table.exact.entry(topic).or_default().push(target),
            Pattern::Prefix(prefix) => table.prefixes.push((prefix, target)),
        }
        Ok(())
    }

    /// Ends a subscription; unknown ids are ignored (it may have been refused).
    fn unsubscribe(&self, link: u64, id: u64) {
        let mut table = self.table.write().expect("bus lock");
        let Some(pattern) = table.links.get_mut(&link).and_then(|subs| subs.remove(&id)) else { return };
        Self::remove(&mut table, link, id, &pattern);
    }

    /// Ends every subscription of a link.
    fn leave(&self, link: u64) {
        let mut table = self.table.write().expect("bus lock");
        let Some(subs) = table.links.remove(&link) else { return };
        if subs.len() > 16 {
            // One pass instead of one per subscription.
            table.exact.retain(|_, targets| {
                targets.retain(|t| t.link != link);
                !targets.is_empty()
            });
            table.prefixes.retain(|(_, t)| t.link != link);
            return;
        }
        for (id, pattern) in subs {
            Self::remove(&mut table, link, id, &pattern);
        }
    }

    fn remove(table: &mut Table, link: u64, id: u64, pattern: &Pattern) {
        let is_it = |t: &Target| t.link == link && t.subscription == id;
        match pattern {
            Pattern::Exact(topic) => {
                if let Some(targets) = table.exact.get_mut(topic) {
                    targets.retain(|t| !is_it(t));
                    if targets.is_empty() {
                        table.exact.remove(topic);
                    }
                }
            }
            Pattern::Prefix(_) => table.prefixes.retain(|(_, t)| !is_it(t)),
        }
    }

    /// How many subscriptions are held, on every link.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.table.read().expect("bus lock").links.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests;
