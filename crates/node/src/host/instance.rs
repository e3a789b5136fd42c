//! One running module: its link, the calls in flight on it, and the task
//! that watches the process.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    process::ExitStatus,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;

use polis_discovery::{Discovery, MeshDir};
use polis_mesh::pb::{self, Frame, frame::Kind, reply::Outcome};
use tokio::sync::{Notify, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, Status};
use uuid::Uuid;

use super::{
    Host,
    link::{LinkReader, LinkWriter},
    methods::Declared,
    outgoing::{Outgoing, Parent},
    spawn::{self, ChildProcess},
    tap::{CallTap, Monitor},
};
use crate::manifest::{Manifest, Protocol};

/// Calls in flight on one module before new ones are refused.
const MAX_IN_FLIGHT: usize = 4096;

/// How long a module that closed its stdout may take to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// One piece of an answer.
#[derive(Debug)]
pub(crate) enum Item {
    /// A streamed item; more follow.
    Data(pb::Payload),
    /// The end of the answer, with a final payload or none.
    End(Option<pb::Payload>),
}

type Replies = mpsc::UnboundedSender<Result<Item, Status>>;

/// A call in flight to the module: where its answer goes, and what a call
/// the module makes while serving it inherits.
struct InFlight {
    replies: Replies,
    depth: u32,
    deadline: Option<Instant>,
}

/// A running module process and its link.
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) pid: Option<u32>,
    /// The module's node id, when it attached over the socket.
    pub(crate) node_id: Option<Uuid>,
    /// The node id it was spawned with (`POLIS_NODE_ID`), when this router
    /// started it: once it is reaped, a record of that id is a dead one.
    pub(crate) spawned_as: Option<Uuid>,
    pub(crate) protocol: Protocol,
    /// The methods it declared in its handshake, if it did.
    pub(crate) declared: Declared,
    monitor: Arc<Monitor>,
    outbound: mpsc::Sender<Frame>,
    /// Cancels owed to the module; never lost to a full `outbound`.
    cancels: Arc<Cancels>,
    // std Mutex: held only to insert or remove, never across an await.
    // Requests are queued on `outbound` under it, so they go out in id order.
    pending: Mutex<HashMap<u64, InFlight>>,
    next_id: AtomicU64,
    /// Replies for requests never made (`unsolicited.rs`).
    unsolicited: super::unsolicited::Unsolicited,
    pub(crate) calls: AtomicU64,
    /// Set before a planned stop, so the exit is not counted as a crash.
    stopping: AtomicBool,
    /// Asks the driver to kill the process.
    kill: CancellationToken,
    /// Asks the driver to let go of the module without stopping it (a
    /// planned handover: the module re-attaches to the next router).
    release: CancellationToken,
    /// Cancelled once the link is over and the process reaped.
    closed: CancellationToken,
    exit: OnceLock<Exit>,
    /// The host, for the module's own calls (held weakly: the host holds us).
    pub(super) host: Weak<Host>,
    /// The manifest the module was started from, if any: whom it may call.
    pub(super) manifest: Option<Manifest>,
    /// The module's own calls in flight.
    pub(super) outgoing: Outgoing,
    /// The module's publishes and subscriptions (`bus::LinkEvents`).
    // std Mutex: frames are handled synchronously, never across an await.
    events: Mutex<crate::bus::LinkEvents>,
}

/// How an instance ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    /// For people: what happened, with the exit status and last log lines.
    pub(crate) reason: String,
    /// Whether it failed: a non-zero exit, a signal, or a broken link, not
    /// at the router's request.
    pub(crate) crashed: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("name", &self.name).field("pid", &self.pid).finish_non_exhaustive()
    }
}

/// What a link needs to run: the parts of a handshaken module.
pub(crate) struct Parts {
    pub(crate) name: String,
    /// The node id a spawned module was given.
    pub(crate) spawned_as: Option<Uuid>,
    pub(crate) version: String,
    pub(crate) protocol: Protocol,
    pub(crate) process: Process,
    pub(crate) reader: LinkReader,
    pub(crate) writer: LinkWriter,
    pub(crate) log: PathBuf,
    pub(crate) host: Weak<Host>,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) declared: Declared,
    pub(crate) monitor: Arc<Monitor>,
    /// The event bus the module publishes to and subscribes on.
    pub(crate) bus: Arc<crate::bus::Bus>,
}

/// The process behind a link.
pub(crate) enum Process {
    /// Started by this router: watched and reaped as its child.
    Child(Box<dyn ChildProcess>),
    /// Attached over the socket (re-parented or self-loaded): not our child,
    /// so it is watched through its node lock, and its pid is killed only
    /// while that lock is still held, which proves the pid is still it.
    Attached { pid: Option<u32>, node: Option<(MeshDir, Uuid)> },
}

impl Process {
    fn pid(&self) -> Option<u32> {
        match self {
            Process::Child(child) => child.id(),
            Process::Attached { pid, .. } => *pid,
        }
    }
}

impl Instance {
    /// Starts the writer and the driver of a handshaken module on `tracker`.
    pub(crate) fn run(parts: Parts, tracker: &TaskTracker) -> Arc<Self> {
        let (outbound, rx) = mpsc::channel(1024);
        let events = Mutex::new(crate::bus::LinkEvents::new(parts.bus, outbound.clone(), parts.name.clone()));
        let instance = Arc::new(Self {
            name: parts.name.clone(),
            version: parts.version,
            pid: parts.process.pid(),
            node_id: match &parts.process {
                Process::Attached { node, .. } => node.as_ref().map(|(_, id)| *id),
                Process::Child(_) => None,
            },
            spawned_as: parts.spawned_as,
            protocol: parts.protocol,
            declared: parts.declared,
            monitor: parts.monitor,
            outbound,
            cancels: Arc::new(Cancels::default()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            unsolicited: Default::default(),
            calls: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            kill: CancellationToken::new(),
            release: CancellationToken::new(),
            closed: CancellationToken::new(),
            exit: OnceLock::new(),
            host: parts.host,
            manifest: parts.manifest,
            outgoing: Outgoing::default(),
            events,
        });
        let stop_writing = instance.closed.clone();
        tracker.spawn(write_loop(
            parts.writer,
            rx,
            instance.cancels.clone(),
            stop_writing,
            instance.release.clone(),
        ));
        tracker.spawn(drive(instance.clone(), parts.reader, parts.process, parts.log));
        instance
    }

    /// Whether the link is over.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// How many calls to it are in flight (sent or queued, not answered).
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    /// Waits until the link is over and the process reaped; then says how it ended.
    pub(crate) async fn closed(&self) -> Exit {
        self.closed.cancelled().await;
        self.exit.get().cloned().expect("set before closing")
    }

    /// Sends a request; the answer arrives through the returned call.
    /// Dropping the call before its end cancels the request in the module.
    #[cfg(test)]
    pub(crate) fn call(
        self: &Arc<Self>,
        method: String,
        payload: pb::Payload,
        timeout: Option<Duration>,
        caller: String,
    ) -> Result<PendingCall, Status> {
        self.call_at(method, payload, timeout, caller, 1)
    }

    /// [`Instance::call`] for a call `depth` deep in a chain of calls.
    pub(crate) fn call_at(
        self: &Arc<Self>,
        method: String,
        payload: pb::Payload,
        timeout: Option<Duration>,
        caller: String,
        depth: u32,
    ) -> Result<PendingCall, Status> {
        let tap = self.monitor.tap(&self.name, &method, &caller, &payload, timeout);
        // A method the module declared it does not have is answered here.
        if let Err(status) = self.declared.check(&self.name, &method) {
            if let Some(tap) = tap {
                tap.refused(&status);
            }
            return Err(status);
        }
        if let Some(exit) = self.exit.get() {
            return Err(Status::unavailable(exit.reason.clone()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            // Held while queueing, so that requests are queued in id order:
            // the writer relies on it to tell sent requests from queued ones.
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(self.busy());
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let timeout_ms = timeout.map_or(0, |t| t.as_millis().max(1) as u64);
            let request = pb::Request {
                id,
                method,
                payload: Some(payload),
                caller,
                timeout_ms,
                depth,
                ..Default::default()
            };
            match self.outbound.try_send(Frame { kind: Some(Kind::Request(request)) }) {
                Ok(()) => {}
                // A module slower to read its requests than callers send
                // them is at its limit too, whichever bound is met first.
                Err(mpsc::error::TrySendError::Full(_)) => return Err(self.busy()),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(Status::unavailable(format!("module {} is not accepting calls", self.name)));
                }
            }
            let deadline = timeout.map(|t| Instant::now() + t);
            pending.insert(id, InFlight { replies: tx, depth, deadline });
            id
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(PendingCall { instance: self.clone(), id, rx, done: false, tap })
    }

    /// The one answer to a call over the module's limits.
    fn busy(&self) -> Status {
        Status::resource_exhausted(format!(
            "module {} has {MAX_IN_FLIGHT} calls in flight or queued; try again later",
            self.name
        ))
    }

    /// Asks the module to exit; kills it after `grace`. Returns once reaped.
    pub(crate) async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let grace_ms = grace.as_millis().min(u32::MAX as u128) as u32;
        let _ = self.outbound.try_send(Frame { kind: Some(Kind::Shutdown(pb::Shutdown { grace_ms })) });
        if tokio::time::timeout(grace, self.closed.cancelled()).await.is_err() {
            tracing::warn!("module {} ignored Shutdown for {grace:?}; killing it", self.name);
            self.kill.cancel();
            self.closed.cancelled().await;
        }
    }

    /// Lets go of the module without stopping it: its link closes, its
    /// calls fail, and it is free to re-attach to the next router.
    pub(crate) async fn release(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.release.cancel();
        self.closed.cancelled().await;
    }

    /// Queues a frame for the module (a reply to one of its own calls),
    /// waiting while its outbox is full.
    pub(super) async fn send(&self, frame: Frame) -> Result<(), ()> {
        self.outbound.send(frame).await.map_err(|_| ())
    }

    /// What a call the module makes while serving request `id` inherits;
    /// `None` once that request has ended.
    pub(super) fn parent(&self, id: u64) -> Option<Parent> {
        let pending = self.pending.lock().expect("pending lock");
        pending.get(&id).map(|call| Parent { depth: call.depth, deadline: call.deadline })
    }

    /// Acts on a frame from the module.
    /// `Err` when the module broke the protocol badly enough to end its link.
    fn dispatch(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        // Publish, Subscribe, Unsubscribe: the bus's.
        let Some(frame) = self.events.lock().expect("events lock").handle(frame) else { return Ok(()) };
        match frame.kind {
            Some(Kind::Reply(reply)) => return self.on_reply(reply),
            // The module's own calls (see `outgoing`).
            Some(Kind::Request(request)) => super::outgoing::request(self, request),
            Some(Kind::Cancel(cancel)) => self.outgoing.cancel(cancel.id),
            _ => tracing::warn!("module {} sent an unexpected frame; ignoring it", self.name),
        }
        Ok(())
    }

    /// Routes a reply from the module to the call waiting for it.
    fn on_reply(&self, reply: pb::Reply) -> Result<(), String> {
        let item = match reply.outcome {
            Some(Outcome::Payload(p)) if reply.more => Ok(Item::Data(p)),
            Some(Outcome::Payload(p)) => Ok(Item::End(Some(p))),
            Some(Outcome::Error(e)) => {
                let code = match Code::from(e.code) {
                    Code::Ok => Code::Unknown,
                    code => code,
                };
                Err(Status::new(code, e.message))
            }
            None if reply.more => return Ok(()),
            None => Ok(Item::End(None)),
        };
        let ended = !matches!(item, Ok(Item::Data(_)));
        let sender = {
            let mut pending = self.pending.lock().expect("pending lock");
            if ended {
                pending.remove(&reply.id).map(|call| call.replies)
            } else {
                pending.get(&reply.id).map(|call| call.replies.clone())
            }
        };
        // A reply to a call that was cancelled or timed out has nobody to go to.
        match sender {
            Some(sender) => {
                let _ = sender.send(item);
                if ended {
                    // The calls the module made to serve it are no one's any more.
                    self.outgoing.end_parent(reply.id);
                }
                Ok(())
            }
            None => self.unsolicited.note(reply.id, self.next_id.load(Ordering::Relaxed)),
        }
    }

    /// Ends the link: every call in flight fails with the reason.
    fn close(&self, exit: Exit) {
        let reason = exit.reason.clone();
        let _ = self.exit.set(exit);
        // Its subscriptions end with the link.
        self.events.lock().expect("events lock").close();
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        for (_, call) in pending {
            let _ = call.replies.send(Err(Status::unavailable(reason.clone())));
        }
        self.outgoing.end_all();
        self.closed.cancel();
    }

    fn forget(&self, id: u64) -> bool {
        let forgotten = self.pending.lock().expect("pending lock").remove(&id).is_some();
        if forgotten {
            // Cancelled or timed out: so are the calls the module made for it.
            self.outgoing.end_parent(id);
        }
        forgotten
    }
}

/// A request in flight. Dropped before its end, it cancels the request.
pub(crate) struct PendingCall {
    instance: Arc<Instance>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Result<Item, Status>>,
    done: bool,
    /// What the monitor sees of the call; `None` when nobody watches.
    tap: Option<CallTap>,
}

impl PendingCall {
    /// The request's id on the link.
    #[cfg(test)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The next piece of the answer; `None` after the end.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                if let Some(tap) = &mut self.tap {
                    tap.observe(&item);
                }
                self.done = !matches!(item, Ok(Item::Data(_)));
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.done = true;
                let reason = self.instance.exit.get().map_or_else(
                    || format!("module {} dropped the call", self.instance.name),
                    |e| e.reason.clone(),
                );
                let status = Status::unavailable(reason);
                if let Some(tap) = &mut self.tap {
                    tap.observe(&Err(status.clone()));
                }
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next piece of the answer; `None` after the end.
    pub(crate) async fn next(&mut self) -> Option<Result<Item, Status>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.done && self.instance.forget(self.id) {
            self.instance.cancels.push(self.id);
        }
        if let Some(tap) = self.tap.take() {
            tap.finish();
        }
    }
}

/// The ids of calls dropped before their end: the writer owes the module a
/// `Cancel` for each. A set beside the outbox rather than a frame in it, so
/// that a full outbox cannot lose a cancel, and a cancel does not wait
/// behind the requests queued after its own.
#[derive(Debug, Default)]
struct Cancels {
    // std Mutex: held only to insert or take, never across an await.
    ids: Mutex<BTreeSet<u64>>,
    /// Wakes an idle writer.
    wake: Notify,
}

impl Cancels {
    fn push(&self, id: u64) {
        self.ids.lock().expect("cancels lock").insert(id);
        self.wake.notify_one();
    }

    /// The cancels for requests up to `sent`; those above stay for
    /// [`Cancels::take`] when their request comes out of the outbox.
    fn take_sent(&self, sent: u64) -> BTreeSet<u64> {
        let mut ids = self.ids.lock().expect("cancels lock");
        let queued = ids.split_off(&(sent + 1));
        std::mem::replace(&mut *ids, queued)
    }

    /// Whether the request `id` was cancelled before it was sent.
    fn take(&self, id: u64) -> bool {
        self.ids.lock().expect("cancels lock").remove(&id)
    }
}

fn cancel(id: u64) -> Frame {
    Frame { kind: Some(Kind::Cancel(pb::Cancel { id })) }
}

/// Frames the writer takes from a module's outbox for one write.
const WRITE_BATCH: usize = 64;

async fn write_loop(
    mut writer: LinkWriter,
    mut rx: mpsc::Receiver<Frame>,
    cancels: Arc<Cancels>,
    closed: CancellationToken,
    release: CancellationToken,
) {
    // The id of the last request taken from the outbox: requests are queued
    // in id order, so every request up to it has been sent (or skipped), or
    // is in the batch being written (its cancel then follows it).
    let mut sent = 0;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        // Cancels first: each one frees the module of work nobody waits for.
        for id in cancels.take_sent(sent) {
            if writer.write(&cancel(id)).await.is_err() {
                return;
            }
        }
        let frame = tokio::select! {
            biased;
            () = closed.cancelled() => None,
            // Dropping the writer closes the module's input: its cue to re-attach.
            () = release.cancelled() => None,
            () = cancels.wake.notified() => continue,
            frame = rx.recv() => frame,
        };
        let Some(frame) = frame else { break };
        // Under load more frames are queued behind this one: they go out in
        // the same write, up to a batch (issue 10).
        let (mut next, mut last) = (Some(frame), false);
        while let Some(frame) = next.take() {
            let cancelled = match &frame.kind {
                Some(Kind::Request(request)) => {
                    sent = request.id;
                    // Cancelled while queued: the module need never hear of it.
                    cancels.take(request.id)
                }
                _ => false,
            };
            if !cancelled {
                last = matches!(frame.kind, Some(Kind::Shutdown(_)));
                batch.push(frame);
            }
            if !last && batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let failed = !batch.is_empty() && writer.write_batch(&batch).await.is_err();
        batch.clear();
        if failed || last {
            // The module's stdin closes when `writer` drops: after Shutdown,
            // that is the JSON-RPC contract's end of input.
            break;
        }
    }
}

/// Reads the module's frames until its link ends, then reaps it (or, if it
/// is not our child, waits for its node lock) and fails whatever was still
/// in flight.
async fn drive(instance: Arc<Instance>, mut reader: LinkReader, process: Process, log: PathBuf) {
    enum End {
        Eof,
        Broken(String),
        Killed,
        Released,
    }
    let end = loop {
        tokio::select! {
            read = reader.read() => match read {
                Ok(Some(frame)) => if let Err(why) = instance.dispatch(frame) { break End::Broken(why) },
                Ok(None) => break End::Eof,
                Err(e) => break End::Broken(e.to_string()),
            },
            () = instance.kill.cancelled() => break End::Killed,
            () = instance.release.cancelled() => break End::Released,
        }
    };
    let name = &instance.name;
    let stopping = instance.stopping.load(Ordering::SeqCst);
    let broken = |why: &str| {
        format!(
            "module {name} broke its link ({why}); its stdout is for {} only, logs go to stderr",
            match instance.protocol {
                Protocol::Frames => "frames",
                Protocol::JsonRpc => "JSON-RPC messages",
            }
        )
    };
    let (mut reason, clean) = match process {
        Process::Child(child) if matches!(end, End::Released) => {
            // Not reaped here: it lives on, and outlives this router.
            drop(child);
            (format!("module {name} was handed over"), true)
        }
        Process::Child(mut child) => {
            if !matches!(end, End::Eof) {
                let _ = child.start_kill();
            }
            let status = match tokio::time::timeout(EXIT_WAIT, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let reason = match (&end, stopping) {
                (End::Broken(why), _) => broken(why),
                (_, true) => format!("module {name} was stopped by the router"),
                _ => format!("module {name} {}", describe(&status)),
            };
            (reason, matches!(end, End::Eof) && status.as_ref().is_ok_and(ExitStatus::success))
        }
        Process::Attached { pid, node } => {
            if matches!(end, End::Killed | End::Broken(_)) {
                kill_attached(pid, node.as_ref());
            }
            let reason = match (&end, stopping) {
                (End::Broken(why), _) => broken(why),
                (End::Released, _) => format!("module {name} was handed over"),
                (_, true) => format!("module {name} was stopped by the router"),
                _ => format!("module {name} (attached, pid {}) disconnected", pid.unwrap_or(0)),
            };
            // Not our child: its end is not a crash to restart from.
            (reason, true)
        }
    };
    let tail = spawn::log_tail(&log, 3);
    if !tail.is_empty() && !stopping && !clean {
        reason += &format!("; last stderr: {tail}");
    }
    tracing::info!("{reason}");
    instance.close(Exit { reason, crashed: !stopping && !clean });
}

/// Kills an attached module's process, but only while its node lock is held:
/// a free lock means the process is gone and the pid may be someone else's.
fn kill_attached(pid: Option<u32>, node: Option<&(MeshDir, Uuid)>) {
    let (Some(pid), Some((mesh, id))) = (pid, node) else { return };
    if mesh.is_live(id).unwrap_or(false)
        && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => {
            #[cfg(unix)]
            if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(s) {
                return format!("was killed by signal {signal}");
            }
            match s.code() {
                Some(code) => format!("exited with status {code}"),
                None => "exited".into(),
            }
        }
        Err(e) => format!("could not be waited for ({e})"),
    }
}
