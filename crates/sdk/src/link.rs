//! The module side of a frames link: handshake, the request loop, shutdown.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Arc, Mutex},
    time::Duration,
};

use polis_discovery::{Discovery, MeshDir, NodeGuard, NodeRecord, Role};
use polis_mesh::pb::router_client::RouterClient;
use polis_mesh::{
    codec::{FrameCodec, FrameError, FrameReader, FrameWriter},
    pb::{Frame, Hello, Payload, Request, frame::Kind},
};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadHalf, WriteHalf},
    sync::mpsc,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};
use uuid::Uuid;

use super::{
    Handler, Module,
    call::{Call, Items, ModuleError, final_reply},
};

/// Frames waiting for the writer; senders wait when it is full.
const OUTBOX: usize = 64;

/// Why a module stopped serving before the router said `Shutdown`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The router did not answer `Hello` with a valid `Welcome`.
    #[error("handshake failed: {0} (modules are started by a polis router, not by hand)")]
    Handshake(String),
    /// A frame could not be read or written.
    #[error("router link failed: {0}")]
    Frame(#[from] FrameError),
}

/// What the module does when the router goes away without `Shutdown`.
enum AfterLinkLoss {
    /// Stop serving: [`Module::run`] returns.
    Exit,
    /// Serve the next router over this bridge.
    Reattach(Bridge),
}

/// How one link ended.
enum End {
    /// The router said `Shutdown`, with this much grace.
    Shutdown(Duration),
    /// The router went away: end of input, or output refused.
    Lost,
    /// A malformed frame; the link is unusable.
    Failed(FrameError),
}

/// How serving one link ended, for the loop over links.
enum LinkEnd {
    /// Done: `Shutdown` was served.
    Done,
    /// The router with this id went away.
    Lost { router_id: String },
}

/// Handshakes failing in a row on re-attach before the module gives up.
const REATTACH_TRIES: u32 = 5;

impl Module {
    /// Serves one router over `reader` (frames from the router) and
    /// `writer` (frames to it) until it says `Shutdown`. When the router goes
    /// away instead, the module waits for the next one and re-attaches to it
    /// over its socket, keeping its state, or returns if none comes.
    ///
    /// [`Module::run`] calls this with stdin and stdout; tests and other
    /// transports can pass any byte streams.
    pub async fn serve<R, W>(self, reader: R, writer: W) -> Result<(), LinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let node_id = self.node_id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        let mut record = None;
        let end = self.serve_link(reader, writer, &node_id, false, &mut record).await?;
        self.serve_after(end, &node_id, &mut record).await
    }

    /// Attaches to the mesh's router (see [`Module::attach`]) and serves it.
    pub(super) async fn serve_attached(self) -> Result<(), LinkError> {
        let node_id = self.node_id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        let mut record = None;
        // No router was ours yet: any live router will do.
        self.serve_after(LinkEnd::Lost { router_id: String::new() }, &node_id, &mut record).await
    }

    /// The loop over links: after each loss, the next router.
    async fn serve_after(
        &self,
        mut end: LinkEnd,
        node_id: &str,
        record: &mut Option<NodeGuard>,
    ) -> Result<(), LinkError> {
        let mut failures = 0;
        loop {
            let LinkEnd::Lost { router_id } = end else { return Ok(()) };
            let mut bridge = match self.after_link_loss(&router_id).await {
                AfterLinkLoss::Exit => return Ok(()),
                AfterLinkLoss::Reattach(bridge) => bridge,
            };
            let (reader, writer) = bridge.take_module_side();
            end = match self.serve_link(reader, writer, node_id, true, record).await {
                Ok(end) => {
                    failures = 0;
                    end
                }
                Err(LinkError::Handshake(why)) if failures + 1 < REATTACH_TRIES => {
                    failures += 1;
                    eprintln!("{}: re-attach failed: {why}; trying again", self.name);
                    LinkEnd::Lost { router_id }
                }
                Err(err) => return Err(err),
            };
            drop(bridge);
        }
    }

    /// Handshakes and serves one link, publishing (or updating) the node record.
    async fn serve_link<R, W>(
        &self,
        reader: R,
        writer: W,
        node_id: &str,
        resumed: bool,
        record: &mut Option<NodeGuard>,
    ) -> Result<LinkEnd, LinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let codec = FrameCodec::default();
        let mut reader = FrameReader::new(reader, codec);
        let mut writer = FrameWriter::new(writer, codec);

        let hello = Hello {
            name: self.name.clone(),
            version: self.version.clone(),
            protocol_version: polis_mesh::PROTOCOL_VERSION,
            node_id: node_id.to_owned(),
            resumed,
            pid: std::process::id(),
        };
        writer.write_frame(&Frame { kind: Some(Kind::Hello(hello)) }).await?;
        let welcome = match reader.read_frame().await? {
            Some(Frame { kind: Some(Kind::Welcome(welcome)) }) => welcome,
            Some(other) => {
                return Err(LinkError::Handshake(format!("expected Welcome, got {}", kind_name(&other))));
            }
            None => return Err(LinkError::Handshake("the router closed the link before Welcome".into())),
        };
        let config = if welcome.config_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&welcome.config_json)
                .map_err(|err| LinkError::Handshake(format!("the config in Welcome is not JSON: {err}")))?
        };
        // Kept across links: dropping it unpublishes the record.
        match record {
            Some(guard) => {
                if let Some(updated) = self.record(node_id, &welcome.router_id) {
                    let _ = guard.update(&updated);
                }
            }
            None => *record = self.publish(node_id, &welcome.router_id),
        }

        let mut session = Session::start(self.clone(), writer, Arc::new(config));
        let end = session.serve(&mut reader).await;
        let result = match end {
            End::Shutdown(grace) => {
                session.drain(&mut reader, grace).await;
                Ok(LinkEnd::Done)
            }
            End::Lost => Ok(LinkEnd::Lost { router_id: welcome.router_id }),
            End::Failed(err) => Err(err.into()),
        };
        session.close().await;
        result
    }

    /// Decides what to do when the router goes away without `Shutdown`:
    /// wait up to [`Module::reattach_wait`] for another live router in the
    /// mesh, and attach to it. Without a mesh directory, or when none comes,
    /// the module exits.
    async fn after_link_loss(&self, old_router: &str) -> AfterLinkLoss {
        let Some(dir) = &self.mesh_dir else { return AfterLinkLoss::Exit };
        let Ok(mesh) = MeshDir::open(dir) else { return AfterLinkLoss::Exit };
        let Ok(watch) = mesh.watch() else { return AfterLinkLoss::Exit };
        let deadline = Instant::now() + self.reattach_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = watch
                .wait_for(left, || Ok(mesh.current_router()?.filter(|r| r.id.to_string() != old_router)))
                .await;
            let Ok(Some(router)) = next else {
                eprintln!("{}: no router came within {:?}; exiting", self.name, self.reattach_wait);
                return AfterLinkLoss::Exit;
            };
            match Bridge::connect(&router, self.name.clone()).await {
                Ok(bridge) => return AfterLinkLoss::Reattach(bridge),
                // It may not listen yet, or already be gone: look again.
                Err(err) if Instant::now() < deadline => {
                    eprintln!("{}: cannot reach router {}: {err}", self.name, router.id);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return AfterLinkLoss::Exit,
            }
        }
    }

    /// This module's node record, attached to `router_id`.
    fn record(&self, node_id: &str, router_id: &str) -> Option<NodeRecord> {
        let id = Uuid::parse_str(node_id).ok()?;
        let mut record = NodeRecord::new(Role::Module, self.name.clone());
        record.id = id;
        record.services = vec![self.name.clone()];
        record.version = self.version.clone();
        record.router = Uuid::parse_str(router_id).ok();
        Some(record)
    }

    /// Publishes this module's node record when a mesh directory is set.
    /// Failing to is worth a warning, not an exit: calls still work.
    fn publish(&self, node_id: &str, router_id: &str) -> Option<NodeGuard> {
        let dir = self.mesh_dir.as_ref()?;
        let published = (|| {
            let record = self
                .record(node_id, router_id)
                .ok_or_else(|| format!("node id {node_id:?} is not a UUID"))?;
            let mesh = MeshDir::open(dir).map_err(|err| err.to_string())?;
            mesh.publish(&record).map_err(|err| err.to_string())
        })();
        match published {
            Ok(guard) => Some(guard),
            Err(err) => {
                eprintln!("{}: warning: not published in {}: {err}", self.name, dir.display());
                None
            }
        }
    }
}

/// A link to a router over its socket (`Router.AttachModule`), presented as
/// a byte stream of frames, so that the session code serves it exactly as
/// it serves stdin and stdout.
struct Bridge {
    module_side: Option<DuplexStream>,
    // Both directions stop when the bridge drops.
    _up: AbortOnDropHandle<()>,
    _down: AbortOnDropHandle<()>,
}

impl Bridge {
    async fn connect(router: &NodeRecord, name: String) -> Result<Self, String> {
        let endpoint = router.endpoint.clone().unwrap_or_default();
        let path =
            endpoint.strip_prefix("unix:").ok_or_else(|| format!("endpoint {endpoint:?} is not unix:"))?;
        let channel = polis_mesh::transport::connect_channel(std::path::Path::new(path))
            .await
            .map_err(|err| err.to_string())?;
        let (module_side, bridge_side) = tokio::io::duplex(256 * 1024);
        let (from_module, to_module) = tokio::io::split(bridge_side);
        let (out_tx, out_rx) = mpsc::channel::<Frame>(OUTBOX);

        let up = async move {
            let mut frames = FrameReader::new(from_module, FrameCodec::default());
            while let Ok(Some(frame)) = frames.read_frame().await {
                if out_tx.send(frame).await.is_err() {
                    break;
                }
            }
        };
        let down = async move {
            let mut client = RouterClient::new(channel);
            let mut frames = FrameWriter::new(to_module, FrameCodec::default());
            let response = match client.attach_module(ReceiverStream::new(out_rx)).await {
                Ok(response) => response,
                Err(status) => {
                    eprintln!("{name}: the router refused to attach it: {}", status.message());
                    let _ = frames.shutdown().await;
                    return;
                }
            };
            let mut inbound = response.into_inner();
            while let Ok(Some(frame)) = inbound.message().await {
                if frames.write_frame(&frame).await.is_err() {
                    break;
                }
            }
            // The module reads the end of its input: the link is lost. (Only
            // dropping this half would not do: the other half keeps the pipe.)
            let _ = frames.shutdown().await;
        };
        Ok(Self {
            module_side: Some(module_side),
            _up: AbortOnDropHandle::new(tokio::spawn(up)),
            _down: AbortOnDropHandle::new(tokio::spawn(down)),
        })
    }

    fn take_module_side(&mut self) -> (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>) {
        tokio::io::split(self.module_side.take().expect("taken once"))
    }
}

/// The state of one link after the handshake.
struct Session {
    module: Module,
    config: Arc<Value>,
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
}

impl Session {
    fn start<W>(module: Module, writer: FrameWriter<W>, config: Arc<Value>) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let writer_done = CancellationToken::new();
        let lost = CancellationToken::new();
        let task = write_frames(writer, rx, writer_done.clone(), lost.clone(), module.name.clone());
        Self {
            module,
            config,
            tx,
            writer: AbortOnDropHandle::new(tokio::spawn(task)),
            writer_done,
            lost,
            stop: CancellationToken::new(),
            requests: TaskTracker::new(),
            in_flight: Arc::default(),
        }
    }

    /// Takes requests until the router says `Shutdown` or goes away.
    async fn serve<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) -> End {
        loop {
            let frame = tokio::select! {
                frame = reader.read_frame() => frame,
                () = self.lost.cancelled() => return End::Lost,
            };
            match frame {
                Ok(Some(Frame { kind: Some(Kind::Request(request)) })) => self.start_request(request),
                Ok(Some(Frame { kind: Some(Kind::Cancel(cancel)) })) => self.cancel(cancel.id),
                Ok(Some(Frame { kind: Some(Kind::Shutdown(shutdown)) })) => {
                    return End::Shutdown(Duration::from_millis(shutdown.grace_ms.into()));
                }
                Ok(Some(other)) => self.ignore(&other),
                Ok(None) => return End::Lost,
                Err(err) => return End::Failed(err),
            }
        }
    }

    /// After `Shutdown`: lets the requests in flight finish within `grace`,
    /// refusing new ones, then drops whatever is left.
    async fn drain<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>, grace: Duration) {
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
                    Ok(Some(Frame { kind: Some(Kind::Shutdown(_)) })) => {}
                    Ok(Some(other)) => self.ignore(&other),
                    // The router may close our input after Shutdown; the grace still holds.
                    Ok(None) | Err(_) => reading = false,
                },
            }
        }
    }

    /// Drops every handler still running, writes what is queued and stops
    /// the writer.
    async fn close(self) {
        self.stop.cancel();
        self.requests.close();
        self.requests.wait().await;
        self.writer_done.cancel();
        drop(self.tx);
        let _ = self.writer.await;
    }

    fn start_request(&self, request: Request) {
        let Request { id, method, payload, caller, timeout_ms } = request;
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
            deadline: (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms)),
            cancel: token.clone(),
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
            kind_name(frame)
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

/// The module's stdin as a reader that does not hold the runtime open.
///
/// `tokio::io::stdin` reads on a blocking thread that nothing can
/// interrupt, so the process would hang on exit until the router wrote or
/// closed the pipe. A pipe or a socket, which is what a router gives, is
/// read without blocking instead.
pub(super) fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    match nonblocking(std::io::stdin()) {
        Ok(Some(Stdio::Pipe(fd))) => match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => return Box::new(pipe),
            Err(err) => eprintln!("warning: reading stdin on a blocking thread: {err}"),
        },
        Ok(Some(Stdio::Socket(socket))) => return Box::new(socket),
        Ok(None) => {}
        Err(err) => eprintln!("warning: reading stdin on a blocking thread: {err}"),
    }
    Box::new(tokio::io::stdin())
}

/// The module's stdout as a writer taking each frame in one write.
///
/// `tokio::io::stdout` hands every write to a blocking thread and goes
/// through std's line-buffered `Stdout`, which splits a frame at each 0x0a
/// byte (common in protobuf): measured, half of a module's CPU per call. A
/// pipe or a socket, which is what a router gives, is written without
/// blocking instead.
pub(super) fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    match nonblocking(std::io::stdout()) {
        Ok(Some(Stdio::Pipe(fd))) => match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
            Ok(pipe) => return Box::new(pipe),
            Err(err) => eprintln!("warning: writing stdout on a blocking thread: {err}"),
        },
        Ok(Some(Stdio::Socket(socket))) => return Box::new(socket),
        Ok(None) => {}
        Err(err) => eprintln!("warning: writing stdout on a blocking thread: {err}"),
    }
    Box::new(tokio::io::stdout())
}

/// A standard stream that can be driven without blocking.
#[cfg(unix)]
enum Stdio {
    /// A pipe: tokio's pipe types take the fd (and make it non-blocking).
    Pipe(std::os::fd::OwnedFd),
    /// A socket, already non-blocking and registered.
    Socket(tokio::net::UnixStream),
}

/// A copy of `stream`'s fd as a pipe or a socket; `None` when it is
/// neither (a file or a terminal).
#[cfg(unix)]
fn nonblocking(stream: impl std::os::fd::AsFd) -> std::io::Result<Option<Stdio>> {
    use std::os::unix::fs::FileTypeExt;

    let fd = stream.as_fd().try_clone_to_owned()?;
    let kind = std::fs::File::from(fd.try_clone()?).metadata()?.file_type();
    if kind.is_fifo() {
        return Ok(Some(Stdio::Pipe(fd)));
    }
    if kind.is_socket() {
        let socket = std::os::unix::net::UnixStream::from(fd);
        socket.set_nonblocking(true)?;
        return Ok(Some(Stdio::Socket(tokio::net::UnixStream::from_std(socket)?)));
    }
    Ok(None)
}

/// The name of a frame's kind, for messages.
fn kind_name(frame: &Frame) -> &'static str {
    match &frame.kind {
        Some(Kind::Hello(_)) => "Hello",
        Some(Kind::Welcome(_)) => "Welcome",
        Some(Kind::Request(_)) => "Request",
        Some(Kind::Reply(_)) => "Reply",
        Some(Kind::Cancel(_)) => "Cancel",
        Some(Kind::Shutdown(_)) => "Shutdown",
        None => "empty",
    }
}
