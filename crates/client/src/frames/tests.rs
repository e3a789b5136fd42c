//! The frame transport against a fake router: a real Unix socket in a short
//! temp dir, the test playing the router with raw frames.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use polis_discovery::{Campaign, Discovery, MeshDir, NodeGuard, NodeRecord, Role, Term};
use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, frame::Kind, reply::Outcome},
    preamble,
    transport::{self, LocalConn, LocalListener},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{Ended, FrameConn, FrameSession, conn::MAX_FRAME_LEN};
use crate::{CallOptions, Caller, Client, ClientOptions, ConnectError, Transport, call};

/// Every wait in these tests; generous, since the machine is shared.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pc").tempdir_in("/tmp").unwrap()
}

/// A socket the test answers as the router would.
struct FakeRouter {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: LocalListener,
}

impl FakeRouter {
    fn new() -> Self {
        let dir = temp_dir();
        let path = dir.path().join("r.sock");
        let listener = transport::bind(&path).unwrap();
        Self { _dir: dir, path, listener }
    }

    async fn accept_raw(&self) -> LocalConn {
        within("a connection", self.listener.accept()).await.unwrap()
    }

    /// Accepts a connection, checks the client's preamble and answers it.
    async fn accept(&self) -> Peer {
        Peer::answer(self.accept_raw().await).await
    }
}

/// The router's end of one connection.
struct Peer {
    reader: FrameReader<ReadHalf<LocalConn>>,
    writer: FrameWriter<WriteHalf<LocalConn>>,
}

impl Peer {
    async fn answer(mut conn: LocalConn) -> Peer {
        let mut theirs = [0; preamble::LEN];
        within("the client's preamble", conn.read_exact(&mut theirs)).await.unwrap();
        assert_eq!(theirs, preamble::encode(preamble::VERSION), "the client opens with the polis preamble");
        conn.write_all(&preamble::encode(preamble::VERSION)).await.unwrap();
        let (read, write) = tokio::io::split(conn);
        let codec = FrameCodec::new(MAX_FRAME_LEN);
        Peer { reader: FrameReader::new(read, codec), writer: FrameWriter::new(write, codec) }
    }

    async fn recv(&mut self) -> Kind {
        let frame = within("a frame", self.reader.read_frame()).await.unwrap().expect("a frame, not the end");
        frame.kind.expect("a frame with a kind")
    }

    async fn request(&mut self) -> pb::Request {
        match self.recv().await {
            Kind::Request(request) => request,
            other => panic!("expected a Request, got {other:?}"),
        }
    }

    /// The next frame, or `None` at the clean end of the connection.
    async fn recv_or_end(&mut self) -> Option<Kind> {
        within("a frame or the end", self.reader.read_frame()).await.unwrap().map(|f| f.kind.unwrap())
    }

    async fn send(&mut self, kind: Kind) {
        self.writer.write_frame(&pb::Frame { kind: Some(kind) }).await.unwrap();
    }

    async fn reply(&mut self, id: u64, data: &'static [u8], more: bool) {
        let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(data) };
        self.send(Kind::Reply(pb::Reply { id, outcome: Some(Outcome::Payload(payload)), more })).await;
    }
}

fn request(service: &str, method: &str, data: &'static [u8], stream: bool) -> pb::Request {
    pb::Request {
        id: 0,
        method: method.into(),
        payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(data) }),
        caller: "test".into(),
        timeout_ms: 0,
        service: service.into(),
        stream,
        ..Default::default()
    }
}

async fn open(router: &FakeRouter) -> (FrameConn, Peer) {
    let (conn, peer) = tokio::join!(FrameConn::open(&router.path), router.accept());
    (conn.unwrap().0, peer)
}

#[tokio::test]
async fn the_client_opens_with_the_preamble_and_takes_a_router_of_another_version() {
    let router = FakeRouter::new();
    let serve = async {
        let mut conn = router.accept_raw().await;
        let mut theirs = [0; preamble::LEN];
        conn.read_exact(&mut theirs).await.unwrap();
        // A newer router announces the version it speaks, and serves it.
        conn.write_all(&preamble::encode(preamble::VERSION + 1)).await.unwrap();
        theirs
    };
    let (conn, theirs) = tokio::join!(within("open", FrameConn::open(&router.path)), serve);
    assert_eq!(&theirs[..], b"POLIS\0\0\x01");
    assert!(!conn.unwrap().0.is_closed());
}

#[tokio::test]
async fn a_peer_that_is_not_a_polis_router_is_a_clear_error() {
    let router = FakeRouter::new();
    let serve = async {
        let mut conn = router.accept_raw().await;
        // What an HTTP/2 server sends first: a SETTINGS frame.
        conn.write_all(b"\0\0\x12\x04\0\0\0\0\0").await.unwrap();
        conn
    };
    let (opened, _conn) = tokio::join!(within("open", FrameConn::open(&router.path)), serve);
    let err = opened.unwrap_err();
    assert!(matches!(err, ConnectError::NotARouter { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a polis router"), "{err}");
    assert!(err.to_string().contains("POLIS_TRANSPORT=grpc"), "it says what to do: {err}");

    // One that hangs up instead of answering.
    let serve = async { drop(router.accept_raw().await) };
    let (opened, ()) = tokio::join!(within("open", FrameConn::open(&router.path)), serve);
    let err = opened.unwrap_err();
    assert!(err.to_string().contains("hung up without answering the preamble"), "{err}");
}

#[tokio::test]
async fn a_unary_call_round_trips_with_its_fields() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let serve = async {
        let request = peer.request().await;
        peer.reply(request.id, b"\"pong\"", false).await;
        request
    };
    let (reply, request) =
        tokio::join!(within("the reply", conn.unary(request("echo", "ping", b"{}", false))), serve);
    assert_eq!(reply.unwrap(), Bytes::from_static(b"\"pong\""));
    assert_eq!(
        (request.service.as_str(), request.method.as_str(), request.caller.as_str()),
        ("echo", "ping", "test")
    );
    assert_eq!(request.payload.unwrap().data, Bytes::from_static(b"{}"));
    assert!(!request.stream);
}

#[tokio::test]
async fn the_request_carries_the_timeout_and_an_error_reply_keeps_its_code() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let route = || {
        let route = call::Route::Frames(conn.clone());
        async move { Ok(route) }
    };
    let options =
        CallOptions { timeout: Some(Duration::from_millis(1500)), idempotent: false, ..Default::default() };
    let serve = async {
        let request = peer.request().await;
        let error = pb::Error { code: Code::NotFound as i32, message: "no module named nope".into() };
        peer.send(Kind::Reply(pb::Reply {
            id: request.id,
            outcome: Some(Outcome::Error(error)),
            more: false,
        }))
        .await;
        request
    };
    let (result, request) = tokio::join!(
        within("the reply", call::unary(route, "me", "nope", "m", Bytes::new(), options)),
        serve
    );
    assert_eq!(request.timeout_ms, 1500);
    assert_eq!(request.caller, "me");
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.to_string(), "NOT_FOUND: no module named nope");
}

#[tokio::test]
async fn a_hundred_calls_in_flight_on_one_connection_reach_their_own_callers() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let conn = conn.clone();
        calls.spawn(async move {
            let data = Bytes::from(i.to_string());
            let mut req = request("echo", "echo", b"", false);
            req.payload.as_mut().unwrap().data = data.clone();
            (data, conn.unary(req).await)
        });
    }
    let mut requests = Vec::new();
    for _ in 0..100 {
        requests.push(peer.request().await);
    }
    let mut ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100, "ids are unique among the calls in flight");
    // Answered in reverse order, each with its own payload.
    for request in requests.iter().rev() {
        let data = request.payload.as_ref().unwrap().data.clone();
        let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data };
        peer.send(Kind::Reply(pb::Reply {
            id: request.id,
            outcome: Some(Outcome::Payload(payload)),
            more: false,
        }))
        .await;
    }
    let mut answered = 0;
    while let Some(joined) = within("the calls", calls.join_next()).await {
        let (sent, reply) = joined.unwrap();
        assert_eq!(reply.unwrap(), sent, "each caller gets its own reply");
        answered += 1;
    }
    assert_eq!(answered, 100);
}

#[tokio::test]
async fn a_stream_delivers_its_items_one_by_one_then_its_end() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let mut items = conn.stream(request("echo", "stream", b"", true)).unwrap();
    let req = peer.request().await;
    assert!(req.stream);

    peer.reply(req.id, b"1", true).await;
    // The first item arrives while the router has sent nothing more.
    assert_eq!(within("item 1", items.next()).await.unwrap().unwrap(), Bytes::from_static(b"1"));
    peer.reply(req.id, b"2", true).await;
    assert_eq!(within("item 2", items.next()).await.unwrap().unwrap(), Bytes::from_static(b"2"));
    // The bare end: a final reply without an outcome.
    peer.send(Kind::Reply(pb::Reply { id: req.id, outcome: None, more: false })).await;
    assert!(within("the end", items.next()).await.is_none());

    // A final reply may carry the last item, or an error.
    let mut last = conn.stream(request("echo", "stream", b"", true)).unwrap();
    let mut failing = conn.stream(request("echo", "stream", b"", true)).unwrap();
    let (a, b) = (peer.request().await, peer.request().await);
    peer.reply(a.id, b"\"last\"", false).await;
    let error =
        pb::Error { code: Code::Unavailable as i32, message: "module echo exited with status 3".into() };
    peer.send(Kind::Reply(pb::Reply { id: b.id, outcome: Some(Outcome::Error(error)), more: false })).await;
    assert_eq!(within("the last item", last.next()).await.unwrap().unwrap(), Bytes::from_static(b"\"last\""));
    assert!(within("the end", last.next()).await.is_none());
    let err = within("the error", failing.next()).await.unwrap().unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unavailable, "module echo exited with status 3"));
    assert!(within("the end", failing.next()).await.is_none());
}

#[tokio::test]
async fn dropping_a_call_before_its_final_reply_sends_cancel() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;

    // A finished call sends nothing more.
    let (reply, ()) = tokio::join!(conn.unary(request("echo", "ping", b"", false)), async {
        let req = peer.request().await;
        peer.reply(req.id, b"1", false).await;
    });
    reply.unwrap();

    // A unary call dropped while in flight.
    let unary = tokio::spawn({
        let conn = conn.clone();
        async move { conn.unary(request("echo", "sleep", b"", false)).await }
    });
    let first = peer.request().await;
    assert_eq!(first.method, "sleep", "the finished call sent no cancel");
    unary.abort();
    assert_eq!(peer.recv().await, Kind::Cancel(pb::Cancel { id: first.id }));

    // A stream dropped after its first item.
    let mut items = conn.stream(request("echo", "stream", b"", true)).unwrap();
    let second = peer.request().await;
    peer.reply(second.id, b"1", true).await;
    within("item 1", items.next()).await.unwrap().unwrap();
    drop(items);
    assert_eq!(peer.recv().await, Kind::Cancel(pb::Cancel { id: second.id }));
}

/// A call that no router ran is marked so, and only then: one in flight
/// when a router that said it was leaving closes (it answers every call it
/// accepted first), one started after it said so, one on a closed
/// connection. A call in flight when a router just dies is not.
#[tokio::test]
async fn calls_a_leaving_router_never_read_are_marked_not_run() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let died = tokio::spawn({
        let conn = conn.clone();
        async move { conn.unary(request("echo", "sleep", b"", false)).await }
    });
    peer.request().await;
    drop(peer);
    let err = within("the call", died).await.unwrap().unwrap_err();
    assert!(!super::was_not_run(&err), "it may have run: {err:?}");
    let later = within("a later call", conn.unary(request("echo", "ping", b"", false))).await.unwrap_err();
    assert!(super::was_not_run(&later), "it never left this process: {later:?}");

    let (conn, mut peer) = open(&router).await;
    let unread = tokio::spawn({
        let conn = conn.clone();
        async move { conn.unary(request("echo", "sleep", b"", false)).await }
    });
    peer.request().await;
    assert!(conn.is_usable());
    peer.send(Kind::Leaving(pb::RouterLeaving { handover: false, reason: "stopping".into() })).await;
    within("the client to hear it", async {
        while conn.is_usable() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let refused =
        within("a call after leaving", conn.unary(request("echo", "ping", b"", false))).await.unwrap_err();
    assert!(super::was_not_run(&refused), "{refused:?}");
    drop(peer);
    let err = within("the unread call", unread).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(super::was_not_run(&err), "the leaving router closed without reading it: {err:?}");
}

#[tokio::test]
async fn the_connection_ending_fails_calls_in_flight_with_unavailable() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let mut items = conn.stream(request("echo", "stream", b"", true)).unwrap();
    let unary = tokio::spawn({
        let conn = conn.clone();
        async move { conn.unary(request("echo", "sleep", b"", false)).await }
    });
    peer.request().await;
    peer.request().await;
    drop(peer);

    let err = within("the call", unary).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().starts_with("the router went away during the call ("), "{}", err.message());
    let err = within("the stream", items.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(conn.is_closed());
    // A later call fails at once, the same way.
    let err = within("a later call", conn.unary(request("echo", "ping", b"", false))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn an_error_frame_fails_calls_in_flight_with_its_code() {
    let router = FakeRouter::new();
    let (conn, mut peer) = open(&router).await;
    let unary = tokio::spawn({
        let conn = conn.clone();
        async move { conn.unary(request("echo", "sleep", b"", false)).await }
    });
    peer.request().await;
    let message = "frame of 20000000 bytes exceeds the limit of 16777216 bytes".to_owned();
    peer.send(Kind::Error(pb::Error { code: Code::ResourceExhausted as i32, message: message.clone() }))
        .await;

    let err = within("the call", unary).await.unwrap().unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::ResourceExhausted, message.as_str()));
    let err = within("a later call", conn.unary(request("echo", "ping", b"", false))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "the connection is closed for that reason");
}

fn hello() -> pb::SessionHello {
    pb::SessionHello {
        node_id: "n1".into(),
        name: "nvim".into(),
        pid: 42,
        client_version: "0.1.0".into(),
        ..Default::default()
    }
}

async fn open_session(router: &FakeRouter, keepalive_interval_ms: u64) -> (FrameSession, Peer) {
    let serve = async {
        let mut peer = router.accept().await;
        assert_eq!(peer.recv().await, Kind::SessionHello(hello()), "the session opens with SessionHello");
        let welcome = pb::SessionWelcome {
            router_id: "r1".into(),
            epoch: 7,
            keepalive_interval_ms,
            ..Default::default()
        };
        peer.send(Kind::SessionWelcome(welcome)).await;
        peer
    };
    let (session, peer) =
        tokio::join!(within("the session", FrameSession::open(&router.path, hello())), serve);
    (session.unwrap(), peer)
}

#[tokio::test]
async fn a_session_says_hello_keeps_alive_and_says_goodbye() {
    let router = FakeRouter::new();
    let (mut session, mut peer) = open_session(&router, 5000).await;
    assert_eq!(session.welcome().epoch, 7);

    // Paused only now: with real sockets, auto-advancing time may fire a
    // timer while bytes are in flight, so nothing below bounds I/O tightly.
    // Only the keepalive interval and these long (virtual) waits remain.
    tokio::time::pause();
    let virtual_deadline = Duration::from_secs(3600);
    let closed = CancellationToken::new();
    let hold = tokio::spawn({
        let closed = closed.clone();
        async move { session.hold(&closed).await }
    });
    let start = tokio::time::Instant::now();
    for seq in 1..=3 {
        let frame = tokio::time::timeout(virtual_deadline, peer.reader.read_frame()).await.unwrap();
        assert_eq!(frame.unwrap().unwrap().kind, Some(Kind::Keepalive(pb::Keepalive { seq })));
        // The router echoes keepalives; the client ignores the echoes.
        peer.send(Kind::Keepalive(pb::Keepalive { seq })).await;
    }
    // The first goes at once, then one per interval: never faster.
    assert!(start.elapsed() >= Duration::from_secs(10), "keepalives came after {:?}", start.elapsed());

    closed.cancel();
    loop {
        let frame = tokio::time::timeout(virtual_deadline, peer.reader.read_frame()).await.unwrap();
        match frame.unwrap().and_then(|f| f.kind) {
            Some(Kind::Keepalive(_)) => {}
            other => {
                assert_eq!(other, Some(Kind::Goodbye(pb::Goodbye {})));
                break;
            }
        }
    }
    // This router keeps its end open: the client closes the connection anyway.
    let end = tokio::time::timeout(virtual_deadline, peer.reader.read_frame()).await.unwrap();
    assert!(end.unwrap().is_none(), "the connection is closed after Goodbye");
    assert_eq!(
        tokio::time::timeout(virtual_deadline, hold).await.unwrap().unwrap(),
        None,
        "closed by the client"
    );
}

#[tokio::test]
async fn a_session_ends_when_the_router_leaves_or_hangs_up() {
    let router = FakeRouter::new();
    let closed = CancellationToken::new();

    let (mut session, mut peer) = open_session(&router, 60_000).await;
    let leaving = pb::RouterLeaving { handover: true, reason: "restart".into() };
    peer.send(Kind::Leaving(leaving)).await;
    let ended = within("hold", session.hold(&closed)).await;
    assert_eq!(ended, Some(Ended::Leaving { handover: true, reason: "restart".into() }));

    let (mut session, peer) = open_session(&router, 60_000).await;
    drop(peer);
    assert_eq!(within("hold", session.hold(&closed)).await, Some(Ended::Closed));
}

/// A fake router in office in a real mesh directory: what the client finds
/// through discovery.
struct MeshRouter {
    record: NodeRecord,
    listener: LocalListener,
    _guard: NodeGuard,
    _term: Term,
}

impl MeshRouter {
    fn take_office(mesh: &MeshDir) -> MeshRouter {
        let Campaign::Won(term) = mesh.campaign().unwrap() else { panic!("the office is free") };
        term.remove_stale_socket().unwrap();
        let socket = mesh.router_socket();
        let listener = transport::bind(&socket).unwrap();
        let mut record = NodeRecord::new(Role::Router, "router");
        record.endpoint = Some(format!("unix:{}", socket.display()));
        let guard = mesh.publish(&record).unwrap();
        term.publish_router(&record).unwrap();
        MeshRouter { record, listener, _guard: guard, _term: term }
    }

    async fn accept(&self) -> Peer {
        Peer::answer(within("a connection", self.listener.accept()).await.unwrap()).await
    }

    /// Accepts a session and welcomes it; gives the hello too.
    async fn accept_session(&self) -> (Peer, pb::SessionHello) {
        let mut peer = self.accept().await;
        let Kind::SessionHello(hello) = peer.recv().await else { panic!("expected SessionHello") };
        let welcome = pb::SessionWelcome {
            router_id: self.record.id.to_string(),
            epoch: 1,
            keepalive_interval_ms: 60_000,
            ..Default::default()
        };
        peer.send(Kind::SessionWelcome(welcome)).await;
        (peer, hello)
    }
}

fn frontend(mesh: &MeshDir) -> NodeRecord {
    let nodes = mesh.list().unwrap().nodes;
    nodes.into_iter().find(|n| n.role == Role::Frontend).expect("the frontend's record")
}

#[tokio::test]
async fn a_client_re_attaches_after_router_leaving_and_an_idempotent_call_follows_it() {
    let dir = temp_dir();
    let mesh = MeshDir::open(dir.path().join("m")).unwrap();
    let first = MeshRouter::take_office(&mesh);
    let options = ClientOptions {
        mesh_dir: Some(mesh.root().to_owned()),
        // This test's router serves sessions only, not Admin.
        modules_path: None,
        launch: None,
        transport: Transport::Frames,
        ..ClientOptions::new("t")
    };
    let (client, (mut old, hello)) =
        tokio::join!(within("connect", Client::connect(options)), first.accept_session());
    let client = client.unwrap();
    assert_eq!(frontend(&mesh).router, Some(first.record.id));
    assert_eq!(hello.node_id, frontend(&mesh).id.to_string());

    // An idempotent call in flight when the router goes.
    let options = CallOptions { timeout: Some(DEADLINE), idempotent: true, ..Default::default() };
    let call = client.call_with("counter", "get", Bytes::new(), options);
    let handover = async {
        let lost = old.recv_until_request().await;
        assert_eq!(lost.service, "counter");
        // Out of office first, so that the client finds no router until the next.
        let first_id = first.record.id;
        drop(first);
        old.send(Kind::Leaving(pb::RouterLeaving { handover: true, reason: "restart".into() })).await;
        drop(old);
        let next = MeshRouter::take_office(&mesh);
        let (mut new, rehello) = next.accept_session().await;
        let retried = new.recv_until_request().await;
        assert_eq!(retried.service, "counter");
        new.reply(retried.id, b"5", false).await;
        (first_id, next, new, rehello)
    };
    let (reply, (first_id, next, mut new, rehello)) = tokio::join!(call, handover);
    assert_eq!(
        reply.unwrap(),
        Bytes::from_static(b"5"),
        "the idempotent call was retried on the next router"
    );
    assert_eq!(rehello.node_id, hello.node_id, "the same frontend re-attaches");
    assert_eq!(frontend(&mesh).router, Some(next.record.id), "its record names the next router");
    assert_ne!(first_id, next.record.id);

    // Later calls go to the next router, and closing says goodbye there.
    let (reply, ()) = tokio::join!(client.call("echo", "ping", Bytes::new(), None), async {
        let req = new.recv_until_request().await;
        new.reply(req.id, b"\"pong\"", false).await;
    });
    assert_eq!(reply.unwrap(), Bytes::from_static(b"\"pong\""));
    let (_, ()) = tokio::join!(within("close", client.close()), async move {
        loop {
            match new.recv_or_end().await {
                Some(Kind::Goodbye(_)) => break,
                Some(Kind::Keepalive(_)) => {}
                other => panic!("expected Goodbye, got {other:?}"),
            }
        }
        // As the router does: the session is over, so is the connection.
        drop(new);
    });
}

impl Peer {
    /// The next request, past any keepalives.
    async fn recv_until_request(&mut self) -> pb::Request {
        loop {
            match self.recv().await {
                Kind::Request(request) => return request,
                Kind::Keepalive(_) => {}
                other => panic!("expected a Request, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_caller_reconnects_after_its_connection_broke() {
    let dir = temp_dir();
    let mesh = MeshDir::open(dir.path().join("m")).unwrap();
    let router = MeshRouter::take_office(&mesh);
    let (caller, mut peer) =
        tokio::join!(within("connect", Caller::connect(&mesh, None, "script")), router.accept());
    let caller = caller.unwrap();

    let (result, ()) =
        tokio::join!(caller.call("echo", "ping", Bytes::new(), CallOptions::default()), async {
            let req = peer.request().await;
            assert_eq!(req.caller, "script");
            drop(peer);
        });
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    let (result, ()) =
        tokio::join!(caller.call("echo", "ping", Bytes::new(), CallOptions::default()), async {
            let mut peer = router.accept().await;
            let req = peer.request().await;
            peer.reply(req.id, b"\"pong\"", false).await;
        });
    assert_eq!(result.unwrap(), Bytes::from_static(b"\"pong\""));
}
