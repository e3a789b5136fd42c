//! Events (publish / subscribe) with real processes: a module's events
//! reaching Rust frontends and `polis watch`, the router's own events, a
//! stalled subscriber lagging alone, subscriptions surviving a router
//! SIGKILL, JSON-RPC modules, and bad input.

use std::time::Duration;

use polis_client::{Client, ClientOptions, Notice, Subscription};
use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind},
    preamble,
    transport::LocalConn,
};
use polis_testing::TestMesh;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::util::{ECHO, WAIT, mesh};

async fn client(mesh: &TestMesh, name: &str) -> Client {
    let options =
        ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new(name) };
    Client::connect(options).await.expect("connect")
}

/// The next event of `sub` (lag notices are a failure here), within [`WAIT`].
async fn event(sub: &mut Subscription) -> polis_client::Event {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Notice::Event(event))) => event,
        other => panic!("expected an event within {WAIT:?}, got {other:?}"),
    }
}

/// A frame connection spoken by hand.
struct Raw {
    reader: FrameReader<ReadHalf<LocalConn>>,
    writer: FrameWriter<WriteHalf<LocalConn>>,
}

impl Raw {
    async fn open(mesh: &TestMesh) -> Raw {
        let mut conn = polis_mesh::transport::connect(&mesh.dir.join("router.sock")).await.expect("connect");
        conn.write_all(&preamble::encode(preamble::VERSION)).await.expect("send the preamble");
        let mut answer = [0; preamble::LEN];
        tokio::time::timeout(WAIT, conn.read_exact(&mut answer)).await.expect("in time").expect("read");
        let (read, write) = tokio::io::split(conn);
        let codec = FrameCodec::new(32 << 20);
        let mut raw = Raw { reader: FrameReader::new(read, codec), writer: FrameWriter::new(write, codec) };
        let hello = pb::SessionHello { node_id: String::new(), name: "raw".into(), ..Default::default() };
        raw.send(Kind::SessionHello(hello)).await;
        assert!(matches!(raw.next().await, Some(Kind::SessionWelcome(_))));
        raw
    }

    async fn send(&mut self, kind: Kind) {
        self.writer.write_frame(&Frame { kind: Some(kind) }).await.expect("send a frame");
    }

    async fn next(&mut self) -> Option<Kind> {
        loop {
            match tokio::time::timeout(WAIT, self.reader.read_frame()).await {
                Ok(Ok(Some(Frame { kind: Some(Kind::Keepalive(_)) }))) => continue,
                Ok(Ok(frame)) => return frame.and_then(|f| f.kind),
                Ok(Err(e)) => panic!("a broken frame from the router: {e}"),
                Err(_) => panic!("no frame from the router within {WAIT:?}"),
            }
        }
    }

    async fn subscribe(&mut self, id: u64, pattern: &str) -> Option<pb::Error> {
        self.send(Kind::Subscribe(pb::Subscribe { id, pattern: pattern.into() })).await;
        match self.next().await {
            Some(Kind::Subscribed(s)) if s.id == id => s.error,
            other => panic!("expected Subscribed {id}, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, data: Vec<u8>) {
        let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: data.into() };
        self.send(Kind::Publish(pb::Publish { topic: topic.into(), payload: Some(payload) })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modules_event_reaches_two_frontends_and_polis_watch() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let (a, b) = (client(&mesh, "a").await, client(&mesh, "b").await);
    let mut on_a = a.subscribe("notes.*").await.expect("subscribe a");
    let mut on_b = b.subscribe("notes.changed").await.expect("subscribe b");
    let mut unrelated = b.subscribe("other.*").await.expect("subscribe b again");
    let mut watcher = tokio::task::block_in_place(|| mesh.watch("notes.*"));

    let params = json!({"topic": "notes.changed", "value": {"file": "a.norg", "n": 1}});
    a.call_json("echo", "publish", &params, None).await.expect("the module publishes");
    for sub in [&mut on_a, &mut on_b] {
        let got = event(sub).await;
        assert_eq!((got.topic.as_str(), got.publisher.as_str()), ("notes.changed", "echo"));
        assert_eq!(got.json().unwrap(), json!({"file": "a.norg", "n": 1}));
    }
    let line = tokio::task::block_in_place(|| watcher.line());
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"topic": "notes.changed", "value": {"file": "a.norg", "n": 1}})
    );

    // A frontend's own publish, and a topic that only one pattern matches.
    b.publish("notes.saved", &json!(2)).expect("publish");
    assert_eq!(event(&mut on_a).await.topic, "notes.saved");
    b.publish("other.thing", &json!(3)).expect("publish");
    assert_eq!(event(&mut unrelated).await.json().unwrap(), json!(3));
    let line = tokio::task::block_in_place(|| watcher.line());
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), json!({"topic": "notes.saved", "value": 2}));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_subscribes_through_the_sdk() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let c = client(&mesh, "c").await;
    let mut items =
        c.call_stream("echo", "watch", &json!({"pattern": "ping.*", "count": 2})).await.expect("watch");
    assert_eq!(next(&mut items).await, json!("subscribed"));
    c.publish("ping.one", &json!({"n": 1})).expect("publish");
    c.publish("pong.skipped", &json!(0)).expect("publish");
    c.publish("ping.two", &json!([2])).expect("publish");
    assert_eq!(next(&mut items).await, json!({"topic": "ping.one", "value": {"n": 1}}));
    assert_eq!(next(&mut items).await, json!({"topic": "ping.two", "value": [2]}));
    c.close().await;
}

async fn next(items: &mut polis_client::CallStream) -> Value {
    let item = tokio::time::timeout(WAIT, items.next_payload()).await.expect("in time");
    serde_json::from_slice(&item.expect("an item").expect("not an error")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_announces_a_module_that_starts_and_crashes() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "restart = \"never\"");
    let router = mesh.start_router(&[]);
    let c = client(&mesh, "c").await;
    let mut lifecycle = c.subscribe("polis.module.*").await.expect("subscribe");
    c.call_json("echo", "ping", &Value::Null, None).await.expect("ping starts echo");
    let started = event(&mut lifecycle).await;
    assert_eq!((started.topic.as_str(), started.publisher.as_str()), ("polis.module.started", "router"));
    let started = started.json().unwrap();
    assert_eq!(started["module"], "echo");
    let epoch = mesh.router().unwrap().epoch.unwrap();
    assert_eq!(started["epoch"], epoch);
    let pid = started["pid"].as_u64().expect("a pid") as i32;
    assert!(polis_testing::procs::is_running(pid as u32), "the announced pid is echo's");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL echo");
    let crashed = event(&mut lifecycle).await;
    assert_eq!(crashed.topic, "polis.module.crashed");
    let crashed = crashed.json().unwrap();
    assert_eq!((crashed["module"].as_str(), crashed["pid"].as_i64()), (Some("echo"), Some(pid as i64)));
    assert!(crashed["reason"].as_str().unwrap().contains("signal 9"), "{crashed}");

    // Loaded again, then unloaded: started, then stopped (not crashed).
    tokio::task::block_in_place(|| {
        mesh.run(&["module", "load", "echo"]).code(0);
    });
    let again = event(&mut lifecycle).await;
    assert_eq!(again.topic, "polis.module.started");
    let new_pid = again.json().unwrap()["pid"].clone();
    assert_ne!(new_pid, json!(pid), "a new process");
    tokio::task::block_in_place(|| {
        mesh.run(&["module", "unload", "echo"]).code(0);
    });
    let stopped = event(&mut lifecycle).await;
    assert_eq!(stopped.topic, "polis.module.stopped");
    let stopped = stopped.json().unwrap();
    assert_eq!((stopped["module"].as_str(), &stopped["pid"]), (Some("echo"), &new_pid));
    assert!(stopped["reason"].as_str().unwrap().contains("stopped by the router"), "{stopped}");
    drop(router);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_lags_alone() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    // Subscribes, then reads nothing until the end.
    let mut stalled = Raw::open(&mesh).await;
    assert!(stalled.subscribe(1, "load.*").await.is_none());
    let live = client(&mesh, "live").await;
    let mut on_live = live.subscribe("load.*").await.expect("subscribe");
    let publisher = client(&mesh, "publisher").await;

    // In rounds, each received in full before the next, so the live
    // subscriber never falls behind; the stalled one takes none of them.
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 1000;
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let n = round * PER_ROUND + i;
            publisher
                .publish("load.tick", &json!({"n": n, "pad": "0123456789abcdef0123456789abcdef"}))
                .unwrap();
        }
        for i in 0..PER_ROUND {
            let got = event(&mut on_live).await.json().unwrap();
            assert_eq!(got["n"], round * PER_ROUND + i, "every event, in the publisher's order");
        }
    }
    // The publisher's calls are served meanwhile: its connection is not held up.
    let status = mesh.run(&["status", "--json"]);
    status.code(0);

    let total = ROUNDS * PER_ROUND;
    let (mut received, mut lost, mut lag_notices, mut last) = (0u64, 0u64, 0, None);
    while received + lost < total {
        match stalled.next().await {
            Some(Kind::Event(e)) => {
                let n =
                    serde_json::from_slice::<Value>(&e.payload.unwrap().data).unwrap()["n"].as_u64().unwrap();
                assert!(last.is_none_or(|l| n > l), "events stay in order");
                last = Some(n);
                received += 1;
            }
            Some(Kind::Lagged(l)) => {
                assert_eq!(l.subscription, 1);
                lost += l.count;
                lag_notices += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(lag_notices > 0 && lost > 0, "the stalled subscriber was told it lagged");
    assert_eq!(received + lost, total, "every event is either delivered or counted as lost");
    assert_eq!(last, Some(total - 1), "after the lag, the newest events");
    live.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_router_sigkill() {
    let mesh = mesh();
    let mut router = mesh.start_router(&[]);
    let standby = tokio::task::block_in_place(|| mesh.start_standby(&[]));
    let c = client(&mesh, "c").await;
    let mut notes = c.subscribe("notes.*").await.expect("subscribe");
    c.publish("notes.before", &json!(1)).unwrap();
    assert_eq!(event(&mut notes).await.topic, "notes.before");

    router.kill();
    tokio::task::block_in_place(|| {
        mesh.wait_for("the standby to take office", || mesh.router().filter(|r| r.pid == standby.pid()))
    });
    match tokio::time::timeout(WAIT, notes.next()).await {
        Ok(Some(Notice::Lagged { count: 0 })) => {}
        other => panic!("expected a lag notice for the router change, got {other:?}"),
    }
    // Published from elsewhere until one arrives: the new subscription is
    // made as the client re-attaches, which this does not wait for.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    let got = loop {
        n += 1;
        tokio::task::block_in_place(|| {
            mesh.run(&["publish", "notes.after", &n.to_string(), "--no-launch"]).code(0);
        });
        if let Ok(Some(notice)) = tokio::time::timeout(Duration::from_millis(200), notes.next()).await {
            break notice;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event after the router change");
    };
    let Notice::Event(got) = got else { panic!("{got:?}") };
    assert_eq!(got.topic, "notes.after");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_clear_errors_and_hurt_nothing_else() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let c = client(&mesh, "c").await;
    let mut all = c.subscribe("*").await.expect("subscribe");

    // A 20 MiB publish: refused before it is sent by the client library...
    let huge = "x".repeat(20 << 20);
    let e = c.publish("big.one", &json!(huge)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.to_string().contains("frame limit"), "{e}");
    // ...and by the router, which ends that connection alone with why.
    let mut raw = Raw::open(&mesh).await;
    raw.publish("big.one", vec![b'x'; 20 << 20]).await;
    match raw.next().await {
        Some(Kind::Error(error)) => {
            assert_eq!(error.code, tonic::Code::ResourceExhausted as i32);
            assert!(error.message.contains("limit"), "{}", error.message);
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }

    // Publishing the router's topics: refused by the libraries and the CLI,
    // dropped by the router from a raw connection.
    let e = c.publish("polis.module.started", &json!({})).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let cli =
        tokio::task::block_in_place(|| mesh.run(&["publish", "polis.router.leaving", "{}", "--no-launch"]));
    cli.code(1);
    assert!(
        cli.stderr().contains("PERMISSION_DENIED") && cli.stderr().contains("router's own"),
        "{}",
        cli.stderr()
    );
    let mut raw = Raw::open(&mesh).await;
    raw.publish("polis.module.crashed", b"{}".to_vec()).await;
    raw.publish("", b"1".to_vec()).await;
    raw.publish("fine.after", b"2".to_vec()).await;
    let got = event(&mut all).await;
    assert_eq!(got.topic, "fine.after", "the refused publishes were dropped, the next one went out");

    // Bad patterns.
    for pattern in ["a*b", "", "*x", "with space"] {
        let e = c.subscribe(pattern).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{pattern:?}: {e}");
        assert!(e.to_string().contains("bad pattern"), "{e}");
    }
    let cli = tokio::task::block_in_place(|| mesh.run(&["watch", "a*b", "--no-launch"]));
    cli.code(1);
    assert!(cli.stderr().contains("INVALID_ARGUMENT"), "{}", cli.stderr());

    // 10 000 subscriptions on one connection: up to the limit, then refused
    // with the limit named; the connection and its subscriptions work on.
    let mut many = Raw::open(&mesh).await;
    for id in 0..10_000u64 {
        many.send(Kind::Subscribe(pb::Subscribe { id, pattern: format!("many.{id}") })).await;
    }
    let (mut ok, mut refused) = (0, 0);
    for id in 0..10_000u64 {
        match many.next().await {
            Some(Kind::Subscribed(s)) => {
                assert_eq!(s.id, id, "answers in order");
                match s.error {
                    None => ok += 1,
                    Some(e) => {
                        assert_eq!(e.code, tonic::Code::ResourceExhausted as i32);
                        assert!(e.message.contains("1024"), "{}", e.message);
                        refused += 1;
                    }
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, refused), (1024, 10_000 - 1024));
    c.publish("many.7", &json!(7)).unwrap();
    match many.next().await {
        Some(Kind::Event(e)) => assert_eq!((e.subscription, e.topic.as_str()), (7, "many.7")),
        other => panic!("{other:?}"),
    }
    // And the first client never noticed any of it.
    c.publish("fine.last", &json!(3)).unwrap();
    for topic in ["many.7", "fine.last"] {
        assert_eq!(event(&mut all).await.topic, topic);
    }
    c.close().await;
}

/// A JSON-RPC module: `sub {pattern}` subscribes (answering with the
/// router's answer), and every event it gets it publishes again on
/// `py.echoed`.
const PYSUB: &str = r#"#!/usr/bin/env python3
import json, sys
def send(m):
    print(json.dumps(m), flush=True)
pending = {}
for line in sys.stdin:
    m = json.loads(line)
    method = m.get("method")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {}})
    elif method == "sub":
        sid = 1000 + m["id"]
        pending[sid] = m["id"]
        send({"jsonrpc": "2.0", "id": sid, "method": "$/subscribe", "params": {"pattern": m["params"]["pattern"]}})
    elif method == "$/event":
        p = m["params"]
        send({"jsonrpc": "2.0", "method": "$/publish", "params": {"topic": "py.echoed",
              "value": {"got": p["value"], "topic": p["topic"], "subscription": p["subscription"]}}})
    elif method is None and m.get("id") in pending:
        call = pending.pop(m["id"])
        if "error" in m:
            send({"jsonrpc": "2.0", "id": call, "error": m["error"]})
        else:
            send({"jsonrpc": "2.0", "id": call, "result": m["result"]})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonrpc_module_subscribes_and_publishes() {
    let mesh = mesh();
    mesh.script_module("pysub", "jsonrpc", PYSUB, "");
    let _router = mesh.start_router(&[]);
    let c = client(&mesh, "c").await;
    let mut echoed = c.subscribe("py.echoed").await.expect("subscribe");
    let answer = c.call_json("pysub", "sub", &json!({"pattern": "ping.*"}), None).await.expect("sub");
    let subscription = answer["subscription"].as_u64().expect("a subscription id");
    c.publish("ping.x", &json!(42)).unwrap();
    let got = event(&mut echoed).await;
    assert_eq!(got.publisher, "pysub");
    assert_eq!(got.json().unwrap(), json!({"got": 42, "topic": "ping.x", "subscription": subscription}));

    let e = c.call_json("pysub", "sub", &json!({"pattern": "a*b"}), None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("bad pattern"), "{e}");
    c.close().await;
}

#[test]
fn a_neovim_callback_gets_an_event_on_the_main_loop() {
    let mesh = mesh();
    // The script connects with launching off: the router must not leave
    // while nvim starts (the harness's linger is 300 ms, and a busy machine
    // takes longer than that to build the library and start nvim).
    crate::neovim::cdylib();
    let _router = mesh.start_router(&["--linger", "never"]);
    let mut nvim = crate::neovim::Nvim::start(
        &mesh,
        "events",
        r##"
  local c = assert(polis.connect{ mesh_dir = MESH, launch = false })
  local got, lagged = {}, nil
  local id = assert(c:subscribe("notes.*", function(topic, value)
    got.topic, got.n = topic, value.n
    got.fast = vim.in_fast_event()
    got.api = pcall(vim.api.nvim_buf_set_lines, 0, 0, -1, false, { "event " .. topic })
  end, function(count) lagged = count end))
  report("bad", c:subscribe("a*b", function() end))
  report("subscribed", id)
  assert(vim.wait(20000, function() return got.topic ~= nil end, 5), "no event")
  report("event", got.topic, got.n, got.fast, got.api, vim.api.nvim_buf_get_lines(0, 0, 1, false)[1])
  report("lagged", lagged)
  c:unsubscribe(id)
  c:close()
"##,
    );
    nvim.wait_line("subscribed");
    mesh.run(&["publish", "notes.changed", r#"{"n": 7}"#, "--no-launch"]).code(0);
    let report = nvim.finish();
    assert_eq!(
        report.get("event"),
        "notes.changed 7 false true event notes.changed",
        "on the main loop, with the API"
    );
    assert_eq!(report.get("lagged"), "nil");
    let bad = report.get("bad");
    assert!(bad.starts_with("nil INVALID_ARGUMENT: bad pattern"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_subscribe_and_publish() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let record = mesh.router().expect("a router");
    let mut grpc = pb::router_client::RouterClient::new(polis_client::dial(&record).await.expect("dial"));
    let mut events =
        grpc.subscribe(pb::SubscribeRequest { pattern: "g.*".into() }).await.expect("subscribe").into_inner();
    // A frame client's event and a gRPC client's both arrive.
    let c = client(&mesh, "c").await;
    c.publish("g.frames", &json!(1)).unwrap();
    let payload = pb::Payload { content_type: polis_mesh::JSON.into(), data: b"2".to_vec().into() };
    let request =
        pb::PublishRequest { topic: "g.grpc".into(), payload: Some(payload), publisher: "py".into() };
    let delivered = grpc.publish(request).await.expect("publish").into_inner().delivered;
    assert_eq!(delivered, 1, "to the one subscription");
    for (topic, publisher, data) in [("g.frames", "c", "1"), ("g.grpc", "py", "2")] {
        let reply = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("an item");
        let Some(pb::subscribe_reply::Kind::Event(e)) = reply.kind else { panic!("{reply:?}") };
        assert_eq!(
            (e.topic.as_str(), e.publisher.as_str(), &e.payload.unwrap().data[..]),
            (topic, publisher, data.as_bytes())
        );
    }
    let bad = grpc.subscribe(pb::SubscribeRequest { pattern: "a*b".into() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let reserved = pb::PublishRequest { topic: "polis.module.started".into(), ..Default::default() };
    let refused = grpc.publish(reserved).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    c.close().await;
}
