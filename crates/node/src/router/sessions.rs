//! Frontend sessions, and the leases that keep the router alive.
//!
//! A [`Lease`] is held by every live session and every call in flight:
//! taking one counts up, dropping it counts down, and nobody counts by hand.
//! When the count is zero the router lingers, then leaves office; any new
//! lease during the linger cancels the exit. The decision to leave closes
//! the count in the same atomic step that finds it zero, so no lease is
//! taken after it: what arrives then is refused as not run, and retried by
//! the client at the next router (issue 11, finding 1).
//!
//! A call's lease also counts it among the calls in flight, which a planned
//! handover waits out before it lets the modules go (finding 8): the count
//! is closed first, so every call that got a lease is among those waited for.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use polis_mesh::pb::{self, session_down, session_up};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};
use tonic::{Status, Streaming};

/// How the router keeps sessions and when it leaves.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// How long the router stays with no session and no call, then exits.
    pub linger: Duration,
    /// How often frontends send a keepalive.
    pub keepalive_interval: Duration,
    /// A session silent this long is dropped (its frontend is hung).
    pub keepalive_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(15),
        }
    }
}

/// Counts what keeps the router alive.
///
/// The count is an atomic; the linger task is woken only when it crosses
/// zero, not on every call (a call takes and drops a lease: two changes).
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    inner: Arc<LeaseCount>,
    /// The calls in flight, each a token; closed when the router leaves.
    calls: TaskTracker,
}

/// Set in [`LeaseCount::count`] once the router has decided to leave.
const CLOSED: usize = 1 << (usize::BITS - 1);

#[derive(Debug)]
struct LeaseCount {
    /// Leases held, with [`CLOSED`] set once no more may be taken.
    count: AtomicUsize,
    /// Whether the count was zero at its last crossing; sent on crossings only.
    idle: watch::Sender<bool>,
}

/// One reason for the router to stay; released on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    inner: Arc<LeaseCount>,
    /// For a call: its place among the calls in flight.
    _call: Option<TaskTrackerToken>,
}

impl Leases {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(LeaseCount { count: AtomicUsize::new(0), idle: watch::Sender::new(true) }),
            calls: TaskTracker::new(),
        }
    }

    /// A lease for a call, counted among the calls in flight, or `None`
    /// once the router has decided to leave.
    pub(crate) fn take_call(&self) -> Option<Lease> {
        // Counted before the lease is taken: once `close` has shut the
        // count no lease is taken, so `finish_calls`, which comes after
        // `close`, waits for every call that got one.
        let call = self.calls.token();
        let mut lease = self.take()?;
        lease._call = Some(call);
        Some(lease)
    }

    /// The router has decided to leave: no lease is taken from now on,
    /// whatever the count (the linger's decision closes it too).
    pub(crate) fn close(&self) {
        self.inner.count.fetch_or(CLOSED, Ordering::SeqCst);
    }

    /// Waits within `within` for the calls in flight to end, after
    /// [`Leases::close`]; whether they all did.
    pub(crate) async fn finish_calls(&self, within: Duration) -> bool {
        self.calls.close();
        tokio::time::timeout(within, self.calls.wait()).await.is_ok()
    }

    /// How many calls are in flight.
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// A lease, or `None` once the router has decided to leave: then the
    /// work asking for it must be refused as not run.
    pub(crate) fn take(&self) -> Option<Lease> {
        let before = self
            .inner
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n & CLOSED == 0).then_some(n + 1))
            .ok()?;
        if before == 0 {
            self.inner.idle.send_replace(false);
        }
        Some(Lease { inner: self.inner.clone(), _call: None })
    }

    fn is_idle(&self) -> bool {
        self.inner.count.load(Ordering::SeqCst) == 0
    }

    /// Closes the count if no lease is held; whether it did.
    fn close_if_idle(&self) -> bool {
        self.inner.count.compare_exchange(0, CLOSED, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Cancels `shutdown` once there has been no lease for `linger`.
    pub(crate) async fn linger(&self, linger: Duration, shutdown: CancellationToken) {
        let mut idle = self.inner.idle.subscribe();
        loop {
            // Crossings may be seen out of order under a race; the atomic is
            // the truth, the channel only the wake-up.
            while !self.is_idle() {
                tokio::select! {
                    changed = idle.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(linger) => {
                    if self.close_if_idle() {
                        tracing::info!("no sessions and no calls for {linger:?}; leaving");
                        shutdown.cancel();
                        return;
                    }
                }
                // Someone came (and maybe went): start counting again.
                _ = idle.changed() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.send_replace(true);
        }
    }
}

/// The live sessions, for `polis status`.
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    // std Mutex: held only to insert, remove or copy.
    sessions: Mutex<HashMap<u64, pb::SessionInfo>>,
    next: std::sync::atomic::AtomicU64,
}

impl SessionTable {
    pub(crate) fn list(&self) -> Vec<pb::SessionInfo> {
        let mut list: Vec<_> = self.sessions.lock().expect("sessions lock").values().cloned().collect();
        list.sort_by(|a, b| a.since.cmp(&b.since));
        list
    }

    fn insert(&self, info: pb::SessionInfo) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions.lock().expect("sessions lock").insert(key, info);
        key
    }

    fn remove(&self, key: u64) {
        self.sessions.lock().expect("sessions lock").remove(&key);
    }
}

pub(crate) type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SessionDown, Status>> + Send>>;

/// Everything a session needs from the router.
#[derive(Debug, Clone)]
pub(crate) struct SessionHub {
    pub(crate) config: SessionConfig,
    pub(crate) leases: Leases,
    pub(crate) table: Arc<SessionTable>,
    pub(crate) router_id: String,
    pub(crate) epoch: u64,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the router starts leaving.
    pub(crate) leaving: CancellationToken,
    /// Cancelled (before `leaving`) when a successor takes over.
    pub(crate) handover: CancellationToken,
}

/// The metadata key by which a client knows that the router did not run
/// its call (the client's `frames::conn` reads it): retrying is safe.
const NOT_RUN: &str = "polis-not-run";

/// `UNAVAILABLE` for work refused because the router has decided to leave,
/// marked so that the client retries it at the next router.
pub(crate) fn not_run() -> Status {
    let mut status = Status::unavailable("the router is leaving office; call the next router");
    status.metadata_mut().insert(NOT_RUN, tonic::metadata::MetadataValue::from_static("1"));
    status
}

fn down(kind: session_down::Kind) -> Result<pb::SessionDown, Status> {
    Ok(pb::SessionDown { kind: Some(kind) })
}

impl SessionHub {
    /// Opens a session: waits for the hello, welcomes the frontend, and
    /// holds a lease until the stream ends, a goodbye, or missed keepalives.
    pub(crate) async fn open(&self, mut up: Streaming<pb::SessionUp>) -> Result<SessionStream, Status> {
        let hello = match tokio::time::timeout(self.config.keepalive_timeout, up.message()).await {
            Ok(Ok(Some(pb::SessionUp { kind: Some(session_up::Kind::Hello(hello)) }))) => hello,
            Ok(Ok(_)) => return Err(Status::invalid_argument("a session starts with a hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no session hello in time")),
        };
        let protocol = super::versions::negotiate(&hello)?;
        let (tx, rx) = mpsc::channel(16);
        let _ = tx.send(down(session_down::Kind::Welcome(self.welcome(protocol)))).await;
        let session = self.register(hello).ok_or_else(not_run)?;
        let hub = self.clone();
        self.tracker.spawn(async move {
            let why = hub.serve(&mut up, &tx).await;
            session.close(why);
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// What the router tells a frontend that opens a session speaking
    /// `protocol` (see `versions`).
    pub(crate) fn welcome(&self, protocol: u32) -> pb::SessionWelcome {
        pb::SessionWelcome {
            router_id: self.router_id.clone(),
            epoch: self.epoch,
            keepalive_interval_ms: self.config.keepalive_interval.as_millis() as u64,
            ..super::versions::welcome(protocol)
        }
    }

    /// Counts a frontend's session, over either wire, until the returned
    /// guard is closed or dropped: a lease on the router and a row in
    /// `polis status`.
    /// `None` once the router has decided to leave.
    pub(crate) fn register(&self, hello: pb::SessionHello) -> Option<Registered> {
        let lease = self.leases.take()?;
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let protocol_version = super::versions::negotiate(&hello).unwrap_or(0);
        let name = if hello.name.is_empty() { "frontend".to_owned() } else { hello.name };
        tracing::info!("session opened: {name} (pid {}, node {})", hello.pid, hello.node_id);
        let key = self.table.insert(pb::SessionInfo {
            node_id: hello.node_id,
            name: name.clone(),
            pid: hello.pid,
            since,
            protocol_version,
            client_version: hello.client_version,
            features: hello.features,
        });
        Some(Registered { table: self.table.clone(), key, name, _lease: lease })
    }

    fn leaving_reason(&self) -> &'static str {
        if self.handover.is_cancelled() {
            "the router is handing over to a successor"
        } else {
            "the router is stopping"
        }
    }

    /// What frontends hear when the router starts leaving.
    pub(crate) fn leaving_notice(&self) -> pb::RouterLeaving {
        pb::RouterLeaving { handover: self.handover.is_cancelled(), reason: self.leaving_reason().into() }
    }

    /// Answers keepalives until the session ends; says why it ended.
    async fn serve(
        &self,
        up: &mut Streaming<pb::SessionUp>,
        tx: &mpsc::Sender<Result<pb::SessionDown, Status>>,
    ) -> &'static str {
        loop {
            tokio::select! {
                message = tokio::time::timeout(self.config.keepalive_timeout, up.message()) => match message {
                    Ok(Ok(Some(pb::SessionUp { kind: Some(session_up::Kind::Keepalive(k)) }))) => {
                        let _ = tx.send(down(session_down::Kind::Keepalive(k))).await;
                    }
                    Ok(Ok(Some(pb::SessionUp { kind: Some(session_up::Kind::Goodbye(_)) }))) => return "goodbye",
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) | Ok(Err(_)) => return "the frontend went away",
                    Err(_) => return "missed keepalives: the frontend is hung",
                },
                () = self.leaving.cancelled() => {
                    let leaving = self.leaving_notice();
                    let _ = tx.send(down(session_down::Kind::Leaving(leaving))).await;
                    return self.leaving_reason();
                }
            }
        }
    }
}

/// A session counted by the router; its end is logged with the reason.
#[derive(Debug)]
pub(crate) struct Registered {
    table: Arc<SessionTable>,
    key: u64,
    name: String,
    _lease: Lease,
}

impl Registered {
    /// Ends the session, saying why.
    pub(crate) fn close(self, why: &str) {
        tracing::info!("session closed: {} ({why})", self.name);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_router_leaves_after_lingering_with_no_lease() {
        let leases = Leases::new();
        let shutdown = CancellationToken::new();
        let lease = leases.take();
        let linger = tokio::spawn({
            let (leases, shutdown) = (leases.clone(), shutdown.clone());
            async move { leases.linger(Duration::from_secs(30), shutdown).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!shutdown.is_cancelled(), "a lease keeps the router");

        drop(lease);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let again = leases.take();
        drop(again);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!shutdown.is_cancelled(), "a lease during the linger starts it over");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(shutdown.is_cancelled());
        linger.await.unwrap();
        assert!(leases.take().is_none(), "no lease is taken once the router decided to leave");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_refuses_new_leases_and_finishing_waits_for_the_calls_in_flight() {
        let leases = Leases::new();
        let session = leases.take().expect("a session's lease");
        let call = leases.take_call().expect("a call's lease");
        leases.close();
        assert!(leases.take().is_none() && leases.take_call().is_none(), "closed with leases held");
        assert_eq!(leases.calls_in_flight(), 1, "a refused call is not counted");
        // The session is no call: only the call is waited for.
        assert!(!leases.finish_calls(Duration::from_secs(1)).await, "the call is still in flight");
        let finishing = tokio::spawn({
            let leases = leases.clone();
            async move { leases.finish_calls(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(call);
        assert!(finishing.await.unwrap(), "finished once the call ended");
        drop(session);
    }
}
