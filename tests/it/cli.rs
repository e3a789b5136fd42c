//! The command line as a user meets it when things go wrong: a router that
//! dies under a call, a reader that stops reading, a frontend that goes
//! without saying goodbye.

use std::{process::Stdio, time::Duration};

use polis_client::{Client, ClientOptions};

use crate::util::{ECHO, WAIT, mesh, wait_until};

fn calls_to(mesh: &polis_testing::TestMesh, module: &str) -> u64 {
    let status = mesh.run(&["status", "--json"]).json();
    let modules = status["modules"].as_array().cloned().unwrap_or_default();
    modules.iter().find(|m| m["name"] == module).and_then(|m| m["calls"].as_u64()).unwrap_or(0)
}

/// The contract: a call that cannot be answered because its router went
/// away is "unavailable" (exit 4), not an error of the remote side (tonic
/// reports the broken connection as UNKNOWN "transport error").
#[test]
fn a_call_in_flight_when_its_router_is_killed_exits_4_unavailable() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut router = mesh.start_router(&[]);
    mesh.run(&["module", "load", "echo"]).code(0);

    let mut call = mesh.spawn(&["call", "echo", "sleep", r#"{"ms":60000}"#]);
    wait_until(WAIT, &mesh.dir, "the call to reach the module", || {
        (calls_to(&mesh, "echo") == 1).then_some(())
    });
    router.kill();

    let (status, stderr) = call.wait(WAIT);
    assert_eq!(status.code(), Some(4), "exit 4, unavailable: {stderr}");
    assert!(stderr.starts_with("error: UNAVAILABLE: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

/// `polis ls | head` and the like: a reader that has gone ends the command
/// quietly, as it ends git and ripgrep, instead of a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let mesh = mesh();
    mesh.run(&["ls"]).code(0);
    for args in [&["ls"][..], &["ls", "--json"], &["resolve", "nothing-here"]] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let mut cmd = mesh.polis(args);
        cmd.stdout(writer).stderr(Stdio::piped());
        let child = cmd.spawn().expect("run polis");
        let output = child.wait_with_output().expect("wait for polis");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if args[0] == "resolve" {
            // Nothing to print: the error still says why.
            assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        } else {
            assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
            assert!(stderr.is_empty(), "{args:?}: quietly: {stderr}");
        }
    }
}

/// A frontend that hosts the router and is dropped without `close()` (a
/// plugin unloaded, a panic unwinding) must not leave that router serving
/// inside its process: it hands over and leaves office.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_stops_the_router_it_hosts() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let modules = mesh.modules.display().to_string();
    let config = polis_node::router::RouterConfig {
        host: polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(Some(&modules))),
        // Without the fix the router would wait this long for its last
        // session's linger: longer than any wait below.
        sessions: polis_node::router::SessionConfig {
            linger: Duration::from_secs(3600),
            ..Default::default()
        },
        successor: None,
        hand_over_on_exit: true,
    };
    let options = ClientOptions {
        mesh_dir: Some(mesh.dir.clone()),
        launch: None,
        host: Some(config),
        ..ClientOptions::new("host")
    };
    let client = Client::connect(options).await.expect("connect, hosting the router");
    assert!(client.hosts_router());
    let pong = client.call_json("echo", "ping", &serde_json::Value::Null, None).await.expect("ping");
    assert_eq!(pong, "pong");
    let pid = mesh.router().expect("a router in office").pid;
    assert_eq!(pid, std::process::id(), "the router is hosted in this process");

    drop(client);
    // The runtime lives on (this test goes on in it), as an editor's would.
    tokio::task::block_in_place(|| {
        mesh.wait_for("the hosted router to leave office", || (mesh.routers_in_office() == 0).then_some(()))
    });
    assert!(mesh.router().is_none(), "router.json is withdrawn");
}

/// The crate graph keeps its invariants (ARCHITECTURE.md): a module links
/// the SDK and never the router, the Neovim module never the router, and
/// the directory knows no other polis crate.
#[test]
fn the_crate_graph_keeps_the_router_out_of_modules_and_the_lua_module() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let tree = |package: &str| {
        let mut cmd = polis_testing::command(&cargo);
        cmd.args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--manifest-path", manifest]);
        cmd.args(["-p", package]);
        let run = polis_testing::Run::within(cmd, Duration::from_secs(120), None);
        run.code(0);
        run.stdout()
    };
    let polis_crates = |tree: &str| -> Vec<String> {
        let mut names: Vec<String> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("polis"))
            .map(String::from)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(polis_crates(&tree("polis-sdk")), ["polis-discovery", "polis-mesh", "polis-sdk"]);
    assert_eq!(
        polis_crates(&tree("polis-lua")),
        ["polis-client", "polis-discovery", "polis-lua", "polis-mesh"]
    );
    assert_eq!(polis_crates(&tree("polis-discovery")), ["polis-discovery"]);
}

/// Both wires stay first-class: one-shot calls, streams and a frontend's
/// session work over frames (the default) and over gRPC (`--grpc`), and a
/// frontend on either re-attaches when its router is killed and a standby
/// takes office.
#[test]
fn calls_streams_sessions_and_reattach_work_over_frames_and_grpc() {
    for wire in [&[][..], &["--grpc"][..]] {
        let mesh = mesh();
        mesh.module("echo", ECHO, "");
        let mut router = mesh.start_router(&[]);
        let _standby = mesh.start_standby(&[]);

        let call = |args: &[&str]| mesh.run(&[&["call"], wire, args].concat());
        assert_eq!(call(&["echo", "ping"]).code(0).stdout().trim(), "\"pong\"", "{wire:?}");
        let streamed = call(&["--stream", "echo", "stream", r#"{"count":3,"interval_ms":1}"#]);
        assert_eq!(streamed.code(0).stdout().lines().count(), 3, "{wire:?}: {streamed}");

        let mut frontend = mesh.frontend(mesh.polis(&[&["attach", "--name", "nvim"], wire].concat()));
        let sessions = || mesh.run(&["status", "--json"]).json()["sessions"].clone();
        assert_eq!(sessions()[0]["name"], "nvim", "{wire:?}");
        assert_eq!(frontend.call("echo ping"), "\"pong\"", "{wire:?}");

        router.kill();
        mesh.wait_for("the standby to take office", || mesh.router().filter(|r| r.epoch == Some(2)));
        mesh.wait_for("the frontend to re-attach", || (sessions()[0]["name"] == "nvim").then_some(()));
        assert_eq!(frontend.call("echo ping"), "\"pong\"", "{wire:?}: served by the next router");
        frontend.quit();
    }
}

/// After `polis stop`, an editor that stays finds or launches the next
/// router on its next call, exactly as its first call did.
#[test]
fn a_frontend_that_outlives_a_stop_launches_the_next_router() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut frontend = mesh.start_frontend("editor");
    assert_eq!(frontend.call("echo ping"), "\"pong\"");
    let first = mesh.router().expect("a launched router");
    mesh.run(&["stop"]).code(0);
    assert_eq!(frontend.call("echo ping"), "\"pong\"", "the next call is served");
    let next = mesh.router().expect("a router again");
    assert_ne!(next.id, first.id, "by a router launched anew");
    frontend.quit();
}
