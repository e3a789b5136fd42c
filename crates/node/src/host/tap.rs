//! The monitor's tap on the call path: what `Admin.Monitor` (`polis
//! monitor`) shows of each call that reached a module.
//!
//! Nobody watching costs one relaxed atomic load per call: no tap is made,
//! nothing is allocated. With watchers, a call carries a [`CallTap`] that
//! counts its replies; when the call ends (answered, failed, cancelled or
//! timed out) its line is offered to every watcher whose pattern matches,
//! with `try_send` on a bounded queue. A watcher too slow to take its lines
//! loses them, counted, and is told how many in a `Dropped` line: a slow
//! monitor never slows a call.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use polis_mesh::pb::{self, monitor_line::Kind};
use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::instance::Item;

/// Lines queued for one watcher before new ones are dropped.
pub(crate) const QUEUE: usize = 1024;

/// The watchers of the router's traffic.
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    /// How many watchers there are: the one thing the call path reads when
    /// nobody watches.
    watching: AtomicUsize,
    // std Mutex: held only to add, remove or offer a line, never across an await.
    watchers: Mutex<Vec<Arc<WatcherShared>>>,
}

#[derive(Debug)]
struct WatcherShared {
    pattern: String,
    payloads: bool,
    lines: mpsc::Sender<pb::MonitorLine>,
    dropped: AtomicU64,
}

/// One watcher's end: its lines, and how many it lost. Dropping it stops
/// the watch.
#[derive(Debug)]
pub(crate) struct Watch {
    monitor: Arc<Monitor>,
    shared: Arc<WatcherShared>,
    lines: mpsc::Receiver<pb::MonitorLine>,
}

impl Watch {
    /// The next line; `None` when the queue is empty right now.
    pub(crate) fn try_next(&mut self) -> Option<pb::MonitorLine> {
        self.lines.try_recv().ok()
    }

    /// Polls for the next line.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::MonitorLine>> {
        self.lines.poll_recv(cx)
    }

    /// The lines lost since the last call, counted from zero again.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.shared.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.monitor.watchers.lock().expect("watchers lock");
        watchers.retain(|w| !Arc::ptr_eq(w, &self.shared));
        self.monitor.watching.store(watchers.len(), Ordering::Relaxed);
    }
}

/// Whether `pattern` takes `name` (a service, or a topic) and, for a
/// call, its `method`: empty or `*` takes all, a name itself, `name.method`,
/// or a prefix of `name.method` ending in `*`.
pub(crate) fn matches(pattern: &str, name: &str, method: Option<&str>) -> bool {
    let full = match method {
        Some(method) => format!("{name}.{method}"),
        None => name.to_owned(),
    };
    match pattern.strip_suffix('*') {
        _ if pattern.is_empty() => true,
        Some(prefix) => full.starts_with(prefix),
        None => pattern == name || pattern == full,
    }
}

impl Monitor {
    /// Starts a watch of the calls and events `pattern` matches.
    pub(crate) fn watch(self: &Arc<Self>, pattern: String, payloads: bool) -> Watch {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(WatcherShared { pattern, payloads, lines: tx, dropped: AtomicU64::new(0) });
        let mut watchers = self.watchers.lock().expect("watchers lock");
        watchers.push(shared.clone());
        self.watching.store(watchers.len(), Ordering::Relaxed);
        Watch { monitor: self.clone(), shared, lines: rx }
    }

    /// Whether anybody watches.
    pub(crate) fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    /// A tap for a call about to be sent to `service`, or `None` (nothing
    /// allocated) when nobody watches.
    pub(crate) fn tap(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        caller: &str,
        payload: &pb::Payload,
        timeout: Option<Duration>,
    ) -> Option<CallTap> {
        if !self.is_watched() {
            return None;
        }
        Some(CallTap {
            monitor: self.clone(),
            started: Instant::now(),
            timeout,
            line: pb::CallLine {
                at: rfc3339(SystemTime::now()),
                caller: caller.to_owned(),
                service: service.to_owned(),
                method: method.to_owned(),
                request_bytes: payload.data.len() as u64,
                request: Some(payload.clone()),
                ..Default::default()
            },
            ended: false,
        })
    }

    /// Offers an event line to the watchers of its topic (the bus calls it
    /// on each publish).
    pub(crate) fn event(&self, publisher: &str, topic: &str, payload: &pb::Payload) {
        if !self.is_watched() {
            return;
        }
        let line = pb::EventLine {
            at: rfc3339(SystemTime::now()),
            publisher: publisher.to_owned(),
            topic: topic.to_owned(),
            bytes: payload.data.len() as u64,
            payload: Some(payload.clone()),
        };
        self.offer(topic, None, |payloads| {
            let mut line = line.clone();
            if !payloads {
                line.payload = None;
            }
            Kind::Event(line)
        });
    }

    fn offer(&self, name: &str, method: Option<&str>, line: impl Fn(bool) -> Kind) {
        let watchers = self.watchers.lock().expect("watchers lock");
        for w in watchers.iter().filter(|w| matches(&w.pattern, name, method)) {
            let line = pb::MonitorLine { kind: Some(line(w.payloads)) };
            if w.lines.try_send(line).is_err() {
                w.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the monitor learns of one call as it goes.
#[derive(Debug)]
pub(crate) struct CallTap {
    monitor: Arc<Monitor>,
    started: Instant,
    timeout: Option<Duration>,
    line: pb::CallLine,
    ended: bool,
}

impl CallTap {
    /// Notes one piece of the answer.
    pub(crate) fn observe(&mut self, item: &Result<Item, Status>) {
        match item {
            Ok(Item::Data(p)) => {
                self.line.items += 1;
                self.line.stream = true;
                self.line.reply_bytes += p.data.len() as u64;
                self.line.reply = Some(p.clone());
            }
            Ok(Item::End(p)) => {
                if let Some(p) = p {
                    self.line.reply_bytes += p.data.len() as u64;
                    self.line.reply = Some(p.clone());
                }
                self.end(Code::Ok, "");
            }
            Err(status) => self.end(status.code(), status.message()),
        }
    }

    /// Ends the call with a refusal at the router, and offers its line.
    pub(crate) fn refused(mut self, status: &Status) {
        self.end(status.code(), status.message());
        self.finish();
    }

    fn end(&mut self, code: Code, message: &str) {
        if !self.ended {
            self.ended = true;
            self.line.code = polis_mesh::code_name(code).to_owned();
            self.line.message = message.to_owned();
        }
    }

    /// Offers the call's line: dropped before its end, the call was
    /// cancelled, or timed out.
    pub(crate) fn finish(mut self) {
        let elapsed = self.started.elapsed();
        if !self.ended {
            let code = match self.timeout {
                Some(t) if elapsed >= t => Code::DeadlineExceeded,
                _ => Code::Cancelled,
            };
            self.end(code, "");
        }
        self.line.duration_us = elapsed.as_micros() as u64;
        let line = self.line;
        self.monitor.offer(&line.service, Some(&line.method), |payloads| {
            let mut line = line.clone();
            if !payloads {
                line.request = None;
                line.reply = None;
            }
            Kind::Call(line)
        });
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(data: &'static [u8]) -> pb::Payload {
        pb::Payload { content_type: polis_mesh::JSON.into(), data: bytes::Bytes::from_static(data) }
    }

    #[test]
    fn patterns() {
        assert!(matches("", "echo", Some("ping")));
        assert!(matches("*", "echo", Some("ping")));
        assert!(matches("echo", "echo", Some("ping")));
        assert!(matches("echo.ping", "echo", Some("ping")));
        assert!(matches("ec*", "echo", Some("ping")));
        assert!(matches("echo.p*", "echo", Some("ping")));
        assert!(!matches("echo.pong", "echo", Some("ping")));
        assert!(!matches("ech", "echo", Some("ping")));
        assert!(matches("notes.*", "notes.changed", None));
    }

    #[test]
    fn nobody_watching_makes_no_tap() {
        let monitor = Arc::new(Monitor::default());
        assert!(monitor.tap("echo", "ping", "", &payload(b"1"), None).is_none());
        let watch = monitor.watch(String::new(), false);
        assert!(monitor.tap("echo", "ping", "", &payload(b"1"), None).is_some());
        drop(watch);
        assert!(!monitor.is_watched());
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_payloads_only_on_request() {
        let monitor = Arc::new(Monitor::default());
        let mut quiet = monitor.watch("echo".into(), false);
        let mut loud = monitor.watch("echo.ping".into(), true);
        let mut other = monitor.watch("counter".into(), true);
        for _ in 0..QUEUE + 5 {
            let mut tap = monitor.tap("echo", "ping", "me", &payload(b"12"), None).unwrap();
            tap.observe(&Ok(Item::End(Some(payload(b"\"pong\"")))));
            tap.finish();
        }
        assert_eq!(quiet.take_dropped(), 5);
        assert_eq!(loud.take_dropped(), 5);
        assert!(other.try_next().is_none(), "a pattern that does not match sees nothing");
        let Some(Kind::Call(line)) = quiet.try_next().and_then(|l| l.kind) else { panic!() };
        assert_eq!((line.code.as_str(), line.request_bytes, line.reply_bytes), ("OK", 2, 6));
        assert!(line.request.is_none() && line.reply.is_none());
        let Some(Kind::Call(line)) = loud.try_next().and_then(|l| l.kind) else { panic!() };
        assert_eq!(&line.reply.unwrap().data[..], b"\"pong\"");
    }
}
