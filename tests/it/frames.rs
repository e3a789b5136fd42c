//! Frame sessions on `router.sock`, spoken by hand: the preamble, calls and
//! streams and cancels on one connection, sessions, and every kind of bad
//! input ending that connection alone while the router serves on.

use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind, reply::Outcome},
    preamble,
    transport::LocalConn,
};
use polis_testing::TestMesh;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::util::{ECHO, WAIT, WAITER, mesh};

/// A frame-session client written out by hand.
struct Raw {
    reader: FrameReader<ReadHalf<LocalConn>>,
    writer: FrameWriter<WriteHalf<LocalConn>>,
}

impl Raw {
    /// Connects and exchanges preambles, announcing `version`.
    async fn open_version(mesh: &TestMesh, version: u16) -> Raw {
        let mut conn = polis_mesh::transport::connect(&mesh.dir.join("router.sock")).await.expect("connect");
        conn.write_all(&preamble::encode(version)).await.expect("send the preamble");
        let mut answer = [0; preamble::LEN];
        tokio::time::timeout(WAIT, conn.read_exact(&mut answer)).await.expect("in time").expect("read");
        assert_eq!(
            preamble::decode(&answer),
            Some(preamble::VERSION),
            "the router answers with its preamble"
        );
        let (read, write) = tokio::io::split(conn);
        let codec = FrameCodec::new(32 << 20);
        Raw { reader: FrameReader::new(read, codec), writer: FrameWriter::new(write, codec) }
    }

    async fn open(mesh: &TestMesh) -> Raw {
        Self::open_version(mesh, preamble::VERSION).await
    }

    async fn send(&mut self, kind: Kind) {
        self.writer.write_frame(&Frame { kind: Some(kind) }).await.expect("send a frame");
    }

    /// The next frame, within the harness's deadline; `None` when the router closed.
    async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(WAIT, self.reader.read_frame()).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => panic!("a broken frame from the router: {e}"),
            Err(_) => panic!("no frame from the router within {WAIT:?}"),
        }
    }

    async fn reply(&mut self) -> pb::Reply {
        match self.next().await.map(|f| f.kind) {
            Some(Some(Kind::Reply(reply))) => reply,
            other => panic!("expected a Reply, got {other:?}"),
        }
    }

    /// The Error frame the router sends before it closes, then the close.
    async fn refused(&mut self) -> pb::Error {
        let error = match self.next().await.map(|f| f.kind) {
            Some(Some(Kind::Error(error))) => error,
            other => panic!("expected an Error frame, got {other:?}"),
        };
        assert!(self.next().await.is_none(), "the router closes after its Error");
        error
    }
}

fn request(id: u64, service: &str, method: &str, params: Value, stream: bool) -> Kind {
    let payload = pb::Payload {
        content_type: polis_mesh::JSON.into(),
        data: serde_json::to_vec(&params).unwrap().into(),
    };
    Kind::Request(pb::Request {
        id,
        service: service.into(),
        method: method.into(),
        payload: Some(payload),
        stream,
        ..Default::default()
    })
}

fn value(reply: &pb::Reply) -> Value {
    match &reply.outcome {
        Some(Outcome::Payload(p)) => serde_json::from_slice(&p.data).expect("a JSON payload"),
        other => panic!("expected a payload, got {other:?}"),
    }
}

fn error(reply: &pb::Reply) -> (tonic::Code, String) {
    match &reply.outcome {
        Some(Outcome::Error(e)) => (tonic::Code::from(e.code), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn with_echo(extra_router_args: &[&str]) -> (TestMesh, polis_testing::Process) {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let router = mesh.start_router(extra_router_args);
    (mesh, router)
}

#[tokio::test]
async fn frames_and_grpc_share_one_socket() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    raw.send(request(1, "echo", "echo", json!({"over": "frames"}), false)).await;
    let reply = raw.reply().await;
    assert_eq!((reply.id, reply.more), (1, false));
    assert_eq!(value(&reply), json!({"over": "frames"}));

    // gRPC on the same socket while the frame session stays open.
    let record = mesh.router().expect("a router");
    let mut grpc = pb::router_client::RouterClient::new(polis_client::dial(&record).await.expect("dial"));
    let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: b"\"x\"".to_vec().into() };
    let call = pb::CallRequest {
        service: "echo".into(),
        method: "echo".into(),
        payload: Some(payload),
        ..Default::default()
    };
    let answer = grpc.call(call).await.expect("a gRPC call").into_inner();
    assert_eq!(&answer.payload.unwrap().data[..], b"\"x\"");

    raw.send(request(2, "echo", "ping", Value::Null, false)).await;
    assert_eq!(value(&raw.reply().await), json!("pong"));
}

#[tokio::test]
async fn many_calls_in_flight_on_one_connection_reach_their_own_callers() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    // Later ids sleep less: the replies come back out of order.
    for id in 0..100u64 {
        raw.send(request(id, "echo", "sleep", json!({"ms": 200 - 2 * id}), false)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..100 {
        let reply = raw.reply().await;
        assert_eq!(value(&reply), json!({"slept_ms": 200 - 2 * reply.id}), "reply {} is its own", reply.id);
        seen.push(reply.id);
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "every call answered once");
    assert_ne!(seen, sorted, "answered as they finished, not in order of asking");
}

#[tokio::test]
async fn a_stream_sends_its_items_then_its_end() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    raw.send(request(7, "echo", "stream", json!({"count": 3, "interval_ms": 1}), true)).await;
    let mut items = Vec::new();
    loop {
        let reply = raw.reply().await;
        assert_eq!(reply.id, 7);
        if reply.outcome.is_some() {
            items.push(value(&reply));
        }
        if !reply.more {
            break;
        }
    }
    assert_eq!(items.len(), 3, "{items:?}");
}

#[tokio::test]
async fn cancel_and_a_departed_client_cancel_the_request_in_the_module() {
    let mesh = mesh();
    mesh.script_module("waiter", "jsonrpc", WAITER, "");
    let _router = mesh.start_router(&[]);
    mesh.run(&["module", "load", "waiter"]).code(0);
    let cancels = mesh.modules.join("waiter/cancels");
    let count = || std::fs::read_to_string(&cancels).unwrap_or_default().lines().count();

    let calls = |n: u64| {
        mesh.wait_for("the calls to reach the module", || {
            (mesh.run(&["status", "--json"]).json()["modules"][0]["calls"] == n).then_some(())
        })
    };
    let mut raw = Raw::open(&mesh).await;
    raw.send(request(1, "waiter", "wait", Value::Null, false)).await;
    // A call cancelled before it reaches the module is never sent at all.
    calls(1);
    raw.send(Kind::Cancel(pb::Cancel { id: 1 })).await;
    mesh.wait_for("the module to hear the cancel", || (count() == 1).then_some(()));

    raw.send(request(2, "waiter", "wait", Value::Null, false)).await;
    raw.send(request(3, "waiter", "wait", Value::Null, true)).await;
    calls(3);
    drop(raw);
    mesh.wait_for("the module to hear both cancels", || (count() == 3).then_some(()));
}

#[tokio::test]
async fn a_session_over_frames_is_counted_until_goodbye() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    let hello = pb::SessionHello {
        node_id: "n1".into(),
        name: "raw".into(),
        pid: 42,
        client_version: "0".into(),
        ..Default::default()
    };
    raw.send(Kind::SessionHello(hello)).await;
    let welcome = match raw.next().await.map(|f| f.kind) {
        Some(Some(Kind::SessionWelcome(w))) => w,
        other => panic!("expected SessionWelcome, got {other:?}"),
    };
    assert_eq!(welcome.epoch, 1);
    assert_eq!(welcome.router_id, mesh.router().unwrap().id.to_string());
    raw.send(Kind::Keepalive(pb::Keepalive { seq: 9 })).await;
    assert!(matches!(raw.next().await.and_then(|f| f.kind), Some(Kind::Keepalive(pb::Keepalive { seq: 9 }))));

    let sessions = |mesh: &TestMesh| mesh.run(&["status", "--json"]).json()["sessions"].clone();
    assert_eq!(sessions(&mesh)[0]["name"], "raw");
    assert_eq!(sessions(&mesh)[0]["pid"], 42);
    raw.send(Kind::Goodbye(pb::Goodbye {})).await;
    assert!(raw.next().await.is_none(), "goodbye ends the connection");
    mesh.wait_for("the session to end", || (sessions(&mesh) == json!([])).then_some(()));
}

#[tokio::test]
async fn a_silent_session_is_dropped_after_its_keepalive_timeout() {
    let (mesh, _router) = with_echo(&["--keepalive-timeout", "1s", "--linger", "1h"]);
    let mut raw = Raw::open(&mesh).await;
    let hello = pb::SessionHello { name: "silent".into(), ..Default::default() };
    raw.send(Kind::SessionHello(hello)).await;
    assert!(matches!(raw.next().await.and_then(|f| f.kind), Some(Kind::SessionWelcome(_))));
    assert!(raw.next().await.is_none(), "the router closes a session that sends nothing");
    mesh.wait_for("the session to be gone", || {
        (mesh.run(&["status", "--json"]).json()["sessions"] == json!([])).then_some(())
    });
}

#[tokio::test]
async fn the_router_says_it_is_leaving_before_it_goes() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    raw.send(Kind::SessionHello(pb::SessionHello { name: "stays".into(), ..Default::default() })).await;
    assert!(matches!(raw.next().await.and_then(|f| f.kind), Some(Kind::SessionWelcome(_))));
    mesh.run(&["stop"]).code(0);
    match raw.next().await.and_then(|f| f.kind) {
        Some(Kind::Leaving(leaving)) => assert!(!leaving.handover, "a stop is no handover: {leaving:?}"),
        other => panic!("expected RouterLeaving, got {other:?}"),
    }
    assert!(raw.next().await.is_none());
}

// ---- bad input: each ends its own connection, and nothing else ----

/// Another client's call still succeeds: the router was hurt by nothing.
async fn still_serving(mesh: &TestMesh) {
    let mut raw = Raw::open(mesh).await;
    raw.send(request(1, "echo", "ping", Value::Null, false)).await;
    assert_eq!(value(&raw.reply().await), json!("pong"));
}

#[tokio::test]
async fn garbage_after_the_preamble_is_refused() {
    let (mesh, _router) = with_echo(&[]);
    let raw = Raw::open(&mesh).await;
    // A length prefix, then bytes that are no protobuf Frame.
    let mut write = raw.writer.into_inner();
    write.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let mut raw = Raw { reader: raw.reader, writer: FrameWriter::new(write, FrameCodec::new(1024)) };
    let error = raw.refused().await;
    assert_eq!(tonic::Code::from(error.code), tonic::Code::InvalidArgument, "{error:?}");
    assert!(error.message.contains("malformed frame"), "{error:?}");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn a_frame_a_frontend_does_not_send_is_refused() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    raw.send(Kind::Hello(pb::Hello { name: "echo".into(), ..Default::default() })).await;
    let error = raw.refused().await;
    assert_eq!(tonic::Code::from(error.code), tonic::Code::InvalidArgument);
    assert!(error.message.contains("does not send Hello frames"), "{error:?}");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn another_version_is_refused_with_the_router_s_own() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open_version(&mesh, 99).await;
    let error = raw.refused().await;
    assert_eq!(tonic::Code::from(error.code), tonic::Code::FailedPrecondition);
    assert!(error.message.contains("version 99"), "{error:?}");
    assert!(
        error.message.ends_with(&format!("upgrade the router (polis {})", env!("CARGO_PKG_VERSION"))),
        "{error:?}"
    );
    still_serving(&mesh).await;
}

#[tokio::test]
async fn a_request_id_reused_while_in_flight_is_refused_and_the_first_goes_on() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    raw.send(request(5, "echo", "sleep", json!({"ms": 300}), false)).await;
    raw.send(request(5, "echo", "ping", Value::Null, false)).await;
    let refused = raw.reply().await;
    let (code, message) = error(&refused);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(message.contains("request id 5 is already in flight"), "{message}");
    assert_eq!(value(&raw.reply().await), json!({"slept_ms": 300}));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused() {
    let (mesh, _router) = with_echo(&["--max-frame", "4096"]);
    let mut raw = Raw::open(&mesh).await;
    let big = "x".repeat(200 * 1024);
    raw.send(request(1, "echo", "echo", json!(big), false)).await;
    let error = raw.refused().await;
    assert_eq!(tonic::Code::from(error.code), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(error.message.contains("exceeds the limit"), "{error:?}");
    still_serving(&mesh).await;
}

#[tokio::test]
async fn ten_thousand_calls_in_flight_are_bounded_with_resource_exhausted() {
    let (mesh, _router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    let frames: Vec<Frame> = (0..10_000u64)
        .map(|id| Frame { kind: Some(request(id, "echo", "sleep", json!({"ms": 2000}), false)) })
        .collect();
    // Written while the replies are read: the refusals come back at once.
    let (reader, writer) = (&mut raw.reader, &mut raw.writer);
    let read = async {
        let (mut answered, mut exhausted) = (0, 0);
        for _ in 0..10_000 {
            let frame =
                tokio::time::timeout(WAIT, reader.read_frame()).await.expect("in time").expect("a frame");
            match frame.and_then(|f| f.kind) {
                Some(Kind::Reply(pb::Reply { outcome: Some(Outcome::Payload(_)), .. })) => answered += 1,
                Some(Kind::Reply(pb::Reply { outcome: Some(Outcome::Error(e)), .. })) => {
                    assert_eq!(tonic::Code::from(e.code), tonic::Code::ResourceExhausted, "{e:?}");
                    exhausted += 1;
                }
                other => panic!("expected a reply, got {other:?}"),
            }
        }
        (answered, exhausted)
    };
    let (written, (answered, exhausted)) = tokio::join!(writer.write_frames(&frames), read);
    written.expect("write the requests");
    assert_eq!(answered + exhausted, 10_000);
    assert!(answered >= 1 && exhausted >= 1, "{answered} answered, {exhausted} refused");
    still_serving(&mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_slows_no_one() {
    let (mesh, router) = with_echo(&[]);
    let mut raw = Raw::open(&mesh).await;
    // Streams of large items that this client never reads: the socket
    // fills, then the router's queue for this connection.
    let item = "y".repeat(64 * 1024);
    for id in 0..64 {
        raw.send(request(id, "echo", "echo", json!(item), false)).await;
    }
    // Meanwhile another client is served.
    still_serving(&mesh).await;
    tokio::task::block_in_place(|| {
        mesh.wait_for("the router to give up on the client", || {
            router.stderr().contains("took no replies").then_some(())
        })
    });
    // What was written before the router gave up drains, then the end.
    let mut reader = raw.reader;
    let drained = tokio::time::timeout(WAIT, async { while let Ok(Some(_)) = reader.read_frame().await {} });
    drained.await.expect("the connection ends");
    still_serving(&mesh).await;
}
