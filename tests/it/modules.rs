//! The router and the module host, through real processes: lazy loading,
//! streaming, concurrency, failures, security and the exit sequence.

use std::time::Instant;

use polis_mesh::pb::{self, router_client::RouterClient};
use serde_json::json;

use crate::util::{COUNTER, ECHO, Process, TestMesh, WAIT, WAITER, mesh, wait_until};

/// A mesh with `echo` and `counter` modules, and its router running.
fn mesh_with_router(router_args: &[&str]) -> (TestMesh, Process) {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.module("counter", COUNTER, "");
    let mut args = vec!["router"];
    args.extend_from_slice(router_args);
    let router = mesh.spawn(&args);
    mesh.wait_router();
    (mesh, router)
}

fn module_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

async fn client(mesh: &TestMesh) -> RouterClient<tonic::transport::Channel> {
    let record = mesh.router().expect("a router is running");
    RouterClient::new(polis_client::dial(&record).await.expect("dial the router"))
}

fn request(service: &str, method: &str, params: serde_json::Value) -> pb::CallRequest {
    pb::CallRequest {
        service: service.into(),
        method: method.into(),
        payload: Some(pb::Payload {
            content_type: "application/json".into(),
            data: params.to_string().into(),
        }),
        ..Default::default()
    }
}

fn payload_json(reply: &pb::CallReply) -> serde_json::Value {
    serde_json::from_slice(&reply.payload.as_ref().unwrap().data).unwrap()
}

#[test]
fn a_call_loads_its_module_lazily() {
    let (mesh, _router) = mesh_with_router(&[]);
    let before = mesh.run(&["status", "--json"]).code(0).json();
    assert_eq!(module_status(&before, "echo")["state"], "available");
    assert_eq!(module_status(&before, "echo")["pid"], serde_json::Value::Null);

    let run = mesh.run(&["call", "echo", "ping"]);
    run.code(0);
    assert_eq!(run.stdout().trim(), "\"pong\"");

    let after = mesh.run(&["status", "--json"]).code(0).json();
    let echo = module_status(&after, "echo");
    assert_eq!(echo["state"], "running");
    let pid = echo["pid"].as_u64().expect("a running module has a pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} is a live process");
    assert_eq!(module_status(&after, "counter")["state"], "available", "only what is called is loaded");

    let echoed = mesh.run(&["call", "echo", "echo", r#"{"a":[1,2,{"b":null}]}"#]).code(0).json();
    assert_eq!(echoed, json!({"a": [1, 2, {"b": null}]}));
}

/// A JSON-RPC module whose `stream` sends the items 0, 1 and 2, each but
/// the first only once the file `go-<item>` exists in its directory.
const GATED: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
def send(message):
    print(json.dumps(message), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "stream":
        for i in range(3):
            while i > 0 and not os.path.exists("go-%d" % i):
                time.sleep(0.005)
            send({"jsonrpc": "2.0", "method": "$/item", "params": {"id": msg["id"], "value": i}})
        send({"jsonrpc": "2.0", "id": msg["id"], "result": None})
    else:
        send({"jsonrpc": "2.0", "id": msg["id"], "result": {}})
"#;

#[test]
fn streamed_items_are_forwarded_as_they_arrive() {
    let (mesh, _router) = mesh_with_router(&[]);
    let gated = mesh.script_module("gated", "jsonrpc", GATED, "");
    mesh.run(&["module", "load", "gated"]).code(0);

    // Each item is read before the module may send the next one: the router
    // and the CLI forward items one by one, never gathered up.
    let mut call = mesh.spawn(&["call", "--stream", "gated", "stream"]);
    for item in 0..3 {
        if item > 0 {
            std::fs::write(gated.with_file_name(format!("go-{item}")), "").unwrap();
        }
        assert_eq!(call.line(), item.to_string(), "item {item}");
    }
    let (status, stderr) = call.wait(WAIT);
    assert!(status.success(), "{status}: {stderr}");

    // A frames module's items, in order, through the same path.
    let run = mesh.run(&["call", "--stream", "echo", "stream", r#"{"count":5,"interval_ms":0}"#]);
    assert_eq!(run.code(0).stdout(), "0\n1\n2\n3\n4\n", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_get_their_own_replies() {
    let (mesh, _router) = mesh_with_router(&[]);
    let client = client(&mesh).await;
    let calls = (0..64).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            // Each sleeps a little, so that they really are in flight together.
            let params = json!({"i": i, "pad": "x".repeat(i * 10)});
            let reply = client.call(request("echo", "echo", params.clone())).await.unwrap().into_inner();
            (params, payload_json(&reply))
        })
    });
    let replies = futures_join(calls).await;
    assert_eq!(replies.len(), 64);
    for (sent, got) in replies {
        assert_eq!(sent, got);
    }
    let status = mesh.run(&["status", "--json"]).code(0).json();
    assert_eq!(module_status(&status, "echo")["restarts"], 0, "one process served them all");
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn an_unknown_service_exits_3_and_lists_the_directories_searched() {
    let (mesh, _router) = mesh_with_router(&[]);
    let run = mesh.run(&["call", "nosuch", "ping"]);
    run.code(3);
    let err = run.stderr();
    assert!(err.starts_with("error: NOT_FOUND: no module named \"nosuch\""), "{run}");
    assert!(err.contains(&mesh.modules.display().to_string()), "lists the modules path\n{run}");
    assert!(err.contains(".local/share/polis/modules"), "lists the user's data dir\n{run}");
}

#[test]
fn names_that_are_paths_are_rejected_and_nothing_runs() {
    let (mesh, _router) = mesh_with_router(&[]);
    let marker = mesh.root().join("executed");
    let script = format!("#!/bin/sh\ntouch {}\n", marker.display());
    // Manifests planted where a path-like name would lead.
    for dir in [mesh.root().join("x"), mesh.modules.join("a/b")] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("module.toml"), "name = \"x\"\nversion = \"0.1.0\"\nexec = \"run\"\n")
            .unwrap();
        std::fs::write(dir.join("run"), &script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for name in ["../x", "/bin/sh", "a/b"] {
        let run = mesh.run(&["call", name, "ping"]);
        run.code(1);
        assert!(run.stderr().contains(&format!("INVALID_ARGUMENT: invalid service name {name:?}")), "{run}");
    }
    assert!(!marker.exists(), "nothing was executed");
    let status = mesh.run(&["status", "--json"]).code(0).json();
    assert!(status["modules"].as_array().unwrap().iter().all(|m| m["state"] != "running"));
}

#[test]
fn dependency_failures_name_the_chain_and_start_nothing() {
    let (mesh, _router) = mesh_with_router(&[]);
    // Every module here would run the echo binary, announcing POLIS_SERVICE.
    mesh.module("app", ECHO, "depends = [\"lib\"]");
    mesh.module("lib", ECHO, "depends = [\"gone\"]");
    mesh.module("x", ECHO, "depends = [\"y\"]");
    mesh.module("y", ECHO, "depends = [\"x\"]");
    mesh.module("new", ECHO, "depends = [\"old >=2.0\"]");
    mesh.module("old", ECHO, "");
    let cases = [
        ("app", "app -> lib -> gone", "gone is missing"),
        ("x", "x -> y -> x", "dependency cycle"),
        ("new", "new -> old", "old 0.1.0 does not meet the requirement >=2.0"),
    ];
    for (service, chain, why) in cases {
        let run = mesh.run(&["call", service, "ping"]);
        run.code(1);
        let err = run.stderr();
        assert!(err.starts_with("error: FAILED_PRECONDITION: "), "{run}");
        assert!(err.contains(chain) && err.contains(why), "{service}: {run}");
    }
    assert!(mesh.processes().len() == 1, "only the router runs: {:?}", mesh.processes());

    // A satisfied chain starts dependencies first.
    mesh.module("top", ECHO, "depends = [\"old ^0.1\"]");
    mesh.run(&["call", "top", "ping"]).code(0);
    let status = mesh.run(&["status", "--json"]).code(0).json();
    assert_eq!(module_status(&status, "old")["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_the_call_at_once_and_the_next_call_restarts_it() {
    let (mesh, _router) = mesh_with_router(&[]);
    let mut client = client(&mesh).await;
    client.call(request("echo", "ping", json!(null))).await.unwrap();

    // The call has no deadline: only the crash can end it.
    let started = Instant::now();
    let crashed = tokio::time::timeout(WAIT, client.call(request("echo", "crash", json!(null))));
    let status = crashed.await.expect("the crash ends the call").unwrap_err();
    println!("crashed call failed after {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("module echo exited with status 3"), "{status:?}");

    let reply = client.call(request("echo", "ping", json!(null))).await.unwrap().into_inner();
    assert_eq!(payload_json(&reply), json!("pong"), "the next call restarts it");

    // Crash until the budget (5 within a minute) is spent.
    let mut last = None;
    for _ in 0..6 {
        last = Some(client.call(request("echo", "crash", json!(null))).await.unwrap_err());
    }
    let refused = client.call(request("echo", "ping", json!(null))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("restart budget is spent"), "{refused:?} (last crash: {last:?})");
    assert!(refused.message().contains("polis module reload echo"), "says what to do: {refused:?}");
    let status = mesh.run(&["status", "--json"]).code(0).json();
    assert_eq!(module_status(&status, "echo")["state"], "failed");

    // A reload clears the failure.
    mesh.run(&["module", "reload", "echo"]).code(0);
    client.call(request("echo", "ping", json!(null))).await.unwrap();
}

#[test]
fn garbage_on_stdout_ends_that_link_only() {
    let (mesh, _router) = mesh_with_router(&[]);
    // Answers initialize properly, then prints plain text on the first call.
    mesh.script_module(
        "noisy",
        "jsonrpc",
        "#!/usr/bin/env python3\nimport sys\nfor line in sys.stdin:\n    if '\"initialize\"' in line:\n        print('{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}', flush=True)\n    else:\n        print('hello, I am chatty', flush=True)\n",
        "",
    );
    // A frames module that prints text before anything else.
    mesh.script_module("chatty", "frames", "#!/bin/sh\necho 'starting up...'\nexec sleep 30\n", "");
    mesh.run(&["call", "echo", "ping"]).code(0);

    let run = mesh.run(&["call", "noisy", "ping"]);
    run.code(4);
    assert!(run.stderr().contains("UNAVAILABLE: module noisy broke its link"), "{run}");
    assert!(run.stderr().contains("hello, I am chatty"), "shows what it printed\n{run}");

    let run = mesh.run(&["call", "chatty", "ping"]);
    run.code(4);
    assert!(run.stderr().contains("module chatty failed its handshake"), "{run}");
    assert!(run.stderr().contains("stdout is for frames only"), "{run}");

    assert_eq!(mesh.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
}

#[test]
fn a_payload_over_the_frame_limit_is_refused_and_the_router_stays_up() {
    let (mesh, mut router) = mesh_with_router(&["--max-frame", "65536"]);
    let big = json!({"data": "x".repeat(100_000)}).to_string();
    let run = mesh.run(&["call", "echo", "echo", &big]);
    run.code(1);
    assert!(run.stderr().contains("RESOURCE_EXHAUSTED"), "{run}");
    assert!(run.stderr().contains("exceeds the frame limit of 65536 bytes"), "{run}");
    assert!(router.try_exit().is_none(), "the router is still running");
    mesh.run(&["call", "echo", "ping"]).code(0);
}

#[test]
fn the_python_jsonrpc_module_calls_errors_and_streams() {
    let mesh = mesh();
    let pyecho = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/pyecho");
    mesh.manifest(
        "pyecho",
        &format!("exec = {:?}\nprotocol = \"jsonrpc\"", pyecho.join("pyecho.py").display().to_string()),
    );
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();

    assert_eq!(mesh.run(&["call", "pyecho", "ping"]).code(0).stdout().trim(), "\"pong\"");
    assert_eq!(
        mesh.run(&["call", "pyecho", "echo", r#"{"k":[1,"two"]}"#]).code(0).json(),
        json!({"k": [1, "two"]})
    );

    let run = mesh.run(&["call", "pyecho", "fail", r#"{"code":9,"message":"not today"}"#]);
    run.code(1);
    assert_eq!(run.stderr().trim(), "error: FAILED_PRECONDITION: not today");

    let run = mesh.run(&["call", "pyecho", "nope"]);
    run.code(3);

    let run = mesh.run(&["call", "--stream", "pyecho", "stream", r#"{"count":3,"interval_ms":10}"#]);
    assert_eq!(run.code(0).stdout(), "0\n1\n2\n");
}

#[test]
fn stop_ends_every_process_even_one_ignoring_shutdown() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.module("counter", COUNTER, "");
    mesh.script_module(
        "stubborn",
        "jsonrpc",
        "#!/usr/bin/env python3\nimport sys, time, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nfor line in sys.stdin:\n    if '\"initialize\"' in line:\n        print('{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}', flush=True)\n    elif '\"shutdown\"' in line:\n        time.sleep(3600)\n    else:\n        print('{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"ok\"}', flush=True)\ntime.sleep(3600)\n",
        "",
    );
    // Launched by the first call, as a user would: detached, not our child.
    mesh.run(&["call", "echo", "ping"]).code(0);
    mesh.run(&["call", "counter", "incr"]).code(0);
    mesh.run(&["call", "stubborn", "anything"]).code(0);
    let router = mesh.router().unwrap();
    assert_eq!(mesh.processes().len(), 4, "router and three modules");

    let started = Instant::now();
    let run = mesh.run(&["stop"]);
    run.code(0);
    println!("stop took {:?} (grace 3 s)", started.elapsed());
    mesh.wait_no_processes();
    assert!(!mesh.dir.join("router.json").exists(), "router.json removed");
    assert!(!mesh.dir.join("router.sock").exists(), "socket removed");
    let lock = std::fs::File::open(mesh.dir.join("router.lock")).unwrap();
    assert!(lock.try_lock().is_ok(), "router.lock is free");
    let log = std::fs::read_to_string(mesh.dir.join("logs/router.log")).unwrap();
    assert!(log.contains("stubborn ignored Shutdown"), "the straggler was killed: {log}");
    assert!(
        !mesh.run(&["ls", "--json"]).json()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == router.id.to_string())
    );
}

#[test]
fn sigterm_runs_the_same_exit_sequence() {
    let (mesh, mut router) = mesh_with_router(&[]);
    mesh.run(&["call", "echo", "ping"]).code(0);
    mesh.run(&["call", "counter", "incr"]).code(0);
    assert_eq!(mesh.processes().len(), 3);
    router.signal(rustix::process::Signal::TERM);
    let (status, stderr) = router.wait(WAIT);
    assert!(status.success(), "{status}: {stderr}");
    mesh.wait_no_processes();
    assert!(!mesh.dir.join("router.json").exists());
}

#[test]
fn a_client_of_another_uid_is_refused_and_the_router_stays_up() {
    let (mesh, mut router) = mesh_with_router(&[]);
    let (mut cmd, _lock) = crate::util::as_another_uid(&mesh);
    cmd.args(["call", "--no-launch", "echo", "ping"]);
    let run = mesh.run_command(cmd);
    run.code(1);
    let err = run.stderr();
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("refused a client running as uid 65534"),
        "{run}"
    );

    assert!(router.try_exit().is_none(), "the router is still running");
    assert_eq!(mesh.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
}

#[test]
fn a_deadline_or_a_departed_caller_cancels_the_request_in_the_module() {
    let mesh = mesh();
    mesh.script_module("waiter", "jsonrpc", WAITER, "");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();
    let cancels = mesh.modules.join("waiter/cancels");
    let count = || std::fs::read_to_string(&cancels).unwrap_or_default().lines().count();
    // Loaded first: a deadline passing while Python starts would cancel a
    // call that was never sent.
    mesh.run(&["module", "load", "waiter"]).code(0);

    // The module never answers: only the deadline can end the call.
    let run = mesh.run(&["call", "--timeout", "300", "waiter", "wait"]);
    run.code(4);
    assert!(run.stderr().contains("DEADLINE_EXCEEDED: waiter.wait did not answer within 300ms"), "{run}");
    wait_until(WAIT, &mesh.dir, "the module to receive $/cancel", || (count() == 1).then_some(()));

    // A caller killed mid-call: its stream ends, and the module hears of it.
    let mut caller = mesh.spawn(&["call", "waiter", "wait"]);
    wait_until(WAIT, &mesh.dir, "the call to be in flight", || {
        let status = mesh.run(&["status", "--json"]).json();
        (module_status(&status, "waiter")["calls"] == 2).then_some(())
    });
    caller.kill();
    wait_until(WAIT, &mesh.dir, "the module to receive a second $/cancel", || (count() == 2).then_some(()));
}

#[test]
fn autostart_modules_load_with_the_router() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "autostart = true");
    mesh.module("counter", COUNTER, "");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();
    wait_until(WAIT, &mesh.dir, "echo to start by itself", || {
        let status = mesh.run(&["status", "--json"]).json();
        (module_status(&status, "echo")["state"] == "running").then_some(())
    });
    let status = mesh.run(&["status", "--json"]).json();
    assert_eq!(module_status(&status, "counter")["state"], "available");
}

#[test]
fn restart_always_brings_a_crashed_module_back_without_a_call() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "restart = \"always\"");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();
    mesh.run(&["call", "echo", "crash"]).code(4);
    let pid = wait_until(WAIT, &mesh.dir, "echo to be restarted", || {
        let status = mesh.run(&["status", "--json"]).json();
        let echo = module_status(&status, "echo");
        (echo["state"] == "running" && echo["restarts"] == 1).then(|| echo["pid"].as_u64().unwrap())
    });
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn restart_never_leaves_a_crashed_module_down_until_loaded() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "restart = \"never\"");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();
    mesh.run(&["call", "echo", "crash"]).code(4);
    let run = mesh.run(&["call", "echo", "ping"]);
    run.code(4);
    assert!(run.stderr().contains("restart policy is \"never\""), "{run}");
    mesh.run(&["module", "load", "echo"]).code(0);
    mesh.run(&["call", "echo", "ping"]).code(0);
}
