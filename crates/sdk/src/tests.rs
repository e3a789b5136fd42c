//! The SDK driven in-process over `tokio::io::duplex`, the test playing the router.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use polis_discovery::{Discovery, MeshDir};
use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{Cancel, Frame, Hello, Payload, Reply, Request, Shutdown, Welcome, frame::Kind, reply::Outcome},
};
use serde_json::{Value, json};
use tokio::{
    io::{DuplexStream, ReadHalf, WriteHalf},
    sync::{Notify, mpsc},
};
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::{Call, Code, Items, LinkError, Module, ModuleError};

/// The longest any test waits for anything.
const WAIT: Duration = Duration::from_secs(5);

/// `future`'s output; fails the test if it takes longer than [`WAIT`].
async fn soon<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("nothing happened in time")
}

/// What the test module's handlers let a test observe and steer.
struct Probe {
    /// Lets `gate` (and the second part of `items`) go on.
    gate: Arc<Notify>,
    /// The ids of `hang` calls whose handler started.
    started: mpsc::UnboundedReceiver<u64>,
    /// The ids of `hang` calls whose handler was dropped.
    dropped: mpsc::UnboundedReceiver<u64>,
}

/// Sends the call's id when dropped, that is when its handler is dropped.
struct DropSignal(u64, mpsc::UnboundedSender<u64>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

fn test_module() -> (Module, Probe) {
    let gate = Arc::new(Notify::new());
    let (started_tx, started) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let (gate1, gate2) = (gate.clone(), gate.clone());
    let module = Module::new("test", "1.2.3")
        .method("ping", |_call: Call| async { Ok("pong") })
        .method("echo", |call: Call| async move { Ok(call.params().clone()) })
        .method("config", |call: Call| async move { Ok(call.config().clone()) })
        .method("info", |call: Call| async move {
            Ok(json!({"id": call.id(), "method": call.method(), "caller": call.caller()}))
        })
        .method("add", |call: Call| async move {
            let a: i64 = call.param("a")?;
            let b: i64 = call.param_or("b", 1)?;
            Ok(a + b)
        })
        .method("gate", move |_call: Call| {
            let gate = gate1.clone();
            async move {
                gate.notified().await;
                Ok("opened")
            }
        })
        .method("hang", move |call: Call| {
            let _ = started_tx.send(call.id());
            let signal = DropSignal(call.id(), dropped_tx.clone());
            async move {
                let _signal = signal;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .method("until_cancelled", |call: Call| async move {
            call.cancelled().await;
            Ok(json!({"cancelled": call.is_cancelled()}))
        })
        .method("panic", |_call: Call| async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok(())
        })
        .stream("items", move |_call: Call, items: Items| {
            let gate = gate2.clone();
            async move {
                items.send(0).await?;
                gate.notified().await;
                items.send(1).await?;
                items.send(json!({"two": 2})).await?;
                Ok(())
            }
        })
        .stream("broken", |_call: Call, items: Items| async move {
            items.send("first").await?;
            Err(ModuleError::failed_precondition("the second item is missing"))
        });
    (module, Probe { gate, started, dropped })
}

/// The epoch the test router welcomes modules with.
const EPOCH: u64 = 41;

/// The router's end of a link to a module served in a task.
struct Router {
    reader: FrameReader<ReadHalf<DuplexStream>>,
    writer: FrameWriter<WriteHalf<DuplexStream>>,
    module: AbortOnDropHandle<Result<(), LinkError>>,
}

impl Router {
    /// Serves `module` over a fresh duplex link.
    fn spawn(module: Module) -> Self {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(theirs);
        let module = AbortOnDropHandle::new(tokio::spawn(module.serve(read, write)));
        let (read, write) = tokio::io::split(ours);
        Self {
            reader: FrameReader::new(read, FrameCodec::default()),
            writer: FrameWriter::new(write, FrameCodec::default()),
            module,
        }
    }

    /// Serves `module`, takes its `Hello` and welcomes it with `config`.
    async fn welcome(module: Module, config: &str) -> (Self, Hello) {
        let mut router = Self::spawn(module);
        let hello = match router.recv().await {
            Frame { kind: Some(Kind::Hello(hello)) } => hello,
            other => panic!("expected Hello, got {other:?}"),
        };
        let welcome = Welcome {
            router_id: Uuid::new_v4().to_string(),
            epoch: EPOCH,
            config_json: Bytes::from(config.to_owned()),
        };
        router.send(Kind::Welcome(welcome)).await;
        (router, hello)
    }

    async fn send(&mut self, kind: Kind) {
        self.writer.write_frame(&Frame { kind: Some(kind) }).await.expect("the module reads frames");
    }

    async fn request(&mut self, id: u64, method: &str, params: Value) {
        let payload = Payload {
            content_type: polis_mesh::JSON.into(),
            data: serde_json::to_vec(&params).unwrap().into(),
        };
        self.send(Kind::Request(Request {
            id,
            method: method.into(),
            payload: Some(payload),
            caller: "tester".into(),
            ..Default::default()
        }))
        .await;
    }

    /// The next frame; fails the test if none comes in time.
    async fn recv(&mut self) -> Frame {
        self.next().await.expect("the module closed the link")
    }

    /// The next frame, or `None` at the end of the link.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.reader.read_frame())
            .await
            .expect("no frame from the module in time")
            .expect("a well-formed frame")
    }

    async fn reply(&mut self) -> Reply {
        match self.recv().await {
            Frame { kind: Some(Kind::Reply(reply)) } => reply,
            other => panic!("expected Reply, got {other:?}"),
        }
    }

    /// The module's result, once it stops serving.
    async fn finished(self) -> Result<(), LinkError> {
        tokio::time::timeout(WAIT, self.module)
            .await
            .expect("the module did not stop in time")
            .expect("no panic")
    }
}

/// The JSON value of a payload reply.
fn value(reply: &Reply) -> Value {
    match &reply.outcome {
        Some(Outcome::Payload(payload)) => serde_json::from_slice(&payload.data).expect("JSON payload"),
        other => panic!("expected a payload, got {other:?}"),
    }
}

/// The code and message of an error reply.
fn error(reply: &Reply) -> (i32, String) {
    match &reply.outcome {
        Some(Outcome::Error(err)) => (err.code, err.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_declares_every_method_with_its_doc_schema_and_stream_flag() {
    let module = Module::new("test", "1.2.3")
        .doc("ping", "answers pong")
        .method("ping", |_call: Call| async { Ok("pong") })
        .stream("ticks", |_call: Call, _items: Items| async { Ok(()) })
        .schema("ticks", Some(json!({"type": "object"})), None)
        .doc("ghost", "never added, so never declared");
    let (_router, hello) = Router::welcome(module, "null").await;
    assert!(hello.declared);
    let methods: Vec<_> = hello
        .methods
        .iter()
        .map(|m| (m.name.as_str(), m.doc.as_str(), m.stream, m.params_schema.as_str()))
        .collect();
    assert_eq!(methods, [("ping", "answers pong", false, ""), ("ticks", "", true, r#"{"type":"object"}"#)]);
}

#[tokio::test]
async fn hello_announces_the_module_and_welcome_carries_the_config() {
    let (module, _probe) = test_module();
    let (mut router, hello) = Router::welcome(module, r#"{"greeting":"hi"}"#).await;
    assert_eq!(hello.name, "test");
    assert_eq!(hello.version, "1.2.3");
    assert_eq!(hello.protocol_version, polis_mesh::PROTOCOL_VERSION);
    assert_eq!(hello.pid, std::process::id());
    assert!(!hello.resumed);
    Uuid::parse_str(&hello.node_id).expect("a fresh node id is a UUID");

    router.request(1, "config", Value::Null).await;
    let reply = router.reply().await;
    assert_eq!((reply.id, reply.more), (1, false));
    assert_eq!(value(&reply), json!({"greeting": "hi"}));
}

#[tokio::test]
async fn an_empty_config_is_null() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "config", Value::Null).await;
    assert_eq!(value(&router.reply().await), Value::Null);
}

#[tokio::test]
async fn a_call_carries_the_epoch_of_the_router_that_welcomed_the_link() {
    let module = Module::new("fenced", "0.1.0").method("epoch", |call: Call| async move { Ok(call.epoch()) });
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "epoch", Value::Null).await;
    assert_eq!(value(&router.reply().await), json!(EPOCH));
}

#[tokio::test]
async fn anything_but_welcome_first_fails_the_handshake() {
    let (module, _probe) = test_module();
    let mut router = Router::spawn(module);
    router.recv().await;
    router.request(1, "ping", Value::Null).await;
    let err = router.finished().await.expect_err("a request before Welcome is refused");
    assert!(matches!(err, LinkError::Handshake(_)), "{err:?}");
    assert!(err.to_string().contains("expected Welcome, got Request"), "{err}");
}

#[tokio::test]
async fn a_router_leaving_before_welcome_fails_the_handshake() {
    let (module, _probe) = test_module();
    let mut router = Router::spawn(module);
    router.recv().await;
    router.writer.shutdown().await.unwrap();
    let err = router.finished().await.expect_err("no Welcome");
    assert!(err.to_string().contains("closed the link before Welcome"), "{err}");
}

#[tokio::test]
async fn unary_methods_answer_with_one_reply() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;

    router.request(1, "ping", Value::Null).await;
    let reply = router.reply().await;
    assert_eq!((reply.id, reply.more, value(&reply)), (1, false, json!("pong")));

    let params = json!({"a": [1, 2], "b": null});
    router.request(2, "echo", params.clone()).await;
    assert_eq!(value(&router.reply().await), params);

    router.request(3, "info", Value::Null).await;
    assert_eq!(value(&router.reply().await), json!({"id": 3, "method": "info", "caller": "tester"}));

    // No payload at all: the parameters are null.
    router.send(Kind::Request(Request { id: 4, method: "echo".into(), ..Default::default() })).await;
    assert_eq!(value(&router.reply().await), Value::Null);

    router.request(5, "add", json!({"a": 40})).await;
    assert_eq!(value(&router.reply().await), json!(41));
}

#[tokio::test]
async fn requests_run_concurrently_and_replies_carry_their_id() {
    let (module, probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(7, "gate", Value::Null).await;
    router.request(8, "echo", json!("second")).await;
    // The first call is still waiting at its gate, so the second answers first.
    let reply = router.reply().await;
    assert_eq!((reply.id, value(&reply)), (8, json!("second")));
    probe.gate.notify_one();
    let reply = router.reply().await;
    assert_eq!((reply.id, value(&reply)), (7, json!("opened")));
}

#[tokio::test]
async fn stream_items_arrive_one_by_one_before_the_end() {
    let (module, probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(3, "items", Value::Null).await;
    // The first item arrives while the handler still waits to send the next.
    let first = router.reply().await;
    assert_eq!((first.id, first.more, value(&first)), (3, true, json!(0)));
    probe.gate.notify_one();
    let second = router.reply().await;
    assert_eq!((second.id, second.more, value(&second)), (3, true, json!(1)));
    let third = router.reply().await;
    assert_eq!((third.id, third.more, value(&third)), (3, true, json!({"two": 2})));
    let end = router.reply().await;
    assert_eq!((end.id, end.more, end.outcome), (3, false, None));
}

#[tokio::test]
async fn a_failing_stream_ends_with_its_error() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "broken", Value::Null).await;
    let item = router.reply().await;
    assert_eq!((item.more, value(&item)), (true, json!("first")));
    let end = router.reply().await;
    assert!(!end.more);
    assert_eq!(error(&end), (Code::FailedPrecondition as i32, "the second item is missing".to_owned()));
}

#[tokio::test]
async fn cancel_drops_the_handler_and_nothing_is_sent_for_it() {
    let (module, mut probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "hang", Value::Null).await;
    assert_eq!(soon(probe.started.recv()).await, Some(1));
    router.send(Kind::Cancel(Cancel { id: 1 })).await;
    assert_eq!(soon(probe.dropped.recv()).await, Some(1));
    // The next frame answers a later request: nothing came for the cancelled one.
    router.request(2, "ping", Value::Null).await;
    assert_eq!(router.reply().await.id, 2);
}

#[tokio::test]
async fn the_deadline_completes_cancelled() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    let request = Request { id: 1, method: "until_cancelled".into(), timeout_ms: 20, ..Default::default() };
    router.send(Kind::Request(request)).await;
    assert_eq!(value(&router.reply().await), json!({"cancelled": true}));
}

#[tokio::test]
async fn an_unknown_method_is_not_found() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "nope", Value::Null).await;
    let reply = router.reply().await;
    assert_eq!((reply.id, reply.more), (1, false));
    assert_eq!(error(&reply), (Code::NotFound as i32, r#"module test has no method "nope""#.to_owned()));
}

#[tokio::test]
async fn bad_parameters_are_invalid_argument() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    let payload = Payload { content_type: String::new(), data: Bytes::from_static(b"{not json") };
    router
        .send(Kind::Request(Request {
            id: 1,
            method: "echo".into(),
            payload: Some(payload),
            ..Default::default()
        }))
        .await;
    let (code, message) = error(&router.reply().await);
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.contains("not valid JSON"), "{message}");

    router.request(2, "add", json!({"a": "one"})).await;
    let (code, message) = error(&router.reply().await);
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.starts_with(r#"parameter "a": invalid type"#), "{message}");

    router.request(3, "add", json!({})).await;
    assert_eq!(
        error(&router.reply().await),
        (Code::InvalidArgument as i32, r#"missing parameter "a""#.to_owned())
    );

    router.request(4, "add", json!([1, 2])).await;
    let (code, message) = error(&router.reply().await);
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.starts_with("expected named parameters"), "{message}");

    let msgpack = Payload { content_type: "application/msgpack".into(), data: Bytes::from_static(b"\x90") };
    router
        .send(Kind::Request(Request {
            id: 5,
            method: "echo".into(),
            payload: Some(msgpack),
            ..Default::default()
        }))
        .await;
    let (code, message) = error(&router.reply().await);
    assert_eq!(code, Code::InvalidArgument as i32);
    assert!(message.contains("unsupported content type"), "{message}");
}

#[tokio::test]
async fn a_duplicate_request_id_is_refused_without_disturbing_the_first() {
    let (module, probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "gate", Value::Null).await;
    router.request(1, "ping", Value::Null).await;
    let reply = router.reply().await;
    assert_eq!(error(&reply), (Code::InvalidArgument as i32, "request id 1 is already in flight".to_owned()));
    probe.gate.notify_one();
    assert_eq!(value(&router.reply().await), json!("opened"));
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_and_the_module_goes_on() {
    let (module, _probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "panic", Value::Null).await;
    assert_eq!(
        error(&router.reply().await),
        (Code::Internal as i32, r#"method "panic" panicked: boom"#.to_owned())
    );
    router.request(2, "ping", Value::Null).await;
    assert_eq!(value(&router.reply().await), json!("pong"));
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish_and_refuses_new_ones() {
    let (module, probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "gate", Value::Null).await;
    router.send(Kind::Shutdown(Shutdown { grace_ms: 5_000 })).await;
    router.request(2, "ping", Value::Null).await;
    let refused = router.reply().await;
    assert_eq!(refused.id, 2);
    assert_eq!(error(&refused), (Code::Unavailable as i32, "module test is shutting down".to_owned()));
    probe.gate.notify_one();
    let reply = router.reply().await;
    assert_eq!((reply.id, value(&reply)), (1, json!("opened")));
    assert!(router.next().await.is_none(), "the module closes the link");
    router.finished().await.expect("a clean exit");
}

#[tokio::test]
async fn shutdown_drops_calls_still_running_when_the_grace_ends() {
    let (module, mut probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "hang", Value::Null).await;
    assert_eq!(soon(probe.started.recv()).await, Some(1));
    router.send(Kind::Shutdown(Shutdown { grace_ms: 50 })).await;
    assert!(router.next().await.is_none(), "no reply for the dropped call");
    assert_eq!(soon(probe.dropped.recv()).await, Some(1));
    router.finished().await.expect("a clean exit");
}

#[tokio::test]
async fn the_end_of_input_stops_the_module() {
    let (module, mut probe) = test_module();
    let (mut router, _) = Router::welcome(module, "").await;
    router.request(1, "hang", Value::Null).await;
    assert_eq!(soon(probe.started.recv()).await, Some(1));
    router.writer.shutdown().await.unwrap();
    assert!(router.next().await.is_none(), "no reply for the dropped call");
    assert_eq!(soon(probe.dropped.recv()).await, Some(1));
    router.finished().await.expect("a router going away is not an error");
}

#[tokio::test]
async fn the_record_is_published_while_serving() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("mesh");
    let node_id = Uuid::new_v4();
    let (mut module, _probe) = test_module();
    module.node_id = Some(node_id.to_string());
    module.mesh_dir = Some(dir.clone());
    let (mut router, hello) = Router::welcome(module, "").await;
    assert_eq!(hello.node_id, node_id.to_string());
    // A reply proves the handshake, and so the publishing, is done.
    router.request(1, "ping", Value::Null).await;
    router.reply().await;

    let mesh = MeshDir::open(&dir).unwrap();
    let record = mesh.resolve("test").unwrap().expect("the module's record is live");
    assert_eq!(record.id, node_id);
    assert_eq!(record.name, "test");
    assert_eq!(record.services, ["test"]);
    assert_eq!(record.version, "1.2.3");
    assert!(record.router.is_some());

    router.send(Kind::Shutdown(Shutdown { grace_ms: 0 })).await;
    router.finished().await.unwrap();
    assert!(mesh.resolve("test").unwrap().is_none(), "the record goes with the module");
}

#[test]
fn json_errors_are_invalid_argument() {
    let err: ModuleError = serde_json::from_str::<u64>("\"x\"").unwrap_err().into();
    assert_eq!(err.code(), Code::InvalidArgument as i32);
    assert!(err.message().starts_with("invalid parameters: invalid type"), "{}", err.message());
    assert_eq!(ModuleError::new(Code::NotFound, "gone"), ModuleError::new(5, "gone"));
}

/// A module whose `relay` calls `other.echo` with its params, and whose
/// `relay_stream` streams `other.stream`.
fn relaying_module() -> Module {
    Module::new("test", "1.2.3")
        .method("relay", |call: Call| async move { call.call("other", "echo", call.params().clone()).await })
        .stream("relay_stream", |call: Call, items: Items| async move {
            let mut stream = call.call_stream("other", "stream", Value::Null).await?;
            while let Some(item) = stream.next().await {
                items.send(item?).await?;
            }
            Ok(())
        })
}

/// The module's own request, the next frame it sends.
async fn own_request(router: &mut Router) -> Request {
    match router.recv().await {
        Frame { kind: Some(Kind::Request(request)) } => request,
        other => panic!("expected the module's Request, got {other:?}"),
    }
}

fn json_reply(id: u64, value: Value, more: bool) -> Kind {
    let payload =
        Payload { content_type: polis_mesh::JSON.into(), data: serde_json::to_vec(&value).unwrap().into() };
    Kind::Reply(Reply { id, outcome: Some(Outcome::Payload(payload)), more })
}

#[tokio::test]
async fn a_handler_calls_another_service_on_the_same_link() {
    let (mut router, _) = Router::welcome(relaying_module(), "").await;
    router.request(7, "relay", json!({"x": 1})).await;
    let request = own_request(&mut router).await;
    assert_eq!((request.service.as_str(), request.method.as_str()), ("other", "echo"));
    assert_eq!(request.parent, 7, "the call says which request it serves");
    assert!(!request.stream);
    // A stray reply and cancel for ids not in flight change nothing.
    router.send(json_reply(request.id + 100, json!("stray"), false)).await;
    router.send(Kind::Cancel(Cancel { id: 12345 })).await;
    router.send(json_reply(request.id, json!({"echoed": true}), false)).await;
    let reply = router.reply().await;
    assert_eq!((reply.id, value(&reply)), (7, json!({"echoed": true})));
}

#[tokio::test]
async fn a_handler_streams_from_another_service() {
    let (mut router, _) = Router::welcome(relaying_module(), "").await;
    router.request(3, "relay_stream", Value::Null).await;
    let request = own_request(&mut router).await;
    assert!(request.stream);
    router.send(json_reply(request.id, json!(1), true)).await;
    router.send(json_reply(request.id, json!(2), false)).await;
    let items: Vec<Value> = [router.reply().await, router.reply().await].iter().map(value).collect();
    assert_eq!(items, [json!(1), json!(2)]);
    let end = router.reply().await;
    assert_eq!((end.id, end.more, end.outcome), (3, false, None));
}

#[tokio::test]
async fn cancelling_the_handler_cancels_its_own_call() {
    let (mut router, _) = Router::welcome(relaying_module(), "").await;
    router.request(5, "relay", Value::Null).await;
    let request = own_request(&mut router).await;
    router.send(Kind::Cancel(Cancel { id: 5 })).await;
    match router.recv().await {
        Frame { kind: Some(Kind::Cancel(cancel)) } => assert_eq!(cancel.id, request.id),
        other => panic!("expected Cancel of the module's call, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_from_the_callee_is_the_handlers_error() {
    let (mut router, _) = Router::welcome(relaying_module(), "").await;
    router.request(9, "relay", Value::Null).await;
    let request = own_request(&mut router).await;
    let denied = polis_mesh::pb::Error { code: Code::PermissionDenied as i32, message: "may not".into() };
    router
        .send(Kind::Reply(Reply { id: request.id, outcome: Some(Outcome::Error(denied)), more: false }))
        .await;
    let (code, message) = error(&router.reply().await);
    assert_eq!((code, message.as_str()), (Code::PermissionDenied as i32, "may not"));
}

/// A module publishing and subscribing from a handler, the test playing
/// the router's bus: Publish goes out, Subscribe waits for Subscribed,
/// events and lag notices come back through the subscription.
#[tokio::test]
async fn handlers_publish_and_subscribe() {
    use polis_mesh::pb::{self, Event, Lagged, Subscribed};

    use crate::Notice;
    let module = Module::new("events", "0.1.0")
        .method("announce", |call: Call| async move {
            call.publish("notes.changed", &json!({"n": 1})).await?;
            let refused = call.publish("polis.module.started", &json!({})).await.unwrap_err();
            Ok(json!(refused.code()))
        })
        .method("first_two", |call: Call| async move {
            let mut sub = call.subscribe("notes.*").await?;
            let mut seen = Vec::new();
            for _ in 0..2 {
                match sub.next().await {
                    Some(Notice::Event { topic, value, .. }) => seen.push(json!([topic, value])),
                    Some(Notice::Lagged { count }) => seen.push(json!({"lagged": count})),
                    _ => break,
                }
            }
            Ok(json!(seen))
        })
        .method("refused", |call: Call| async move {
            match call.subscribe("a*b").await {
                Ok(_) => Ok(json!("subscribed")),
                Err(e) => Ok(json!([e.code(), e.message()])),
            }
        });
    let (mut router, _) = Router::welcome(module, "null").await;

    router.request(1, "announce", Value::Null).await;
    match router.recv().await.kind {
        Some(Kind::Publish(p)) => {
            assert_eq!(p.topic, "notes.changed");
            assert_eq!(&p.payload.unwrap().data[..], br#"{"n":1}"#);
        }
        other => panic!("expected Publish, got {other:?}"),
    }
    assert_eq!(
        value(&router.reply().await),
        json!(Code::PermissionDenied as i32),
        "polis. is refused locally"
    );

    router.request(2, "first_two", Value::Null).await;
    let id = match router.recv().await.kind {
        Some(Kind::Subscribe(s)) => {
            assert_eq!(s.pattern, "notes.*");
            s.id
        }
        other => panic!("expected Subscribe, got {other:?}"),
    };
    router.send(Kind::Subscribed(Subscribed { id, error: None })).await;
    let payload = Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"5") };
    let event =
        Event { subscription: id, topic: "notes.x".into(), payload: Some(payload), publisher: "t".into() };
    router.send(Kind::Event(event)).await;
    router.send(Kind::Lagged(Lagged { subscription: id, count: 3 })).await;
    // The handler's end drops the subscription: the router hears so, then the answer.
    match router.recv().await.kind {
        Some(Kind::Unsubscribe(u)) => assert_eq!(u.id, id),
        other => panic!("expected Unsubscribe, got {other:?}"),
    }
    assert_eq!(value(&router.reply().await), json!([["notes.x", 5], {"lagged": 3}]));

    router.request(3, "refused", Value::Null).await;
    let id = match router.recv().await.kind {
        Some(Kind::Subscribe(s)) => s.id,
        other => panic!("expected Subscribe, got {other:?}"),
    };
    let error = pb::Error { code: Code::InvalidArgument as i32, message: "bad pattern \"a*b\"".into() };
    router.send(Kind::Subscribed(Subscribed { id, error: Some(error) })).await;
    assert_eq!(value(&router.reply().await), json!([Code::InvalidArgument as i32, "bad pattern \"a*b\""]));
}
