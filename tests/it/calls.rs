//! Calls between modules, with real processes: a Rust SDK module
//! (`polis-relay`) and a Python JSON-RPC module calling each other through
//! the router; who may call whom, the chain limit, and cancellation and
//! deadlines travelling down a chain.

use serde_json::json;

use crate::util::{ECHO, RELAY, TestMesh, mesh};

/// A JSON-RPC module that calls other modules with `$/call`: `relay` sends
/// its params' `call` as a `$/call` (with `parent` set to the request it
/// serves) and answers what the router answers; `wait` never answers, and
/// the ids of `wait`s and of every `$/cancel` it receives are appended to
/// `waits` and `cancels` in its directory;
/// `junk` sends a cancel and a reply for ids nobody knows, then answers.
const PYRELAY: &str = r#"#!/usr/bin/env python3
import json, sys
pending = {}
next_id = 1
def send(msg):
    msg["jsonrpc"] = "2.0"
    print(json.dumps(msg), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    method = msg.get("method")
    if method is None:
        # No method: the answer to one of our own $/calls.
        rid = pending.pop(msg["id"], None)
        if rid is None:
            continue
        if "error" in msg:
            send({"id": rid, "error": msg["error"]})
        else:
            send({"id": rid, "result": msg.get("result")})
    elif method == "initialize":
        send({"id": msg["id"], "result": {}})
    elif method == "relay":
        call = dict(msg["params"]["call"])
        call.setdefault("parent", msg["id"])
        pending[next_id] = msg["id"]
        send({"id": next_id, "method": "$/call", "params": call})
        next_id += 1
    elif method == "ping":
        send({"id": msg["id"], "result": "pong"})
    elif method == "wait":
        with open("waits", "a") as f:
            f.write("%d\n" % msg["id"])
    elif method == "junk":
        send({"method": "$/cancel", "params": {"id": 987654}})
        send({"id": 987655, "result": "stray"})
        send({"id": msg["id"], "result": "ok"})
    elif method == "$/cancel":
        with open("cancels", "a") as f:
            f.write("%d\n" % msg["params"]["id"])
    elif method == "shutdown":
        break
"#;

/// A mesh with the Rust relay as `name`s and the Python relay as `py`s,
/// each with its `calls`, and a router.
fn mesh_of(rust: &[(&str, &str)], python: &[(&str, &str)]) -> (TestMesh, polis_testing::Process) {
    let mesh = mesh();
    for (name, calls) in rust {
        mesh.module(name, RELAY, calls);
    }
    for (name, calls) in python {
        mesh.script_module(name, "jsonrpc", PYRELAY, calls);
    }
    let router = mesh.spawn(&["router"]);
    mesh.wait_router();
    (mesh, router)
}

fn call(mesh: &TestMesh, service: &str, method: &str, params: serde_json::Value) -> polis_testing::Run {
    mesh.run(&["call", service, method, &params.to_string()])
}

/// The ids the Python module `name` wrote to `file` (`waits`, `cancels`).
fn recorded(mesh: &TestMesh, name: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(mesh.modules.join(name).join(file)).ok().filter(|s| !s.is_empty())
}

#[test]
fn a_rust_module_calls_a_python_module_and_back() {
    let (mesh, _router) = mesh_of(&[("a", "calls = [\"p\"]")], &[("p", "calls = [\"a\"]")]);
    // Rust -> Python.
    let run = call(&mesh, "a", "relay", json!({"service": "p", "method": "ping"}));
    assert_eq!(run.code(0).json(), json!("pong"));
    // Python -> Rust: the callee sees the caller's service name.
    let run = call(&mesh, "p", "relay", json!({"call": {"service": "a", "method": "whoami"}}));
    assert_eq!(run.code(0).json(), json!("p"));
    // A -> B -> A, which ends.
    let inner = json!({"call": {"service": "a", "method": "whoami"}});
    let run = call(&mesh, "a", "relay", json!({"service": "p", "method": "relay", "params": inner}));
    assert_eq!(run.code(0).json(), json!("p"));
}

/// What a module author's test looks like with the harness alone: a module
/// that calls another, which publishes, seen by `TestMesh::watch`.
#[test]
fn the_harness_tests_a_module_that_calls_another_which_publishes() {
    let mesh = mesh();
    mesh.module("relay", RELAY, "calls = [\"echo\"]");
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let mut events = mesh.watch("notes.*");
    let publish = json!({"topic": "notes.changed", "value": {"path": "a.norg"}});
    let run =
        call(&mesh, "relay", "relay", json!({"service": "echo", "method": "publish", "params": publish}));
    assert_eq!(run.code(0).json(), json!(null));
    assert_eq!(events.event(), ("notes.changed".to_owned(), json!({"path": "a.norg"})));
    // The relay may call only echo.
    let run = call(&mesh, "relay", "relay", json!({"service": "relay", "method": "ping"}));
    assert!(run.code(1).error_line().starts_with("error: PERMISSION_DENIED: "), "{run}");
}

#[test]
fn a_module_streams_from_another() {
    let mesh = mesh();
    mesh.module("a", RELAY, "depends = [\"pyecho\"]");
    let pyecho = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/pyecho/pyecho.py");
    mesh.manifest("pyecho", &format!("exec = {:?}\nprotocol = \"jsonrpc\"", pyecho.display().to_string()));
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();
    let params = json!({"service": "pyecho", "method": "stream", "params": {"count": 3, "interval_ms": 0}});
    let run = mesh.run(&["call", "--stream", "a", "relay_stream", &params.to_string()]);
    assert_eq!(run.code(0).stdout(), "0\n1\n2\n");
}

#[test]
fn a_call_not_in_the_manifest_is_refused_and_the_module_keeps_serving() {
    let (mesh, _router) = mesh_of(&[("a", "calls = [\"b\"]"), ("b", ""), ("c", "")], &[]);
    let run = call(&mesh, "a", "relay", json!({"service": "c", "method": "ping"}));
    assert_ne!(run.status().code(), Some(0), "{run}");
    assert!(
        run.stderr().contains(
            "PERMISSION_DENIED: module \"a\" may not call \"c\": add calls = [\"c\"] to its module.toml"
        ),
        "{run}"
    );
    // A module that lists nothing may call nothing.
    let run = call(&mesh, "b", "relay", json!({"service": "a", "method": "ping"}));
    assert!(run.stderr().contains("PERMISSION_DENIED: module \"b\" may not call \"a\""), "{run}");
    assert_eq!(
        call(&mesh, "a", "relay", json!({"service": "b", "method": "ping"})).code(0).json(),
        json!("pong")
    );
    assert_eq!(call(&mesh, "a", "ping", json!(null)).code(0).json(), json!("pong"));
}

#[test]
fn a_module_calling_itself_without_end_hits_the_chain_limit() {
    let (mesh, _router) = mesh_of(&[("a", "calls = [\"a\"]")], &[]);
    let run = call(&mesh, "a", "loop", json!(null));
    assert_ne!(run.status().code(), Some(0), "{run}");
    let err = run.stderr();
    assert!(err.contains("RESOURCE_EXHAUSTED: call chain too deep"), "{run}");
    assert!(err.contains("chain limit of 16 nested calls"), "{run}");
    // The router and the module are fine.
    assert_eq!(call(&mesh, "a", "ping", json!(null)).code(0).json(), json!("pong"));
    mesh.run(&["status"]).code(0);
}

#[test]
fn a_deadline_that_expires_mid_chain_cancels_the_innermost_call() {
    let (mesh, _router) = mesh_of(&[("a", "calls = [\"b\"]"), ("b", "calls = [\"c\"]")], &[("c", "")]);
    // Loaded first, so that the deadline finds the call in c, not on its way.
    for name in ["a", "b", "c"] {
        call(&mesh, name, "ping", json!(null)).code(0);
    }
    let inner = json!({"service": "c", "method": "wait"});
    let params = json!({"service": "b", "method": "relay", "params": inner});
    let run = mesh.run(&["call", "--timeout", "3000", "a", "relay", &params.to_string()]);
    assert_ne!(run.status().code(), Some(0), "{run}");
    assert!(run.stderr().contains("DEADLINE_EXCEEDED"), "{run}");
    let cancelled = mesh.wait_for("c to be cancelled", || recorded(&mesh, "c", "cancels"));
    assert_eq!(Some(cancelled), recorded(&mesh, "c", "waits"), "the call cancelled is the one c was serving");
}

#[test]
fn a_caller_going_away_cancels_the_whole_chain() {
    let (mesh, _router) = mesh_of(&[("a", "calls = [\"b\"]"), ("b", "calls = [\"c\"]")], &[("c", "")]);
    let inner = json!({"service": "c", "method": "wait"});
    let params = json!({"service": "b", "method": "relay_stream", "params": inner});
    // A stream without a deadline: only the frontend leaving ends it.
    let mut frontend = mesh.spawn(&["call", "--stream", "a", "relay_stream", &params.to_string()]);
    let waiting = mesh.wait_for("c to get the innermost call", || recorded(&mesh, "c", "waits"));
    assert!(recorded(&mesh, "c", "cancels").is_none(), "nothing cancelled yet");
    frontend.kill();
    let cancelled = mesh.wait_for("c to be cancelled", || recorded(&mesh, "c", "cancels"));
    assert_eq!(cancelled, waiting, "the call cancelled is the one c was serving");
}

#[test]
fn bad_calls_from_a_jsonrpc_module_are_answered_and_it_keeps_serving() {
    let (mesh, _router) = mesh_of(&[("a", "")], &[("p", "calls = [\"a\"]")]);
    let run = call(&mesh, "p", "relay", json!({"call": {"method": "ping"}}));
    assert!(run.stderr().contains("INVALID_ARGUMENT: $/call: \"service\" is missing"), "{run}");
    let run = call(&mesh, "p", "relay", json!({"call": {"service": "a", "method": 3}}));
    assert!(run.stderr().contains("INVALID_ARGUMENT: $/call: \"method\" must be a string"), "{run}");
    // A cancel and a reply for ids nobody knows are ignored.
    assert_eq!(call(&mesh, "p", "junk", json!(null)).code(0).json(), json!("ok"));
    assert_eq!(call(&mesh, "p", "ping", json!(null)).code(0).json(), json!("pong"));
    assert_eq!(
        call(&mesh, "p", "relay", json!({"call": {"service": "a", "method": "ping"}})).code(0).json(),
        json!("pong")
    );
}
