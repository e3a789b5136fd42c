//! The host driven in-process: a launcher that hands back `tokio::io::duplex`
//! pipes instead of starting processes, and the test playing each module by
//! hand with raw frames, its "process" exiting when the test says so.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use polis_discovery::MeshDir;
use polis_mesh::{
    PROTOCOL_VERSION,
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind, reply::Outcome},
};
use tokio::{
    io::{DuplexStream, ReadHalf, WriteHalf},
    sync::{mpsc, watch},
};
use tonic::Code;
use uuid::Uuid;

use super::{
    Host, HostConfig, Instance, Item, PendingCall, RouterIdentity,
    spawn::{ChildProcess, Launch, Launched, SpawnEnv},
};
use crate::manifest::{Manifest, ModulePath};

/// The longest any test waits for anything that should happen.
const WAIT: Duration = Duration::from_secs(5);

/// `future`'s output; fails the test if it takes longer than [`WAIT`].
async fn soon<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("nothing happened in time")
}

/// The pid every fake process reports.
const FAKE_PID: u32 = 4242;

/// One module "process" the host started, played by the test.
struct Fake {
    name: String,
    /// The node id it was spawned with (`POLIS_NODE_ID`).
    node_id: Uuid,
    log: PathBuf,
    /// What the host writes to the module's stdin.
    reader: FrameReader<ReadHalf<DuplexStream>>,
    /// The module's stdout.
    writer: FrameWriter<WriteHalf<DuplexStream>>,
    exit: Arc<watch::Sender<Option<ExitStatus>>>,
}

impl Fake {
    async fn send(&mut self, kind: Kind) {
        self.writer
            .write_frame(&Frame { kind: Some(kind) })
            .await
            .expect("the host reads the module's stdout");
    }

    async fn hello(&mut self, protocol_version: u32) {
        let hello = pb::Hello {
            name: self.name.clone(),
            version: "1.0.0".into(),
            protocol_version,
            ..Default::default()
        };
        self.send(Kind::Hello(hello)).await;
    }

    /// The next frame the host sent; fails the test if none comes in time.
    async fn recv(&mut self) -> Frame {
        soon(self.reader.read_frame()).await.expect("a well-formed frame").expect("the host closed stdin")
    }

    /// Says hello and takes the `Welcome`.
    async fn handshake(&mut self) -> pb::Welcome {
        self.hello(PROTOCOL_VERSION).await;
        match self.recv().await.kind {
            Some(Kind::Welcome(welcome)) => welcome,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn request(&mut self) -> pb::Request {
        match self.recv().await.kind {
            Some(Kind::Request(request)) => request,
            other => panic!("expected Request, got {other:?}"),
        }
    }

    async fn reply(&mut self, id: u64, data: &'static str) {
        let payload =
            pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(data.as_bytes()) };
        self.send(Kind::Reply(pb::Reply { id, outcome: Some(Outcome::Payload(payload)), more: false })).await;
    }

    /// The process exits with `code`: its status is set, then its pipes close.
    fn exit(self, code: i32) {
        self.exit.send_replace(Some(ExitStatus::from_raw(code << 8)));
    }

    fn was_killed(&self) -> bool {
        self.exit.borrow().is_some_and(|s| s.signal() == Some(9))
    }
}

/// The stand-in for a process: exits when its [`Fake`] says so, or when killed.
struct FakeChild {
    exit: Arc<watch::Sender<Option<ExitStatus>>>,
}

impl ChildProcess for FakeChild {
    fn id(&self) -> Option<u32> {
        Some(FAKE_PID)
    }

    fn start_kill(&mut self) -> std::io::Result<()> {
        self.exit
            .send_if_modified(|status| status.is_none() && status.replace(ExitStatus::from_raw(9)).is_none());
        Ok(())
    }

    fn wait(&mut self) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + '_>> {
        let mut status = self.exit.subscribe();
        Box::pin(async move {
            let status = status.wait_for(Option::is_some).await.expect("the sender lives in self");
            Ok(status.expect("waited for it"))
        })
    }
}

/// Hands the test a [`Fake`] for every module the host starts.
struct FakeLauncher {
    launched: mpsc::UnboundedSender<Fake>,
    /// The pipes' capacity in bytes.
    pipe: usize,
}

impl Launch for FakeLauncher {
    fn launch(&self, manifest: &Manifest, env: &SpawnEnv<'_>) -> std::io::Result<Launched> {
        let (host_side, module_side) = tokio::io::duplex(self.pipe);
        let (stdout, stdin) = tokio::io::split(host_side);
        let (read, write) = tokio::io::split(module_side);
        let exit = Arc::new(watch::Sender::new(None));
        let fake = Fake {
            name: manifest.name.clone(),
            node_id: Uuid::parse_str(env.node_id).expect("the host spawns with a UUID"),
            log: env.log.to_owned(),
            reader: FrameReader::new(read, FrameCodec::default()),
            writer: FrameWriter::new(write, FrameCodec::default()),
            exit: exit.clone(),
        };
        let _ = self.launched.send(fake);
        Ok(Launched { stdin: Box::new(stdin), stdout: Box::new(stdout), child: Box::new(FakeChild { exit }) })
    }
}

/// A host over a temp mesh and a temp modules directory.
struct Fixture {
    host: Arc<Host>,
    router: RouterIdentity,
    launched: mpsc::UnboundedReceiver<Fake>,
    _dirs: tempfile::TempDir,
}

/// The manifest of a frames module `name`, with `extra` lines.
fn write_manifest(modules: &Path, name: &str, extra: &str) {
    let dir = modules.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nexec = \"/bin/sh\"\n{extra}\n[config]\ngreeting = \"hi\"\n"
    );
    std::fs::write(dir.join("module.toml"), toml).unwrap();
}

impl Fixture {
    /// `echo` restarts on failure; `always` restarts at once.
    fn new(pipe: usize, tune: impl FnOnce(&mut HostConfig)) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let modules = dirs.path().join("modules");
        write_manifest(&modules, "echo", "");
        write_manifest(&modules, "always", "restart = \"always\"");
        let mesh = MeshDir::open(dirs.path().join("mesh")).unwrap();
        let mut config = HostConfig::new(ModulePath::from_dirs(vec![modules]));
        config.handshake_timeout = Duration::from_secs(1);
        tune(&mut config);
        let router = RouterIdentity { id: Uuid::new_v4(), epoch: 7 };
        let (tx, launched) = mpsc::unbounded_channel();
        let launcher = FakeLauncher { launched: tx, pipe };
        let host = Host::with_launcher(config, mesh, router, Box::new(launcher));
        Self { host, router, launched, _dirs: dirs }
    }

    async fn next_launch(&mut self) -> Fake {
        soon(self.launched.recv()).await.expect("the launcher lives in the host")
    }

    /// Loads `name`, playing its module through the handshake.
    async fn loaded(&mut self, name: &'static str) -> (Arc<Instance>, Fake) {
        let host = self.host.clone();
        let load = tokio::spawn(async move { host.instance(name).await });
        let mut fake = self.next_launch().await;
        fake.handshake().await;
        let instance = soon(load).await.unwrap().expect("the load succeeds");
        (instance, fake)
    }

    fn state(&self, name: &str) -> pb::ModuleInfo {
        self.host.modules().into_iter().find(|m| m.name == name).expect("a known module")
    }
}

fn call(instance: &Arc<Instance>) -> PendingCall {
    let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"{}") };
    instance.call("echo".into(), payload, None, "tester".into()).expect("the module takes calls")
}

/// The final payload of a call.
async fn answer(call: &mut PendingCall) -> Result<Bytes, tonic::Status> {
    match soon(call.next()).await.expect("an answer") {
        Ok(Item::End(Some(payload))) => Ok(payload.data),
        Ok(other) => panic!("expected the end with a payload, got {other:?}"),
        Err(status) => Err(status),
    }
}

#[tokio::test]
async fn lazy_load_starts_one_module_for_many_first_calls_and_welcomes_it() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    assert!(fx.launched.try_recv().is_err(), "nothing starts before a call");
    assert_eq!(fx.state("echo").state, "available");

    let loads: Vec<_> = (0..16)
        .map(|_| {
            let host = fx.host.clone();
            tokio::spawn(async move { host.instance("echo").await })
        })
        .collect();
    let mut fake = fx.next_launch().await;
    assert_eq!(fake.name, "echo");
    let welcome = fake.handshake().await;
    assert_eq!(welcome.router_id, fx.router.id.to_string());
    assert_eq!(welcome.epoch, 7);
    let config: serde_json::Value = serde_json::from_slice(&welcome.config_json).unwrap();
    assert_eq!(config, serde_json::json!({"greeting": "hi"}));

    let mut instances = Vec::new();
    for load in loads {
        instances.push(soon(load).await.unwrap().expect("the load succeeds"));
    }
    assert!(instances.iter().all(|i| Arc::ptr_eq(i, &instances[0])), "one instance for all");
    assert!(fx.launched.try_recv().is_err(), "one process for sixteen first calls");
    assert_eq!(fx.state("echo").state, "running");
    assert_eq!(fx.state("echo").pid, FAKE_PID);

    let mut pending = call(&instances[0]);
    let request = fake.request().await;
    assert_eq!((request.method.as_str(), request.caller.as_str()), ("echo", "tester"));
    fake.reply(request.id, "\"pong\"").await;
    assert_eq!(answer(&mut pending).await.unwrap(), "\"pong\"");

    let missing = fx.host.instance("nonesuch").await.expect_err("no manifest");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(fx.launched.try_recv().is_err(), "nothing starts for a module that does not exist");
}

#[tokio::test]
async fn a_hello_with_another_protocol_version_fails_the_load_and_kills_the_module() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    let mut fake = fx.next_launch().await;
    fake.hello(PROTOCOL_VERSION + 1).await;
    let status = soon(load).await.unwrap().expect_err("a wrong version fails the load");
    assert_eq!(status.code(), Code::Unavailable);
    let expected = format!(
        "module echo failed its handshake: it speaks frame protocol {}, this router speaks {PROTOCOL_VERSION}",
        PROTOCOL_VERSION + 1
    );
    assert!(status.message().starts_with(&expected), "{}", status.message());
    assert!(fake.was_killed());
    assert_eq!(fx.state("echo").last_error, status.message());
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_the_deadline_fails_the_load_and_kills_the_module() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    // Kept, silent: its stdout stays open, so only the deadline can end the wait.
    let fake = fx.next_launch().await;
    let status = soon(load).await.unwrap().expect_err("silence fails the load");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().starts_with("module echo failed its handshake: no hello within 1s"),
        "{}",
        status.message()
    );
    assert!(fake.was_killed());
}

#[tokio::test]
async fn a_module_closing_its_stdout_before_hello_fails_the_load_with_its_status_and_stderr() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    let fake = fx.next_launch().await;
    std::fs::write(&fake.log, "error: no config file\n").unwrap();
    fake.exit(2);
    let status = soon(load).await.unwrap().expect_err("no hello fails the load");
    assert_eq!(
        status.message(),
        "module echo failed its handshake: it closed its stdout before saying hello (exit status 2); \
         last stderr: error: no config file"
    );
}

#[tokio::test]
async fn a_reply_for_an_unknown_id_is_ignored_and_the_link_stays() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let (instance, mut fake) = fx.loaded("echo").await;
    let mut pending = call(&instance);
    let request = fake.request().await;
    fake.reply(request.id + 1000, "\"stray\"").await;
    fake.reply(request.id, "\"mine\"").await;
    assert_eq!(answer(&mut pending).await.unwrap(), "\"mine\"");
    assert!(!instance.is_closed());
    let mut again = call(&instance);
    let request = fake.request().await;
    fake.reply(request.id, "\"again\"").await;
    assert_eq!(answer(&mut again).await.unwrap(), "\"again\"");
}

#[tokio::test]
async fn a_module_exiting_fails_its_three_calls_in_flight_and_is_started_again() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let (instance, mut fake) = fx.loaded("echo").await;
    let mut calls = vec![call(&instance), call(&instance), call(&instance)];
    for _ in 0..3 {
        fake.request().await;
    }
    std::fs::write(&fake.log, "thread 'main' panicked: boom\n").unwrap();
    fake.exit(3);
    for call in &mut calls {
        let status = answer(call).await.expect_err("the module is gone");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "module echo exited with status 3; last stderr: thread 'main' panicked: boom"
        );
    }
    let exit = soon(instance.closed()).await;
    assert!(exit.crashed);
    // On failure: started again by the next call, not before.
    assert!(fx.launched.try_recv().is_err());
    let (again, _fake) = fx.loaded("echo").await;
    assert!(!Arc::ptr_eq(&instance, &again));
    assert_eq!(fx.state("echo").restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn the_restart_budget_runs_out() {
    let mut fx = Fixture::new(64 * 1024, |c| c.restart_budget = 2);
    let (_, fake) = fx.loaded("always").await;
    fake.exit(1);
    // `always`: restarted at once (after its backoff), twice within the budget.
    for _ in 0..2 {
        let mut fake = fx.next_launch().await;
        fake.handshake().await;
        fake.exit(1);
    }
    // The third crash spends the budget: no restart, however long one waits
    // (the longest backoff is 5 s; time is paused, so this is instant).
    let late = tokio::time::timeout(Duration::from_secs(60), fx.launched.recv()).await;
    assert!(late.is_err(), "no start after the budget is spent");
    let info = fx.state("always");
    assert_eq!((info.state.as_str(), info.restarts), ("failed", 2));
    let status = fx.host.instance("always").await.expect_err("a spent budget refuses loads");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().starts_with("module always crashed 3 times within 60s: its restart budget is spent"),
        "{}",
        status.message()
    );
    assert!(fx.launched.try_recv().is_err());
    // A hand load starts it again.
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.load("always").await });
    fx.next_launch().await.handshake().await;
    assert_eq!(soon(load).await.unwrap().unwrap().state, "running");
}

#[tokio::test]
async fn dropping_a_call_cancels_it_in_the_module() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let (instance, mut fake) = fx.loaded("echo").await;
    let pending = call(&instance);
    let request = fake.request().await;
    drop(pending);
    assert_eq!(fake.recv().await.kind, Some(Kind::Cancel(pb::Cancel { id: request.id })));
}

#[tokio::test]
async fn a_cancel_reaches_the_module_even_when_the_outbox_is_full() {
    // A small pipe, so the outbox fills as soon as the module stops reading.
    let mut fx = Fixture::new(256, |_| {});
    let (instance, mut fake) = fx.loaded("echo").await;
    let first = call(&instance);
    let first_id = fake.request().await.id;

    // The module reads nothing more: queue calls until the host refuses one.
    let payload = || pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"{}") };
    let mut queued = Vec::new();
    let refused = loop {
        match instance.call("echo".into(), payload(), None, "tester".into()) {
            Ok(call) => queued.push(call),
            Err(status) => break status,
        }
        assert!(queued.len() < 10_000, "the outbox never filled");
    };
    // A full outbox is the module's limit, with the in-flight limit's answer.
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let (last_id, skipped_id) = (queued.last().unwrap().id(), queued[queued.len() / 2].id());

    // Cancel the sent call, and one still queued, while the outbox is full.
    drop(first);
    queued.retain(|c| c.id() != skipped_id);

    // Cancels go first; the queued call that was cancelled never goes out.
    let mut frames = Vec::new();
    loop {
        let kind = fake.recv().await.kind;
        let end = matches!(&kind, Some(Kind::Request(r)) if r.id == last_id);
        frames.push(kind);
        if end {
            break;
        }
    }
    let cancels: Vec<u64> = frames
        .iter()
        .filter_map(|k| match k {
            Some(Kind::Cancel(c)) => Some(c.id),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, [first_id], "exactly the sent call is cancelled");
    let position = frames.iter().position(|k| matches!(k, Some(Kind::Cancel(_)))).unwrap();
    let sent: Vec<u64> = frames
        .iter()
        .filter_map(|k| match k {
            Some(Kind::Request(r)) => Some(r.id),
            _ => None,
        })
        .collect();
    assert!(!sent.contains(&skipped_id), "a call cancelled while queued is never sent");
    assert_eq!(sent.len(), queued.len());
    // One thread runs the test and the host: the writer has not run since
    // the module stopped reading, so the cancel is the very next frame.
    assert_eq!(position, 0, "the cancel waited behind {position} queued frames");
}

#[tokio::test]
async fn an_attached_hello_is_checked_on_the_same_path_and_refused_with_a_status() {
    use super::{handshake, link::LinkReader, link::LinkWriter};
    use crate::manifest::Protocol;
    let router = RouterIdentity { id: Uuid::new_v4(), epoch: 1 };
    for (name, version, code, message) in [
        ("Bad/Name", PROTOCOL_VERSION, Code::InvalidArgument, "invalid service name \"Bad/Name\""),
        ("echo", PROTOCOL_VERSION + 1, Code::FailedPrecondition, "module echo speaks frame protocol"),
    ] {
        let (host_side, module_side) = tokio::io::duplex(4096);
        let (stdout, stdin) = tokio::io::split(host_side);
        let mut reader = LinkReader::new(Protocol::Frames, Box::new(stdout), 4096);
        let mut writer = LinkWriter::new(Protocol::Frames, Box::new(stdin), 4096);
        let mut module = FrameWriter::new(module_side, FrameCodec::default());
        let hello = pb::Hello { name: name.into(), protocol_version: version, ..Default::default() };
        module.write_frame(&Frame { kind: Some(Kind::Hello(hello)) }).await.unwrap();
        let error =
            soon(handshake::hello(&mut reader, &mut writer, router, None, |_| serde_json::Value::Null))
                .await
                .expect_err("refused");
        let status = error.attach_status();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
}

/// A module's own `Request` for `service`.
fn own_request(id: u64, service: &str, parent: u64) -> Kind {
    Kind::Request(pb::Request {
        id,
        method: "ping".into(),
        service: service.into(),
        parent,
        payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"{}") }),
        ..Default::default()
    })
}

/// The next `Reply` the host sent a module.
async fn reply_to(fake: &mut Fake) -> pb::Reply {
    match fake.recv().await.kind {
        Some(Kind::Reply(reply)) => reply,
        other => panic!("expected Reply, got {other:?}"),
    }
}

fn refusal(reply: &pb::Reply) -> (Code, String) {
    match &reply.outcome {
        Some(Outcome::Error(e)) => (Code::from(e.code), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

impl Fixture {
    fn add_module(&self, name: &str, extra: &str) {
        write_manifest(&self._dirs.path().join("modules"), name, extra);
    }
}

#[tokio::test]
async fn a_modules_call_is_routed_and_answered_on_its_own_link() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    fx.add_module("caller", "calls = [\"echo\"]");
    let (_caller, mut fake) = fx.loaded("caller").await;
    fake.send(own_request(41, "echo", 0)).await;
    // echo is loaded on demand, as for a frontend's call.
    let mut echo = fx.next_launch().await;
    echo.handshake().await;
    let request = echo.request().await;
    assert_eq!((request.caller.as_str(), request.depth, request.method.as_str()), ("caller", 1, "ping"));
    echo.reply(request.id, "\"pong\"").await;
    let reply = reply_to(&mut fake).await;
    assert_eq!(reply.id, 41);
    let Some(Outcome::Payload(p)) = reply.outcome else { panic!("{reply:?}") };
    assert_eq!(&p.data[..], b"\"pong\"");
}

#[tokio::test]
async fn cancelling_a_call_cancels_the_calls_its_module_made_for_it() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    fx.add_module("caller", "calls = [\"echo\"]");
    let (caller, mut fake) = fx.loaded("caller").await;
    let (_echo, mut echo) = fx.loaded("echo").await;
    let outer = call(&caller);
    let served = fake.request().await;
    fake.send(own_request(1, "echo", served.id)).await;
    let nested = echo.request().await;
    assert_eq!(nested.depth, 2, "one deeper than the call it serves");
    assert!(nested.timeout_ms > 0, "a unary call made for a call gets a deadline");
    drop(outer);
    match fake.recv().await.kind {
        Some(Kind::Cancel(c)) => assert_eq!(c.id, served.id),
        other => panic!("expected Cancel, got {other:?}"),
    }
    match echo.recv().await.kind {
        Some(Kind::Cancel(c)) => assert_eq!(c.id, nested.id, "the nested call is cancelled in its callee"),
        other => panic!("expected Cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_calls_from_a_module_are_refused_on_its_link_and_it_keeps_serving() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    fx.add_module("caller", "calls = [\"echo\"]");
    let (caller, mut fake) = fx.loaded("caller").await;
    let (_echo, mut echo) = fx.loaded("echo").await;

    fake.send(own_request(1, "", 0)).await;
    let (code, message) = refusal(&reply_to(&mut fake).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("`service` is empty"), "{message}");

    fake.send(own_request(2, "always", 0)).await;
    let (code, message) = refusal(&reply_to(&mut fake).await);
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(
        message,
        "module \"caller\" may not call \"always\": add calls = [\"always\"] to its module.toml"
    );

    fake.send(own_request(3, "echo", 999)).await;
    let (code, message) = refusal(&reply_to(&mut fake).await);
    assert_eq!(code, Code::Cancelled, "made for a request that is not in flight: {message}");

    // A cancel and a reply for ids nobody knows are ignored.
    fake.send(Kind::Cancel(pb::Cancel { id: 77 })).await;
    fake.reply(78, "\"stray\"").await;

    // The link is fine both ways.
    let mut served = call(&caller);
    let request = fake.request().await;
    fake.reply(request.id, "\"fine\"").await;
    assert_eq!(&answer(&mut served).await.unwrap()[..], b"\"fine\"");
    fake.send(own_request(4, "echo", 0)).await;
    let request = echo.request().await;
    echo.reply(request.id, "\"pong\"").await;
    assert_eq!(reply_to(&mut fake).await.id, 4);
}

#[tokio::test]
async fn a_declared_modules_unknown_method_is_refused_without_reaching_it_and_the_monitor_sees_both() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    let mut fake = fx.next_launch().await;
    let method =
        |name: &str| pb::Method { name: name.into(), doc: format!("does {name}"), ..Default::default() };
    let hello = pb::Hello {
        name: "echo".into(),
        version: "1.0.0".into(),
        protocol_version: PROTOCOL_VERSION,
        methods: vec![method("echo"), method("add")],
        declared: true,
        ..Default::default()
    };
    fake.send(Kind::Hello(hello)).await;
    assert!(matches!(fake.recv().await.kind, Some(Kind::Welcome(_))));
    let instance = soon(load).await.unwrap().expect("the load succeeds");
    let described = fx.host.describe("echo").await.unwrap();
    let names: Vec<_> = described.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!((described.declared, names), (true, vec!["add", "echo"]));

    let mut watch = fx.host.monitor().watch("echo".into(), false);
    let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"{}") };
    let Err(refused) = instance.call("shout".into(), payload, None, "tester".into()) else {
        panic!("a method the module did not declare is refused");
    };
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), r#"module echo has no method "shout"; it has add, echo"#);

    // The next frame the module sees is the declared call: the refused one never left the host.
    let mut pending = call(&instance);
    let request = fake.request().await;
    assert_eq!(request.method, "echo");
    fake.reply(request.id, "\"pong\"").await;
    assert_eq!(answer(&mut pending).await.unwrap(), "\"pong\"");
    drop(pending);

    let codes: Vec<_> = std::iter::from_fn(|| watch.try_next())
        .map(|line| match line.kind {
            Some(pb::monitor_line::Kind::Call(c)) => (c.method, c.code, c.caller),
            other => panic!("expected a call line, got {other:?}"),
        })
        .collect();
    let tester = || "tester".to_owned();
    assert_eq!(
        codes,
        [("shout".into(), "NOT_FOUND".into(), tester()), ("echo".into(), "OK".into(), tester())]
    );
}

#[tokio::test]
async fn added_module_dirs_are_searched_last_and_bad_ones_are_refused_whole() {
    let fixture = Fixture::new(4096, |_| {});
    let extra = fixture._dirs.path().join("extra");
    write_manifest(&extra, "extra", "");
    // `echo` there too: the router's own echo keeps winning.
    write_manifest(&extra, "echo", "");
    let own = fixture.host.modules_path().dirs().to_vec();

    let relative = fixture.host.add_module_dirs(&["mods".into(), extra.display().to_string()]);
    let status = relative.expect_err("a relative dir is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("\"mods\" is not an absolute directory"), "{status:?}");
    assert_eq!(fixture.host.modules_path().dirs(), own, "a refused request adds nothing");

    let added = fixture.host.add_module_dirs(&[extra.display().to_string()]).unwrap();
    assert_eq!(added, std::slice::from_ref(&extra));
    let again = fixture.host.add_module_dirs(&[extra.display().to_string()]).unwrap();
    assert!(again.is_empty(), "a dir searched already is not added twice");
    assert_eq!(fixture.host.modules_path().dirs(), [own.clone(), vec![extra.clone()]].concat());
    assert_eq!(fixture.state("extra").state, "available", "its modules are known");
    let echo = fixture.host.modules_path().find("echo").unwrap();
    assert!(echo.path.starts_with(&own[0]), "the router's own echo wins: {}", echo.path.display());

    let many: Vec<String> =
        (0..super::search::MAX_ADDED_DIRS).map(|i| format!("/tmp/polis-dir-{i}")).collect();
    let status = fixture.host.add_module_dirs(&many).expect_err("past the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("at most 64 added directories"), "{status:?}");
    assert_eq!(fixture.host.modules_path().dirs().len(), own.len() + 1, "nothing of it was added");
}

/// The writer takes what is queued in batches (issue 10): the module still
/// gets the requests in order, none of those dropped while queued, and a
/// cancel for a request dropped after it went out.
#[tokio::test]
async fn requests_queued_together_arrive_in_order_without_those_dropped_while_queued() {
    let mut fx = Fixture::new(64 * 1024, |_| {});
    let (instance, mut fake) = fx.loaded("echo").await;
    // Queued in one go, before the writer task runs again (one thread).
    let mut calls: Vec<PendingCall> = (0..150).map(|_| call(&instance)).collect();
    let mut kept = Vec::new();
    for (n, call) in std::mem::take(&mut calls).into_iter().enumerate() {
        if n % 3 == 0 {
            drop(call);
        } else {
            kept.push(call);
        }
    }
    for call in &kept {
        assert_eq!(fake.request().await.id, call.id(), "in order, the dropped ones skipped");
    }
    let last = kept.pop().expect("calls kept");
    let id = last.id();
    drop(last);
    match fake.recv().await.kind {
        Some(Kind::Cancel(cancel)) => assert_eq!(cancel.id, id),
        other => panic!("expected the cancel of {id}, got {other:?}"),
    }
    fake.reply(kept[0].id(), "\"pong\"").await;
    assert_eq!(answer(&mut kept[0]).await.unwrap(), "\"pong\"");
}

/// What a router on etcd sees of the whole mesh, played by the test: the
/// records it holds, a count of the looks, and, when `watchable`, the
/// watches handed out, woken by [`FakeSightings::change`].
#[derive(Default)]
struct FakeSightings {
    // std Mutex: never held across an await.
    records: std::sync::Mutex<Vec<polis_discovery::NodeRecord>>,
    looks: watch::Sender<usize>,
    watchable: bool,
    watches: std::sync::Mutex<Vec<mpsc::Sender<()>>>,
    watched: watch::Sender<usize>,
}

impl FakeSightings {
    fn watchable() -> Self {
        Self { watchable: true, ..Self::default() }
    }

    /// Wakes every watch handed out, as etcd's does after a change.
    fn change(&self) {
        for watch in self.watches.lock().unwrap().iter() {
            let _ = watch.try_send(());
        }
    }
}

impl super::Sightings for FakeSightings {
    fn records(&self) -> super::BoxFuture<'_, Result<Vec<polis_discovery::NodeRecord>, String>> {
        self.looks.send_modify(|n| *n += 1);
        let records = self.records.lock().unwrap().clone();
        Box::pin(async move { Ok(records) })
    }

    fn changes(&self) -> super::BoxFuture<'_, Result<super::Changes, String>> {
        let changes = self.watchable.then(|| {
            let (tx, rx) = mpsc::channel(1);
            self.watches.lock().unwrap().push(tx);
            self.watched.send_modify(|n| *n += 1);
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as super::Changes
        });
        Box::pin(async move { changes.ok_or_else(|| "not watchable".to_owned()) })
    }
}

/// A record of a module serving `name`, as one on another machine publishes.
fn module_record(name: &str, id: Uuid) -> polis_discovery::NodeRecord {
    let mut record = polis_discovery::NodeRecord::new(polis_discovery::Role::Module, name);
    record.id = id;
    record.services = vec![name.to_owned()];
    record
}

/// A module serving the name lives elsewhere in the mesh (its record is in
/// sightings that cannot be watched, not in this machine's directory): a
/// lazy load waits for it rather than start another, looking again and
/// again, and starts one once the record is gone (its lease lapsed: that
/// module is not coming back).
#[tokio::test]
async fn a_load_waits_while_a_module_of_the_name_is_sighted_elsewhere() {
    let sightings = Arc::new(FakeSightings::default());
    sightings.records.lock().unwrap().push(module_record("echo", Uuid::new_v4()));
    let mut fx = Fixture::new(64 * 1024, |config| {
        config.reattach_wait = Duration::from_secs(60);
        config.sightings = Some(sightings.clone());
    });
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    // It looked, and looks again and again: it is waiting.
    let mut looks = sightings.looks.subscribe();
    soon(looks.wait_for(|&n| n >= 3)).await.unwrap();
    assert!(fx.launched.try_recv().is_err(), "nothing started while the module is on its way");
    assert!(!load.is_finished());

    sightings.records.lock().unwrap().clear();
    let mut fake = fx.next_launch().await;
    fake.handshake().await;
    soon(load).await.unwrap().expect("the load succeeds");
}

/// The same with sightings that can be watched, and no looking again by
/// the clock to speak of (an hour): the load that waits for the module is
/// woken by the change that took its record away, and starts another.
#[tokio::test]
async fn a_waiting_load_is_woken_when_the_record_sighted_elsewhere_goes() {
    let sightings = Arc::new(FakeSightings::watchable());
    sightings.records.lock().unwrap().push(module_record("echo", Uuid::new_v4()));
    let mut fx = Fixture::new(64 * 1024, |config| {
        config.reattach_wait = Duration::from_secs(3600);
        config.reattach_poll = Duration::from_secs(3600);
        config.sightings = Some(sightings.clone());
    });
    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    // Watching, then looking again: the change below comes after both.
    soon(sightings.watched.subscribe().wait_for(|&n| n == 1)).await.unwrap();
    soon(sightings.looks.subscribe().wait_for(|&n| n >= 2)).await.unwrap();
    assert!(fx.launched.try_recv().is_err(), "nothing started while the module is on its way");

    sightings.records.lock().unwrap().clear();
    sightings.change();
    let mut fake = fx.next_launch().await;
    fake.handshake().await;
    soon(load).await.unwrap().expect("the load succeeds");
}

/// A module on its way back in this machine's directory dies there as a
/// SIGKILL leaves things: its lock is let go, its files stay. With no
/// looking again by the clock to speak of, the load that waits for it is
/// woken by the directory's watch (the lock file closed) and starts
/// another.
#[tokio::test]
async fn a_waiting_load_is_woken_when_the_module_in_the_directory_dies() {
    let sightings = Arc::new(FakeSightings::watchable());
    let mut fx = Fixture::new(64 * 1024, |config| {
        config.reattach_wait = Duration::from_secs(3600);
        config.reattach_poll = Duration::from_secs(3600);
        config.sightings = Some(sightings.clone());
    });
    // A record and its lock, held by this "process" (a descriptor of ours).
    let record = module_record("echo", Uuid::new_v4());
    let nodes = fx.host.mesh.nodes_dir();
    std::fs::write(nodes.join(format!("{}.json", record.id)), serde_json::to_vec(&record).unwrap()).unwrap();
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(nodes.join(format!("{}.lock", record.id)))
        .unwrap();
    lock.lock().unwrap();
    assert_eq!(polis_discovery::Discovery::list(&fx.host.mesh).unwrap().nodes, std::slice::from_ref(&record));

    let host = fx.host.clone();
    let load = tokio::spawn(async move { host.instance("echo").await });
    // The sightings (empty) are watched once the directory is: from then
    // on, the lock let go below is a change kept for the load's wait.
    soon(sightings.watched.subscribe().wait_for(|&n| n == 1)).await.unwrap();
    assert!(fx.launched.try_recv().is_err(), "nothing started while the module is on its way");
    assert!(!load.is_finished());

    drop(lock);
    let mut fake = fx.next_launch().await;
    fake.handshake().await;
    soon(load).await.unwrap().expect("the load succeeds");
    assert!(nodes.join(format!("{}.json", record.id)).exists(), "the dead record was left in place");
}

/// A module this router spawned crashes: its record elsewhere lingers
/// until its lease lapses, but it is not on its way back (it was reaped
/// here), so its restart does not wait for it.
#[tokio::test]
async fn the_record_of_a_process_reaped_here_does_not_hold_its_restart() {
    let sightings = Arc::new(FakeSightings::default());
    let mut fx = Fixture::new(64 * 1024, |config| {
        config.reattach_wait = Duration::from_secs(60);
        config.sightings = Some(sightings.clone());
    });
    let (_instance, fake) = fx.loaded("always").await;
    sightings.records.lock().unwrap().push(module_record("always", fake.node_id));
    fake.exit(1);
    // `restart = "always"`: started again at once, not after 60 s.
    let mut again = fx.next_launch().await;
    again.handshake().await;
    assert_eq!(fx.state("always").restarts, 1);
}
