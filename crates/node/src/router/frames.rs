//! A frontend's frame session on `router.sock` (see `frame.proto`): the
//! router as a frame switch. A request goes to its module's link and its
//! replies come back as they arrive, with no decode of the payload; many
//! calls are in flight on one connection, matched by id. A connection that
//! opens with `SessionHello` is the frontend's session; one that does not
//! carries one-shot calls, each a lease on the router while in flight.

use std::{collections::HashMap, sync::Arc, time::Duration};

use polis_mesh::{
    codec::{FrameCodec, FrameError, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind, reply::Outcome},
    preamble,
    transport::LocalConn,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::mpsc,
    task::{AbortHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    calls::{self, CallSpec},
    sessions::{Registered, SessionHub},
};
use crate::{
    bus::LinkEvents,
    host::{Host, Item},
};

/// Calls in flight on one connection at most; more are refused with
/// `RESOURCE_EXHAUSTED`.
const MAX_IN_FLIGHT: usize = 4096;

/// Frames waiting for the connection's writer. A call whose reply finds it
/// full waits, which slows this connection alone.
const OUTBOX: usize = 256;

/// Frames the writer takes from the outbox for one write.
const BATCH: usize = 64;

/// A client that takes none of its replies for this long is not reading:
/// it is disconnected, so that it cannot hold the router's memory.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long a refused connection's input is drained before it closes.
const LINGER: Duration = Duration::from_secs(1);

/// What every frame session shares: the modules, the sessions, the owner.
pub(crate) struct FrameDoor {
    pub(crate) host: Arc<Host>,
    pub(crate) hub: SessionHub,
    /// The only uid served.
    pub(crate) uid: u32,
}

/// How a connection ended.
enum End {
    /// Quietly, for this reason.
    Closed(&'static str),
    /// The client broke the protocol, or may not be served: it is told why.
    Refused(Status),
}

impl FrameDoor {
    /// Serves one connection whose preamble announced `version`, to its end.
    pub(crate) async fn serve(self: Arc<Self>, conn: LocalConn, version: u16) {
        let peer = conn.peer();
        let (read, mut write) = tokio::io::split(conn);
        if write.write_all(&preamble::encode(preamble::VERSION)).await.is_err() {
            return;
        }
        // A frontend's frame carries a payload up to the module limit, plus
        // the request's names and ids.
        let codec = FrameCodec::new(self.host.config().max_frame_len.saturating_add(64 * 1024));
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let stalled = CancellationToken::new();
        let writer = tokio::spawn(write_loop(FrameWriter::new(write, codec), rx, stalled.clone()));
        let writer = tokio_util::task::AbortOnDropHandle::new(writer);

        let mut reader = FrameReader::new(read, codec);
        let end = if peer.uid != Some(self.uid) {
            End::Refused(Status::permission_denied(format!(
                "this router serves uid {} only; refused a client running as uid {}",
                self.uid,
                peer.uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
            )))
        } else if version != preamble::VERSION {
            let upgrade = if version > preamble::VERSION {
                format!("upgrade the router (polis {})", super::versions::ROUTER_VERSION)
            } else {
                "upgrade the client".to_owned()
            };
            End::Refused(Status::failed_precondition(format!(
                "the client speaks frame-session version {version}; this router speaks {}: {upgrade}",
                preamble::VERSION
            )))
        } else {
            let mut connection = Connection {
                door: self.clone(),
                outbox: outbox.clone(),
                calls: JoinSet::new(),
                in_flight: HashMap::new(),
                session: None,
                leaving: false,
                events: LinkEvents::new(self.host.bus().clone(), outbox.clone(), "frontend"),
            };
            let end = connection.run(&mut reader, &stalled).await;
            // Calls still running are dropped, which cancels them in their
            // modules; their replies are no one's any more.
            connection.calls.shutdown().await;
            connection.events.close();
            if let Some(session) = connection.session.take() {
                session.close(match &end {
                    End::Closed(why) => why,
                    End::Refused(_) => "the frontend broke the protocol",
                });
            }
            end
        };
        if let End::Refused(status) = &end {
            tracing::warn!("frame session refused: {}", status.message());
            let error = pb::Error { code: status.code() as i32, message: status.message().to_owned() };
            let _ = outbox.send(Frame { kind: Some(Kind::Error(error)) }).await;
        }
        drop(outbox);
        // The writer sends what is queued, then closes; a stalled one gives up by itself.
        let _ = writer.await;
        if matches!(end, End::Refused(_)) {
            // Closing with the client's bytes unread would reset the
            // connection, and the client would never read why: take what
            // it is still sending for a moment first.
            let _ = tokio::time::timeout(LINGER, drain(reader.into_inner())).await;
        }
    }
}

/// One frame session's state, owned by its connection's task.
struct Connection {
    door: Arc<FrameDoor>,
    outbox: mpsc::Sender<Frame>,
    /// Each call's task, which sends its replies and returns its id.
    calls: JoinSet<u64>,
    in_flight: HashMap<u64, AbortHandle>,
    session: Option<Registered>,
    /// The router has said it is leaving: new requests are refused.
    leaving: bool,
    /// The frontend's publishes and subscriptions; they end with the connection.
    events: LinkEvents,
}

impl Connection {
    async fn run(
        &mut self,
        reader: &mut FrameReader<ReadHalf<LocalConn>>,
        stalled: &CancellationToken,
    ) -> End {
        let quiet = self.door.hub.config.keepalive_timeout;
        let mut heard = Instant::now();
        loop {
            // A session keeps alive; a connection of one-shot calls may be
            // silent only while its calls run.
            let watch_silence = self.session.is_some() || self.calls.is_empty();
            tokio::select! {
                frame = reader.read_frame() => match frame {
                    Ok(Some(frame)) => {
                        heard = Instant::now();
                        if let Some(end) = self.on_frame(frame).await {
                            return end;
                        }
                    }
                    Ok(None) => return End::Closed("the frontend went away"),
                    Err(FrameError::Io(_)) | Err(FrameError::Truncated { .. }) => {
                        return End::Closed("the frontend went away");
                    }
                    Err(e @ FrameError::TooLarge { .. }) => {
                        return End::Refused(Status::resource_exhausted(e.to_string()));
                    }
                    Err(e) => return End::Refused(Status::invalid_argument(e.to_string())),
                },
                Some(done) = self.calls.join_next_with_id(), if !self.calls.is_empty() => {
                    let task = match &done { Ok((task, _)) => *task, Err(e) => e.id() };
                    self.in_flight.retain(|_, handle| handle.id() != task);
                    if self.leaving && self.calls.is_empty() {
                        return End::Closed("the router left office");
                    }
                }
                () = tokio::time::sleep_until(heard + quiet), if watch_silence => {
                    return End::Closed(if self.session.is_some() {
                        "missed keepalives: the frontend is hung"
                    } else {
                        "idle"
                    });
                }
                () = self.door.hub.leaving.cancelled(), if !self.leaving => {
                    self.leaving = true;
                    let leaving = self.door.hub.leaving_notice();
                    let _ = self.outbox.send(Frame { kind: Some(Kind::Leaving(leaving)) }).await;
                    if self.calls.is_empty() {
                        return End::Closed("the router left office");
                    }
                }
                () = stalled.cancelled() => return End::Closed("the frontend stopped reading its replies"),
            }
        }
    }

    /// Acts on one frame from the client; `Some` ends the connection.
    async fn on_frame(&mut self, frame: Frame) -> Option<End> {
        match frame.kind {
            Some(Kind::Request(request)) => return self.start_call(request).await,
            Some(Kind::Cancel(cancel)) => {
                if let Some(handle) = self.in_flight.remove(&cancel.id) {
                    handle.abort();
                }
            }
            Some(Kind::Keepalive(keepalive)) => {
                let _ = self.outbox.send(Frame { kind: Some(Kind::Keepalive(keepalive)) }).await;
            }
            Some(Kind::SessionHello(hello)) => {
                if self.session.is_some() || !self.in_flight.is_empty() {
                    let why = "SessionHello comes once, before any request";
                    return Some(End::Refused(Status::invalid_argument(why)));
                }
                let protocol = match super::versions::negotiate(&hello) {
                    Ok(protocol) => protocol,
                    Err(status) => return Some(End::Refused(status)),
                };
                let welcome = self.door.hub.welcome(protocol);
                self.events.set_publisher(hello.name.clone());
                let Some(session) = self.door.hub.register(hello) else {
                    return self.refuse_as_leaving().await;
                };
                self.session = Some(session);
                let _ = self.outbox.send(Frame { kind: Some(Kind::SessionWelcome(welcome)) }).await;
            }
            Some(Kind::Goodbye(_)) => return Some(End::Closed("goodbye")),
            Some(kind @ (Kind::Publish(_) | Kind::Subscribe(_) | Kind::Unsubscribe(_))) => {
                let _ = self.events.handle(Frame { kind: Some(kind) });
            }
            _ => {
                let why = format!("a frontend does not send {} frames", frame.kind_name());
                return Some(End::Refused(Status::invalid_argument(why)));
            }
        }
        None
    }

    /// The router decided to leave before this connection heard of it:
    /// says so now, and leaves the request unanswered, which the client
    /// takes for not run (it retries it at the next router).
    async fn refuse_as_leaving(&mut self) -> Option<End> {
        if !self.leaving {
            self.leaving = true;
            let leaving = self.door.hub.leaving_notice();
            let _ = self.outbox.send(Frame { kind: Some(Kind::Leaving(leaving)) }).await;
        }
        self.calls.is_empty().then_some(End::Closed("the router left office"))
    }

    /// Starts a call's task, or refuses the request at once.
    async fn start_call(&mut self, request: pb::Request) -> Option<End> {
        if self.leaving {
            return self.refuse_as_leaving().await;
        }
        let id = request.id;
        let refusal = if self.in_flight.contains_key(&id) {
            Some(Status::invalid_argument(format!("request id {id} is already in flight on this connection")))
        } else if self.in_flight.len() >= MAX_IN_FLIGHT {
            Some(Status::resource_exhausted(format!(
                "this connection has {MAX_IN_FLIGHT} calls in flight; wait for some to finish"
            )))
        } else {
            None
        };
        if let Some(status) = refusal {
            let _ = self.outbox.send(error_reply(id, &status)).await;
            return None;
        }
        let spec = CallSpec {
            service: request.service,
            method: request.method,
            payload: request.payload.unwrap_or_default(),
            caller: request.caller,
            timeout_ms: request.timeout_ms,
            unary_only: request.unary_only,
        };
        let (host, outbox) = (self.door.host.clone(), self.outbox.clone());
        // A call in flight keeps the router, as a session does. A stream
        // with no deadline may never end: a handover does not wait for it.
        let lease = match request.stream && spec.stream_timeout().is_none() {
            true => self.door.hub.leases.take(),
            false => self.door.hub.leases.take_call(),
        };
        let Some(lease) = lease else {
            return self.refuse_as_leaving().await;
        };
        let stream = request.stream;
        let handle = self.calls.spawn(async move {
            let _lease = lease;
            if stream {
                forward_stream(&host, id, spec, &outbox).await;
            } else {
                let reply = match calls::unary(&host, spec).await {
                    Ok(payload) => reply(id, Some(Outcome::Payload(payload)), false),
                    Err(status) => error_reply(id, &status),
                };
                let _ = outbox.send(reply).await;
            }
            id
        });
        self.in_flight.insert(id, handle);
        None
    }
}

/// Forwards a streaming call's items the moment the module sends them,
/// then its end: a last item, a bare end, or an error.
async fn forward_stream(host: &Arc<Host>, id: u64, spec: CallSpec, outbox: &mpsc::Sender<Frame>) {
    let timeout = spec.stream_timeout();
    let deadline = timeout.map(|t| spec.deadline_status(t));
    let service = spec.service.clone();
    let forward = async {
        let mut call = calls::start(host, spec, timeout).await?;
        while let Some(item) = call.next().await {
            match item? {
                Item::Data(p) => {
                    if outbox.send(reply(id, Some(Outcome::Payload(p)), true)).await.is_err() {
                        return Ok(());
                    }
                }
                Item::End(p) => {
                    let _ = outbox.send(reply(id, p.map(Outcome::Payload), false)).await;
                    return Ok(());
                }
            }
        }
        Err(Status::unavailable(format!("module {service} ended the call without an answer")))
    };
    let result = match (timeout, deadline) {
        (Some(t), Some(deadline)) => tokio::time::timeout(t, forward).await.unwrap_or(Err(deadline)),
        _ => forward.await,
    };
    if let Err(status) = result {
        let _ = outbox.send(error_reply(id, &status)).await;
    }
}

/// Reads and drops whatever `read` still brings, to its end.
async fn drain(mut read: ReadHalf<LocalConn>) {
    let mut buf = [0; 8192];
    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn reply(id: u64, outcome: Option<Outcome>, more: bool) -> Frame {
    Frame { kind: Some(Kind::Reply(pb::Reply { id, outcome, more })) }
}

fn error_reply(id: u64, status: &Status) -> Frame {
    let code = if status.code() == Code::Ok { Code::Unknown } else { status.code() };
    let error = pb::Error { code: code as i32, message: status.message().to_owned() };
    reply(id, Some(Outcome::Error(error)), false)
}

/// Writes what the connection's calls send, several frames to a write when
/// several are ready; gives up on a client that takes nothing for
/// [`WRITE_STALL`].
async fn write_loop(
    mut writer: FrameWriter<WriteHalf<LocalConn>>,
    mut outbox: mpsc::Receiver<Frame>,
    stalled: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut batch, BATCH).await > 0 {
        match tokio::time::timeout(WRITE_STALL, writer.write_frames(&batch)).await {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(e)) => {
                tracing::debug!("frame session write failed: {e}");
                stalled.cancel();
                return;
            }
            Err(_) => {
                tracing::warn!("a frontend took no replies for {WRITE_STALL:?}; disconnecting it");
                stalled.cancel();
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}
