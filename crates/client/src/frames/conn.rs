//! One frame connection to the router: the preamble exchange, a writer task
//! that batches every queued frame into one write, a reader task that
//! routes replies to their calls by id, and the table of calls in flight.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use polis_mesh::{
    codec::{FrameCodec, FrameError, FrameReader},
    pb::{self, frame::Kind, reply::Outcome},
    preamble,
    transport::LocalConn,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::{codec::Encoder, sync::CancellationToken};
use tonic::{Code, Status};

use crate::ConnectError;

/// The largest frame this client reads or writes: the router's default
/// payload limit, plus room for the frame around the payload.
pub(crate) const MAX_FRAME_LEN: usize = polis_mesh::codec::DEFAULT_MAX_FRAME_LEN + 64 * 1024;

/// How long the router has to answer the preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the router says about the connection itself, for a session.
#[derive(Debug)]
pub(crate) enum Control {
    Welcome(pb::SessionWelcome),
    Leaving(pb::RouterLeaving),
}

/// The session's half of a connection: its control frames, in order. It
/// ends when the connection does.
pub(crate) type Controls = mpsc::UnboundedReceiver<Control>;

/// A frame connection to the router, shared by every call on it (a clone is
/// another handle). Its tasks stop when the last handle, or the last call
/// using it, is dropped.
#[derive(Clone)]
pub(crate) struct FrameConn {
    table: Arc<Table>,
    // Unbounded, so that a cancel sent from `Drop` is never lost and keeps
    // its place after its request; what waits here is what callers hold anyway.
    out: mpsc::UnboundedSender<Out>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for FrameConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameConn")
            .field("path", &self.table.path)
            .field("closed", &self.table.gone.is_cancelled())
            .finish_non_exhaustive()
    }
}

enum Out {
    Frame(pb::Frame),
    /// Flush what is queued, then shut the write side down.
    Close,
}

struct Tasks {
    _reader: AbortOnDrop,
    // std Mutex: taken once by `shutdown`, never held across an await.
    writer: Mutex<Option<AbortOnDrop>>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The calls in flight, and why the connection ended once it has.
struct Table {
    // std Mutex: held to insert, take or drain, never across an await.
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Cancelled when the connection has ended, for either task.
    gone: CancellationToken,
    path: PathBuf,
    /// Where Event, Lagged and Subscribed frames go (`crate::events`).
    // std Mutex: set on attach, read per frame, never held across an await.
    events: Mutex<Option<EventSink>>,
}

/// Takes the event frames of a connection.
pub(crate) type EventSink = Arc<dyn Fn(Kind) + Send + Sync>;

#[derive(Default)]
struct State {
    calls: HashMap<u64, Waiter>,
    /// Set once: the code and message every later call fails with.
    closed: Option<(Code, String)>,
    /// The router said it is leaving: it runs no request it reads from now
    /// on, and before it closes it finishes every call it accepted.
    leaving: bool,
}

enum Waiter {
    Unary(oneshot::Sender<Result<Bytes, Status>>),
    Stream(mpsc::UnboundedSender<Result<Bytes, Status>>),
}

impl Waiter {
    fn fail(self, status: Status) {
        match self {
            Waiter::Unary(tx) => {
                let _ = tx.send(Err(status));
            }
            Waiter::Stream(tx) => {
                let _ = tx.send(Err(status));
            }
        }
    }
}

/// A connection ended under a call: what a caller sees, and retries if idempotent.
pub(crate) fn went_away(reason: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the router went away during the call ({reason})"))
}

/// Why a peer is not a router when it closed before its preamble: a
/// router that stopped accepting does that to its listen backlog.
pub(crate) const HUNG_UP: &str = "it hung up without answering the preamble";

/// The metadata key that marks a call the router never ran.
const NOT_RUN: &str = "polis-not-run";

/// `UNAVAILABLE` for a call that no router ran: it never left this process,
/// or its router was leaving and closed without reading it. Retrying it is
/// safe for any call, idempotent or not.
pub(crate) fn not_run(reason: impl std::fmt::Display) -> Status {
    marked_not_run(Status::unavailable(format!("no router ran the call ({reason})")))
}

fn marked_not_run(mut status: Status) -> Status {
    status.metadata_mut().insert(NOT_RUN, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether `status` says that no router ran the call.
pub(crate) fn was_not_run(status: &Status) -> bool {
    status.metadata().contains_key(NOT_RUN)
}

impl Table {
    fn register(&self, waiter: Waiter) -> Result<u64, Status> {
        let mut state = self.state.lock().expect("call table");
        if let Some((code, message)) = &state.closed {
            // Why the connection ended, and that this call never left.
            return Err(marked_not_run(Status::new(*code, message.clone())));
        }
        if state.leaving {
            return Err(not_run("the router is leaving office"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.calls.insert(id, waiter);
        Ok(id)
    }

    fn take(&self, id: u64) -> Option<Waiter> {
        self.state.lock().expect("call table").calls.remove(&id)
    }

    fn closed(&self) -> Status {
        match &self.state.lock().expect("call table").closed {
            Some((code, message)) => Status::new(*code, message.clone()),
            None => went_away("the connection closed"),
        }
    }

    /// Ends the connection for `status` (the first reason wins) and fails
    /// every call in flight with it.
    fn close(&self, status: &Status) {
        let ((code, message), calls, leaving) = {
            let mut state = self.state.lock().expect("call table");
            let closed =
                state.closed.get_or_insert_with(|| (status.code(), status.message().to_owned())).clone();
            (closed, std::mem::take(&mut state.calls), state.leaving)
        };
        for waiter in calls.into_values() {
            // A leaving router answers every call it accepted before it
            // closes: what is left unanswered it never read.
            waiter.fail(if leaving {
                not_run("the router left office")
            } else {
                Status::new(code, message.clone())
            });
        }
        self.gone.cancel();
    }

    /// The router said it is leaving.
    fn leave(&self) {
        self.state.lock().expect("call table").leaving = true;
    }

    fn is_leaving(&self) -> bool {
        self.state.lock().expect("call table").leaving
    }

    fn reply(&self, reply: pb::Reply) {
        let outcome = match reply.outcome {
            Some(Outcome::Payload(p)) => Some(Ok(p.data)),
            Some(Outcome::Error(e)) => Some(Err(Status::new(Code::from(e.code), e.message))),
            None => None,
        };
        let waiter = {
            let mut state = self.state.lock().expect("call table");
            match state.calls.get(&reply.id) {
                // A reply racing its cancel: nobody waits for it any more.
                None => return,
                Some(Waiter::Stream(tx)) if reply.more => {
                    let _ = tx.send(outcome.unwrap_or_else(|| Ok(Bytes::new())));
                    return;
                }
                Some(_) => state.calls.remove(&reply.id),
            }
        };
        match waiter {
            // A stream's final reply: an error, a last item, or the bare end.
            Some(Waiter::Stream(tx)) => {
                if let Some(last) = outcome {
                    let _ = tx.send(last);
                }
            }
            Some(Waiter::Unary(tx)) => {
                let _ = tx.send(outcome.unwrap_or_else(|| Ok(Bytes::new())));
            }
            None => {}
        }
    }
}

impl FrameConn {
    /// Connects to the router's socket at `path` and exchanges preambles.
    pub(crate) async fn open(path: &Path) -> Result<(FrameConn, Controls), ConnectError> {
        let conn = polis_mesh::transport::connect(path)
            .await
            .map_err(|source| ConnectError::Socket { path: path.to_owned(), source })?;
        Self::over(conn, path).await
    }

    /// Exchanges preambles over `io`, then starts the connection's tasks.
    async fn over(mut io: LocalConn, path: &Path) -> Result<(FrameConn, Controls), ConnectError> {
        let not_a_router = |reason: String| ConnectError::NotARouter { path: path.to_owned(), reason };
        let exchange = async {
            io.write_all(&preamble::encode(preamble::VERSION)).await?;
            io.flush().await?;
            let mut theirs = [0; preamble::LEN];
            io.read_exact(&mut theirs).await?;
            Ok::<_, std::io::Error>(theirs)
        };
        let theirs = match tokio::time::timeout(PREAMBLE_TIMEOUT, exchange).await {
            Err(_) => {
                return Err(not_a_router(format!("no answer to the preamble within {PREAMBLE_TIMEOUT:?}")));
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(not_a_router(HUNG_UP.into()));
            }
            Ok(Err(source)) => return Err(ConnectError::Socket { path: path.to_owned(), source }),
            Ok(Ok(theirs)) => theirs,
        };
        match preamble::decode(&theirs) {
            None => return Err(not_a_router(format!("it answered {theirs:?}"))),
            // The router answers with the version it speaks, and serves it.
            Some(version) if version != preamble::VERSION => {
                tracing::debug!(
                    "the router speaks frame-session version {version}, this client {}",
                    preamble::VERSION
                );
            }
            Some(_) => {}
        }

        let table = Arc::new(Table {
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            gone: CancellationToken::new(),
            path: path.to_owned(),
            events: Mutex::new(None),
        });
        let (read, write) = tokio::io::split(io);
        let (out, outbox) = mpsc::unbounded_channel();
        let (control, controls) = mpsc::unbounded_channel();
        let reader = FrameReader::new(read, FrameCodec::new(MAX_FRAME_LEN));
        let tasks = Tasks {
            _reader: AbortOnDrop(tokio::spawn(read_loop(reader, table.clone(), control))),
            writer: Mutex::new(Some(AbortOnDrop(tokio::spawn(write_loop(write, outbox, table.clone()))))),
        };
        Ok((FrameConn { table, out, tasks: Arc::new(tasks) }, controls))
    }

    /// Sends the event frames that arrive on this connection to `sink`.
    pub(crate) fn on_events(&self, sink: EventSink) {
        *self.table.events.lock().expect("events slot") = Some(sink);
    }

    /// Whether the connection has ended (then every call on it fails).
    pub(crate) fn is_closed(&self) -> bool {
        self.table.gone.is_cancelled()
    }

    /// Whether new calls can go over it: it lives, and its router is not leaving.
    pub(crate) fn is_usable(&self) -> bool {
        !self.is_closed() && !self.table.is_leaving()
    }

    /// Why the connection ended, as calls see it.
    pub(crate) fn closed_status(&self) -> Status {
        self.table.closed()
    }

    /// Queues one frame.
    pub(crate) fn send(&self, kind: Kind) -> Result<(), Status> {
        self.out.send(Out::Frame(pb::Frame { kind: Some(kind) })).map_err(|_| self.table.closed())
    }

    /// Flushes what is queued and stops writing, then waits for the router
    /// to close the connection (as it does after `Goodbye`), at most
    /// `within` in all; the caller then drops it. Meanwhile the reader
    /// drains what the router still sends: a socket closed with unread bytes
    /// in it resets the connection, and the router could lose the last
    /// frames. (Shutting down only the write side is no help: on a Unix
    /// local socket `interprocess` makes it a no-op.)
    pub(crate) async fn shutdown(&self, within: Duration) {
        let writer = self.tasks.writer.lock().expect("writer slot").take();
        let Some(mut writer) = writer else { return };
        if self.out.send(Out::Close).is_ok() {
            let _ = tokio::time::timeout(within, async {
                let _ = (&mut writer.0).await;
                self.table.gone.cancelled().await;
            })
            .await;
        }
    }

    /// A unary call: one request, one reply. Dropping the future cancels it.
    pub(crate) async fn unary(&self, request: pb::Request) -> Result<Bytes, Status> {
        let (tx, rx) = oneshot::channel();
        let _call = self.start(request, Waiter::Unary(tx))?;
        rx.await.unwrap_or_else(|_| Err(self.table.closed()))
    }

    /// A streaming call; its items come through the returned stream.
    pub(crate) fn stream(&self, request: pb::Request) -> Result<FrameStream, Status> {
        let (tx, items) = mpsc::unbounded_channel();
        let call = self.start(request, Waiter::Stream(tx))?;
        Ok(FrameStream { items, _call: call })
    }

    fn start(&self, mut request: pb::Request, waiter: Waiter) -> Result<InFlight, Status> {
        let id = self.table.register(waiter)?;
        request.id = id;
        let call = InFlight { id, conn: self.clone() };
        self.send(Kind::Request(request))?;
        Ok(call)
    }
}

/// A call in flight; dropped before its final reply, it sends `Cancel`.
/// It holds the connection, so that a call outlives a swapped session.
struct InFlight {
    id: u64,
    conn: FrameConn,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Still in the table: no final reply came and the connection lives.
        if self.conn.table.take(self.id).is_some() {
            let _ = self.conn.send(Kind::Cancel(pb::Cancel { id: self.id }));
        }
    }
}

/// The items of a streaming call over frames.
pub(crate) struct FrameStream {
    items: mpsc::UnboundedReceiver<Result<Bytes, Status>>,
    _call: InFlight,
}

impl std::fmt::Debug for FrameStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStream").field("id", &self._call.id).finish_non_exhaustive()
    }
}

impl FrameStream {
    /// The next item; `None` after the end (or after an error).
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        self.items.recv().await
    }
}

async fn read_loop(
    mut reader: FrameReader<ReadHalf<LocalConn>>,
    table: Arc<Table>,
    control: mpsc::UnboundedSender<Control>,
) {
    let reason = loop {
        let frame = tokio::select! {
            frame = reader.read_frame() => frame,
            () = table.gone.cancelled() => return,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break went_away("the router closed the connection"),
            Err(FrameError::Io(e)) => break went_away(e),
            Err(e) => break Status::internal(format!("the router sent a bad frame: {e}")),
        };
        let name = frame.kind_name();
        match frame.kind {
            Some(Kind::Reply(reply)) => table.reply(reply),
            Some(Kind::SessionWelcome(w)) => {
                let _ = control.send(Control::Welcome(w));
            }
            Some(Kind::Leaving(l)) => {
                table.leave();
                let _ = control.send(Control::Leaving(l));
            }
            // The router's echo of a keepalive.
            Some(Kind::Keepalive(_)) => {}
            Some(Kind::Error(e)) => break Status::new(Code::from(e.code), e.message),
            Some(kind @ (Kind::Event(_) | Kind::Lagged(_) | Kind::Subscribed(_))) => {
                let sink = table.events.lock().expect("events slot").clone();
                if let Some(sink) = sink {
                    sink(kind);
                }
            }
            _ => tracing::debug!("ignoring a {name} frame from the router"),
        }
    };
    tracing::debug!("frame connection ended: {}", reason.message());
    table.close(&reason);
}

/// How long a failed write waits for the reader to read what the router
/// sent before it closed.
const READ_AFTER_WRITE_ERROR: Duration = Duration::from_secs(1);

async fn write_loop(
    mut io: WriteHalf<LocalConn>,
    mut outbox: mpsc::UnboundedReceiver<Out>,
    table: Arc<Table>,
) {
    let mut codec = FrameCodec::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            out = outbox.recv() => out,
            () = table.gone.cancelled() => return,
        };
        // Every handle is gone: end cleanly.
        let Some(first) = first else { break };
        buf.clear();
        let mut close = encode(&mut codec, &mut buf, first, &table);
        while !close {
            match outbox.try_recv() {
                Ok(out) => close = encode(&mut codec, &mut buf, out, &table),
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            let written = async {
                io.write_all(&buf).await?;
                io.flush().await
            };
            if let Err(e) = written.await {
                // The router closed its end. It may have said why first (a
                // `Leaving`, after which an unanswered call counts as not
                // run): let the reader get to it before judging the calls.
                let _ = tokio::time::timeout(READ_AFTER_WRITE_ERROR, table.gone.cancelled()).await;
                table.close(&went_away(e));
                return;
            }
        }
        if close {
            break;
        }
    }
    let _ = io.shutdown().await;
}

/// Appends `out` to the batch; `true` when it asks to close.
fn encode(codec: &mut FrameCodec, buf: &mut BytesMut, out: Out, table: &Table) -> bool {
    let frame = match out {
        Out::Close => return true,
        Out::Frame(frame) => frame,
    };
    // The codec checks the size before it writes anything, so the batch
    // stays whole; only the call that is too large fails.
    if let Err(e) = codec.encode(&frame, buf) {
        match frame.kind {
            Some(Kind::Request(request)) => {
                if let Some(waiter) = table.take(request.id) {
                    waiter.fail(Status::resource_exhausted(format!("the request is too large to send: {e}")));
                }
            }
            _ => tracing::warn!("cannot send a {} frame: {e}", frame.kind_name()),
        }
    }
    false
}
