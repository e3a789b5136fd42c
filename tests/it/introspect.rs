//! Introspection, the monitor, and versions on a session: modules that
//! declare their methods (Rust SDK, JSON-RPC) and one that does not, the
//! router's NOT_FOUND for a method a module declared it lacks, `polis
//! monitor` seeing calls and events (from modules, frontends and the
//! router) and dropping (counted) what a stalled reader
//! cannot take, a session speaking no protocol the router speaks refused
//! with the documented error, and another uid refused by the monitor.

use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind},
    preamble,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{ECHO, WAIT, mesh};

/// A JSON-RPC module that declares its methods in its `initialize` result.
const DECLARING: &str = r#"#!/usr/bin/env python3
import json, sys
METHODS = [
    {"name": "greet", "doc": "says hello to name",
     "params": {"type": "object", "properties": {"name": {"type": "string"}}},
     "result": {"type": "string"}},
    {"name": "ticks", "doc": "three ticks", "stream": True},
]
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if method == "initialize":
        result = {"name": "declaring", "version": "0.1.0", "methods": METHODS}
    elif method == "greet":
        result = "hello, " + msg["params"]["name"]
    elif mid is not None:
        # The router never lets an undeclared method through: say so loudly.
        result = "the module answered " + method
    else:
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}), flush=True)
"#;

fn pyecho_manifest() -> String {
    let pyecho = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/pyecho/pyecho.py");
    format!("exec = {:?}\nprotocol = \"jsonrpc\"", pyecho.display().to_string())
}

#[test]
fn introspect_shows_a_rust_modules_methods_with_docs_and_schemas() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);

    let run = mesh.run(&["introspect", "echo"]);
    let out = run.code(0).stdout();
    assert!(out.starts_with("echo 0.1.0 (frames)\n"), "{run}");
    let rows: Vec<Vec<&str>> = out.lines().skip(3).map(|l| l.split_whitespace().take(2).collect()).collect();
    let expected = [
        ["crash", "unary"],
        ["echo", "unary"],
        ["fail", "unary"],
        ["ping", "unary"],
        ["publish", "unary"],
        ["sleep", "unary"],
        ["stream", "stream"],
        ["watch", "stream"],
    ];
    assert_eq!(rows, expected, "{run}");
    assert!(out.contains("answers \"pong\""), "{run}");

    let json = mesh.run(&["introspect", "--json", "echo"]).code(0).json();
    assert_eq!(json["declared"], true);
    let stream = json["methods"].as_array().unwrap().iter().find(|m| m["name"] == "stream").unwrap();
    assert_eq!(stream["stream"], true);
    assert_eq!(stream["doc"], "the numbers 0..count, one every interval_ms");
    assert_eq!(stream["params"]["properties"]["count"]["type"], "integer");
    assert_eq!(stream["result"], json!({"type": "integer"}));
}

#[test]
fn introspect_shows_a_jsonrpc_modules_declared_methods() {
    let mesh = mesh();
    mesh.script_module("declaring", "jsonrpc", DECLARING, "");
    let _router = mesh.start_router(&[]);

    // Describe loads the module: nothing was called before.
    let json = mesh.run(&["introspect", "declaring", "--json"]).code(0).json();
    assert_eq!(
        (&json["service"], &json["protocol"], &json["declared"]),
        (&json!("declaring"), &json!("jsonrpc"), &json!(true))
    );
    let methods = json["methods"].as_array().unwrap();
    let names: Vec<&str> = methods.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["greet", "ticks"]);
    assert_eq!(methods[0]["doc"], "says hello to name");
    assert_eq!(methods[0]["params"]["properties"]["name"]["type"], "string");
    assert_eq!(methods[0]["result"], json!({"type": "string"}));
    assert_eq!((&methods[1]["stream"], &methods[1]["params"]), (&json!(true), &Value::Null));

    assert_eq!(
        mesh.run(&["call", "declaring", "greet", r#"{"name":"ada"}"#]).code(0).stdout().trim(),
        "\"hello, ada\""
    );
    // The router answers a method the module did not declare, listing what it has.
    let run = mesh.run(&["call", "declaring", "shout"]);
    assert_eq!(
        run.code(3).error_line(),
        r#"error: NOT_FOUND: module declaring has no method "shout"; it has greet, ticks"#,
        "{run}"
    );
}

#[test]
fn a_module_that_declares_nothing_is_undeclared_and_gets_every_call() {
    let mesh = mesh();
    mesh.manifest("pyecho", &pyecho_manifest());
    let _router = mesh.start_router(&[]);

    let run = mesh.run(&["introspect", "pyecho"]);
    assert_eq!(
        run.code(0).stdout(),
        "pyecho 0.1.0 (jsonrpc)\nundeclared: the module lists no methods; every call goes through to it\n",
        "{run}"
    );
    let json = mesh.run(&["introspect", "pyecho", "--json"]).code(0).json();
    assert_eq!((&json["declared"], &json["methods"]), (&json!(false), &json!([])));
    // An unknown method reaches the module, which answers it in its own words.
    let run = mesh.run(&["call", "pyecho", "shout"]);
    assert_eq!(run.code(3).error_line(), r#"error: NOT_FOUND: module pyecho has no method "shout""#, "{run}");
}

#[test]
fn a_rust_modules_unknown_method_is_not_found_at_the_router_listing_its_methods() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let run = mesh.run(&["call", "echo", "nope"]);
    // The SDK's own answer would end at `"nope"`: the list is the router's.
    assert_eq!(
        run.code(3).error_line(),
        r#"error: NOT_FOUND: module echo has no method "nope"; it has crash, echo, fail, ping, publish, sleep, stream, watch"#,
        "{run}"
    );
    let run = mesh.run(&["introspect", "nosuch"]);
    assert!(run.code(3).error_line().starts_with("error: NOT_FOUND: "), "{run}");
}

/// The monitor's next line, as JSON.
fn next_json(monitor: &mut polis_testing::Process) -> Value {
    let line = monitor.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn polis_monitor_shows_each_call_as_it_ends_filtered_and_with_payloads() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);

    let mut all = mesh.spawn(&["monitor", "--json"]);
    assert_eq!(next_json(&mut all), json!({"type": "watching", "pattern": "*"}));
    let mut only_echo = mesh.spawn(&["monitor", "echo.echo", "--json", "--payloads"]);
    assert_eq!(next_json(&mut only_echo)["pattern"], "echo.echo");

    mesh.run(&["call", "echo", "ping"]).code(0);
    mesh.run(&["call", "echo", "echo", r#"{"a":[1,2]}"#]).code(0);
    mesh.run(&["call", "echo", "fail", r#"{"code":9,"message":"no"}"#]).code(1);

    // `*` takes events too: loading echo is the router's event, before the call ends.
    let started = next_json(&mut all);
    assert_eq!((&started["type"], &started["topic"]), (&json!("event"), &json!("polis.module.started")));
    let ping = next_json(&mut all);
    assert_eq!(
        (&ping["type"], &ping["service"], &ping["method"], &ping["code"]),
        (&json!("call"), &json!("echo"), &json!("ping"), &json!("OK"))
    );
    assert_eq!((&ping["request_bytes"], &ping["reply_bytes"]), (&json!(0), &json!(6)), "{ping}");
    assert!(ping["caller"].as_str().unwrap().starts_with("polis-cli/"), "{ping}");
    assert!(ping.get("request").is_none(), "no payloads without --payloads: {ping}");
    let echo = next_json(&mut all);
    assert_eq!(
        (&echo["method"], &echo["request_bytes"], &echo["reply_bytes"]),
        (&json!("echo"), &json!(11), &json!(11))
    );
    let fail = next_json(&mut all);
    assert_eq!(
        (&fail["method"], &fail["code"], &fail["message"]),
        (&json!("fail"), &json!("FAILED_PRECONDITION"), &json!("no"))
    );

    // The filtered monitor saw neither ping nor fail: its first call is echo.echo.
    let echo = next_json(&mut only_echo);
    assert_eq!(
        (&echo["method"], &echo["request"], &echo["reply"]),
        (&json!("echo"), &json!({"a": [1, 2]}), &json!({"a": [1, 2]}))
    );

    // The human form: one line per call.
    let mut human = mesh.spawn(&["monitor", "echo"]);
    assert_eq!(human.line(), "watching echo");
    mesh.run(&["call", "echo", "ping"]).code(0);
    let line = human.line();
    assert!(line.contains(" → echo.ping ") && line.contains(" OK 0 B → 6 B"), "{line}");
}

#[test]
fn polis_monitor_shows_events_from_modules_frontends_and_the_router_even_unsubscribed() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);

    // Nobody subscribes to these topics: the monitor sees them anyway.
    let mut events = mesh.spawn(&["monitor", "notes.*", "--json", "--payloads"]);
    assert_eq!(next_json(&mut events)["pattern"], "notes.*");
    let mut lifecycle = mesh.spawn(&["monitor", "polis.module.*", "--json"]);
    assert_eq!(next_json(&mut lifecycle)["type"], "watching");

    // From a module (loading it is the router's `polis.module.started`)…
    mesh.run(&["call", "echo", "publish", r#"{"topic":"notes.changed","value":{"path":"a.norg"}}"#]).code(0);
    // …from a frontend, and one the pattern does not take.
    mesh.run(&["publish", "other.topic", "1"]).code(0);
    mesh.run(&["publish", "notes.indexed", "[1,2,3]"]).code(0);

    let from_module = next_json(&mut events);
    assert_eq!(
        (&from_module["type"], &from_module["topic"], &from_module["publisher"], &from_module["payload"]),
        (&json!("event"), &json!("notes.changed"), &json!("echo"), &json!({"path": "a.norg"})),
        "{from_module}"
    );
    assert_eq!(from_module["bytes"], json!(r#"{"path":"a.norg"}"#.len()), "{from_module}");
    let from_cli = next_json(&mut events);
    assert_eq!((&from_cli["topic"], &from_cli["payload"]), (&json!("notes.indexed"), &json!([1, 2, 3])));
    assert!(from_cli["publisher"].as_str().unwrap().starts_with("polis-publish/"), "{from_cli}");

    let started = next_json(&mut lifecycle);
    assert_eq!(
        (&started["type"], &started["topic"], &started["publisher"]),
        (&json!("event"), &json!("polis.module.started"), &json!("router")),
        "{started}"
    );
    assert!(started.get("payload").is_none(), "no payloads without --payloads: {started}");

    // The human form: one line per event.
    let mut human = mesh.spawn(&["monitor", "notes.*"]);
    assert_eq!(human.line(), "watching notes.*");
    mesh.run(&["publish", "notes.changed", "7"]).code(0);
    let line = human.line();
    assert!(line.contains(" event notes.changed 1 B"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_monitor_drops_lines_with_a_count_and_never_slows_calls() {
    // With payloads each line is some 8 KiB, so the socket's buffers hold
    // few: well under CALLS lines fit between the tap and the stopped reader.
    const CALLS: u64 = 2000;
    let payload = bytes::Bytes::from(format!("{:?}", "x".repeat(4096)));
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let mut monitor = mesh.spawn(&["monitor", "echo", "--json", "--payloads"]);
    assert_eq!(next_json(&mut monitor)["type"], "watching");
    // Stopped, it reads nothing: the router's queue for it fills.
    monitor.signal(rustix::process::Signal::STOP);

    let caller = polis_client::Caller::connect(&mesh.open(), None, "stress").await.expect("connect");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let (caller, payload) = (caller.clone(), payload.clone());
        calls.spawn(async move {
            let options = polis_client::CallOptions::default();
            caller.call("echo", "echo", payload, options).await
        });
        // A bounded number in flight at once.
        if calls.len() >= 64 {
            calls.join_next().await.unwrap().unwrap().expect("every call is answered");
        }
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap().expect("every call is answered");
    }

    monitor.signal(rustix::process::Signal::CONT);
    let (mut seen, mut dropped) = (0, 0);
    while seen + dropped < CALLS {
        let line = next_json(&mut monitor);
        match line["type"].as_str() {
            Some("call") => {
                assert_eq!((&line["method"], &line["code"]), (&json!("echo"), &json!("OK")), "{line}");
                seen += 1;
            }
            Some("dropped") => dropped += line["count"].as_u64().unwrap(),
            _ => panic!("unexpected line {line}"),
        }
    }
    assert!(dropped > 0, "a stalled monitor loses lines ({seen} seen)");
    assert_eq!(seen + dropped, CALLS, "every call is a line or counted as dropped");
}

/// Opens a frame session on the router's socket by hand and sends `hello`;
/// returns the router's first frame.
async fn session_hello(mesh: &polis_testing::TestMesh, hello: pb::SessionHello) -> Option<Frame> {
    let mut conn = polis_mesh::transport::connect(&mesh.dir.join("router.sock")).await.expect("connect");
    conn.write_all(&preamble::encode(preamble::VERSION)).await.expect("send the preamble");
    let mut answer = [0; preamble::LEN];
    conn.read_exact(&mut answer).await.expect("the router's preamble");
    let (read, write) = tokio::io::split(conn);
    let codec = FrameCodec::new(1 << 20);
    let (mut reader, mut writer) = (FrameReader::new(read, codec), FrameWriter::new(write, codec));
    writer.write_frame(&Frame { kind: Some(Kind::SessionHello(hello)) }).await.expect("send the hello");
    tokio::time::timeout(WAIT, reader.read_frame()).await.expect("an answer in time").expect("a frame")
}

#[tokio::test]
async fn a_session_speaking_no_protocol_of_the_routers_is_refused_saying_which_side_to_upgrade() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let version = env!("CARGO_PKG_VERSION");

    let newer = pb::SessionHello { name: "newer".into(), protocol_versions: vec![2], ..Default::default() };
    let Some(Frame { kind: Some(Kind::Error(error)) }) = session_hello(&mesh, newer).await else {
        panic!("expected an Error frame");
    };
    assert_eq!(tonic::Code::from(error.code), tonic::Code::FailedPrecondition);
    assert_eq!(
        error.message,
        format!("this client speaks protocol 2, the router speaks 1: upgrade the router (polis {version})")
    );

    // A client speaking 1 and 2 gets 1, and the router's version and features.
    let both = pb::SessionHello { name: "both".into(), protocol_versions: vec![1, 2], ..Default::default() };
    let Some(Frame { kind: Some(Kind::SessionWelcome(welcome)) }) = session_hello(&mesh, both).await else {
        panic!("expected a welcome");
    };
    assert_eq!((welcome.protocol_version, welcome.router_version.as_str()), (1, version));
    assert!(
        welcome.features.iter().any(|f| f == "monitor") && welcome.features.iter().any(|f| f == "introspect")
    );

    // An older client, listing none, speaks 1 and is welcomed.
    let old = pb::SessionHello { name: "old".into(), ..Default::default() };
    assert!(matches!(session_hello(&mesh, old).await, Some(Frame { kind: Some(Kind::SessionWelcome(_)) })));
}

#[test]
fn polis_status_shows_the_versions_on_each_side() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let mut frontend = mesh.start_frontend("shell");
    let version = env!("CARGO_PKG_VERSION");
    let run = mesh.run(&["status"]);
    let out = run.code(0).stdout();
    assert!(
        out.contains(&format!(
            "versions router polis {version}, protocol 1, features events, module-calls, introspect, monitor; this client polis {version}, protocol 1"
        )),
        "{run}"
    );
    let json = mesh.run(&["status", "--json"]).code(0).json();
    assert_eq!(json["router"]["protocol_versions"], json!([1]));
    assert_eq!(json["client"]["version"], version);
    let session = &json["sessions"][0];
    assert_eq!((&session["client_version"], &session["protocol_version"]), (&json!(version), &json!(1)));
    frontend.quit();
}

#[test]
fn the_monitor_refuses_another_uid() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let (mut cmd, _lock) = crate::util::as_another_uid(&mesh);
    cmd.args(["monitor", "--json"]);
    let run = mesh.run_command(cmd);
    assert!(run.stdout().is_empty(), "nothing watched: {run}");
    let err = run.code(1).stderr();
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("refused a client running as uid 65534"),
        "{run}"
    );
}

#[tokio::test]
async fn a_grpc_session_speaking_no_protocol_of_the_routers_is_refused_the_same_way() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let channel = polis_client::connect(&mesh.open(), None).await.expect("connect");
    let mut router = pb::router_client::RouterClient::new(channel);
    let hello =
        pb::SessionHello { name: "newer".into(), protocol_versions: vec![7, 9], ..Default::default() };
    let up = pb::SessionUp { kind: Some(pb::session_up::Kind::Hello(hello)) };
    // The stream stays open after the hello, as a real session's does.
    use tonic::codegen::tokio_stream::{self, StreamExt};
    let up = tokio_stream::iter([up]).chain(tokio_stream::pending());
    let status = router.session(up).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!(
            "this client speaks protocol 7, 9, the router speaks 1: upgrade the router (polis {})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
