//! One link's session with a router: the handshake, one task per request,
//! `Cancel`, `Shutdown` with its grace, and the one writer of frames.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Arc, Mutex},
    time::Duration,
};

use polis_mesh::{
    codec::{FrameError, FrameReader, FrameWriter},
    pb::{Frame, Hello, Payload, Request, frame::Kind},
};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    time::Instant,
};
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};

use crate::{
    Handler, LinkError, Module, OUTBOX,
    call::{Call, Items, ModuleError, final_reply},
    calls_out::Outgoing,
};

/// How one link ended.
pub(crate) enum End {
    /// The router said `Shutdown`, with this much grace.
    Shutdown(Duration),
    /// The router went away: end of input, or output refused.
    Lost,
    /// A malformed frame; the link is unusable.
    Failed(FrameError),
}

/// What the router's `Welcome` gave this link.
pub(crate) struct Welcomed {
    /// The id of the router, for the node record and for re-attaching.
    pub(crate) router_id: String,
    /// The router's epoch, its fencing token: a later router in office
    /// has a greater one.
    pub(crate) epoch: u64,
    /// The manifest's `[config]` table; `null` when there is none.
    pub(crate) config: Value,
}

/// Sends `Hello` and waits for the router's `Welcome`.
pub(crate) async fn handshake<R, W>(
    module: &Module,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    node_id: &str,
    resumed: bool,
) -> Result<Welcomed, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = Hello {
        name: module.name.clone(),
        version: module.version.clone(),
        protocol_version: polis_mesh::PROTOCOL_VERSION,
        node_id: node_id.to_owned(),
        resumed,
        pid: std::process::id(),
        methods: module.declaration(),
        declared: true,
    };
    writer.write_frame(&Frame { kind: Some(Kind::Hello(hello)) }).await?;
    let welcome = match reader.read_frame().await? {
        Some(Frame { kind: Some(Kind::Welcome(welcome)) }) => welcome,
        Some(other) => {
            return Err(LinkError::Handshake(format!("expected Welcome, got {}", other.kind_name())));
        }
        None => return Err(LinkError::Handshake("the router closed the link before Welcome".into())),
    };
    let config = if welcome.config_json.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&welcome.config_json)
            .map_err(|err| LinkError::Handshake(format!("the config in Welcome is not JSON: {err}")))?
    };
    Ok(Welcomed { router_id: welcome.router_id, epoch: welcome.epoch, config })
}

/// The state of one link after the handshake.
pub(crate) struct Session {
    module: Module,
    config: Arc<Value>,
    /// The epoch of this link's router, from `Welcome`.
    epoch: u64,
    /// Frames to the router, written in order by the writer task.
    tx: mpsc::Sender<Frame>,
    writer: AbortOnDropHandle<()>,
    /// Cancelled once the queued frames are written, to stop the writer.
    writer_done: CancellationToken,
    /// Cancelled by the writer when the router stops taking frames.
    lost: CancellationToken,
    /// Parent of every request's token: cancelling it drops all handlers.
    stop: CancellationToken,
    requests: TaskTracker,
    /// Tokens of the requests in flight, by id; never held across `.await`.
    in_flight: Arc<Mutex<HashMap<u64, CancellationToken>>>,
    /// The module's own calls, whose replies come back on this link.
    outgoing: Arc<Outgoing>,
}

impl Session {
    pub(crate) fn start<W>(module: Module, writer: FrameWriter<W>, config: Arc<Value>, epoch: u64) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let writer_done = CancellationToken::new();
        let lost = CancellationToken::new();
        let task = write_frames(writer, rx, writer_done.clone(), lost.clone(), module.name.clone());
        module.events.attach(&tx);
        Self {
            module,
            config,
            epoch,
            writer: AbortOnDropHandle::new(tokio::spawn(task)),
            writer_done,
            lost,
            stop: CancellationToken::new(),
            requests: TaskTracker::new(),
            in_flight: Arc::default(),
            outgoing: Outgoing::new(tx.clone()),
            tx,
        }
    }

    /// Takes requests until the router says `Shutdown` or goes away.
    pub(crate) async fn serve<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) -> End {
        loop {
            let frame = tokio::select! {
                frame = reader.read_frame() => frame,
                () = self.lost.cancelled() => return End::Lost,
            };
            match frame {
                Ok(Some(Frame { kind: Some(Kind::Request(request)) })) => self.start_request(request),
                Ok(Some(Frame { kind: Some(Kind::Cancel(cancel)) })) => self.cancel(cancel.id),
                // The answer to one of the module's own calls.
                Ok(Some(Frame { kind: Some(Kind::Reply(reply)) })) => self.outgoing.dispatch(reply),
                Ok(Some(Frame { kind: Some(Kind::Shutdown(shutdown)) })) => {
                    return End::Shutdown(Duration::from_millis(shutdown.grace_ms.into()));
                }
                Ok(Some(Frame {
                    kind: Some(kind @ (Kind::Event(_) | Kind::Lagged(_) | Kind::Subscribed(_))),
                })) => {
                    self.module.events.deliver(kind);
                }
                Ok(Some(other)) => self.ignore(&other),
                Ok(None) => return End::Lost,
                Err(err) => return End::Failed(err),
            }
        }
    }

    /// After `Shutdown`: lets the requests in flight finish within `grace`,
    /// refusing new ones, then drops whatever is left.
    pub(crate) async fn drain<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>, grace: Duration) {
        self.requests.close();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut reading = true;
        loop {
            tokio::select! {
                () = self.requests.wait() => return,
                () = &mut deadline => return,
                () = self.lost.cancelled() => return,
                frame = reader.read_frame(), if reading => match frame {
                    Ok(Some(Frame { kind: Some(Kind::Request(request)) })) => {
                        let refusal = ModuleError::unavailable(format!("module {} is shutting down", self.module.name));
                        let _ = self.tx.send(final_reply(request.id, Err(refusal))).await;
                    }
                    Ok(Some(Frame { kind: Some(Kind::Cancel(cancel)) })) => self.cancel(cancel.id),
                    Ok(Some(Frame { kind: Some(Kind::Reply(reply)) })) => self.outgoing.dispatch(reply),
                    Ok(Some(Frame { kind: Some(Kind::Shutdown(_)) })) => {}
                    Ok(Some(Frame {
                        kind: Some(kind @ (Kind::Event(_) | Kind::Lagged(_) | Kind::Subscribed(_))),
                    })) => self.module.events.deliver(kind),
                    Ok(Some(other)) => self.ignore(&other),
                    // The router may close our input after Shutdown; the grace still holds.
                    Ok(None) | Err(_) => reading = false,
                },
            }
        }
    }

    /// Drops every handler still running, writes what is queued and stops
    /// the writer.
    pub(crate) async fn close(self) {
        self.outgoing.close();
        self.stop.cancel();
        self.requests.close();
        self.requests.wait().await;
        self.writer_done.cancel();
        drop(self.tx);
        let _ = self.writer.await;
    }

    fn start_request(&self, request: Request) {
        let Request { id, method, payload, caller, timeout_ms, .. } = request;
        let token = self.stop.child_token();
        let registered = {
            let mut in_flight = self.in_flight.lock().expect("in-flight map poisoned");
            match in_flight.entry(id) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert(token.clone());
                    true
                }
            }
        };
        let handler = if !registered {
            Err(ModuleError::invalid_argument(format!("request id {id} is already in flight")))
        } else {
            self.module.methods.get(&method).cloned().ok_or_else(|| {
                ModuleError::not_found(format!("module {} has no method \"{method}\"", self.module.name))
            })
        };
        let call = Call {
            id,
            method,
            params: Value::Null,
            caller,
            config: self.config.clone(),
            epoch: self.epoch,
            deadline: (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms)),
            cancel: token.clone(),
            outgoing: self.outgoing.clone(),
            events: self.module.events.clone(),
        };
        let items = Items { id, tx: self.tx.clone() };
        let tx = self.tx.clone();
        let in_flight = self.in_flight.clone();
        self.requests.spawn(async move {
            let result = tokio::select! {
                biased;
                // Whoever cancelled the token also took it out of the map.
                () = token.cancelled() => return,
                result = invoke(handler, payload, call, items) => result,
            };
            if registered {
                in_flight.lock().expect("in-flight map poisoned").remove(&id);
            }
            // A closed link means nobody is waiting for the answer.
            let _ = tx.send(final_reply(id, result)).await;
        });
    }

    fn cancel(&self, id: u64) {
        if let Some(token) = self.in_flight.lock().expect("in-flight map poisoned").remove(&id) {
            token.cancel();
        }
    }

    fn ignore(&self, frame: &Frame) {
        eprintln!(
            "{}: warning: ignoring an unexpected {} frame from the router",
            self.module.name,
            frame.kind_name()
        );
    }
}

/// Runs one handler to its result, in a task of its own so that a panic
/// becomes an `INTERNAL` error instead of a silent end.
async fn invoke(
    handler: Result<Handler, ModuleError>,
    payload: Option<Payload>,
    mut call: Call,
    items: Items,
) -> Result<Option<Payload>, ModuleError> {
    let handler = handler?;
    call.params = params(payload)?;
    let method = call.method.clone();
    // Owned here: dropping this future (on Cancel) aborts the handler.
    let task = AbortOnDropHandle::new(tokio::spawn(handler(call, items)));
    match task.await {
        Ok(result) => result,
        Err(err) if err.is_panic() => {
            let panic = err.into_panic();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ModuleError::internal(format!("method \"{method}\" panicked: {what}")))
        }
        Err(err) => Err(ModuleError::internal(format!("method \"{method}\" stopped: {err}"))),
    }
}

/// The JSON parameters of a request; `null` when there are none.
fn params(payload: Option<Payload>) -> Result<Value, ModuleError> {
    let Some(payload) = payload else { return Ok(Value::Null) };
    if !payload.content_type.is_empty() && payload.content_type != polis_mesh::JSON {
        return Err(ModuleError::invalid_argument(format!(
            "unsupported content type \"{}\": send {}",
            payload.content_type,
            polis_mesh::JSON
        )));
    }
    if payload.data.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&payload.data)
        .map_err(|err| ModuleError::invalid_argument(format!("the parameters are not valid JSON: {err}")))
}

/// The one writer of the link: frames go out whole and in order, each
/// flushed at once.
async fn write_frames<W>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<Frame>,
    done: CancellationToken,
    lost: CancellationToken,
    name: String,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::select! {
            biased;
            frame = rx.recv() => frame,
            () = done.cancelled() => rx.try_recv().ok(),
        };
        let Some(frame) = frame else { break };
        if let Err(err) = writer.write_frame(&frame).await {
            // A router that hung up is not worth a message.
            if !matches!(&err, FrameError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe) {
                eprintln!("{name}: cannot write to the router: {err}");
            }
            lost.cancel();
            return;
        }
    }
    let _ = writer.shutdown().await;
}
