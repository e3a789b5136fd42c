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

/// `polis call` without `--stream` on a method that streams is refused with
/// a clear error, instead of printing the last item and dropping the rest.
#[test]
fn a_streaming_method_without_stream_is_refused_naming_the_flag() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    for wire in [&[][..], &["--grpc"][..]] {
        let run =
            mesh.run(&[&["call"], wire, &["echo", "stream", r#"{"count":3,"interval_ms":1}"#]].concat());
        assert_eq!(
            run.code(1).error_line(),
            "error: FAILED_PRECONDITION: echo.stream streams its answer: call it as a stream to get every \
             item (`polis call --stream`, `call_stream`, Router.CallStream)",
            "{wire:?}: {run}"
        );
        assert_eq!(run.stdout(), "", "{wire:?}: no item printed");
        let streamed =
            mesh.run(&[&["call", "--stream"], wire, &["echo", "stream", r#"{"count":3}"#]].concat());
        assert_eq!(streamed.code(0).stdout(), "0\n1\n2\n", "{wire:?}");
        assert_eq!(mesh.run(&[&["call"], wire, &["echo", "ping"]].concat()).code(0).json(), "pong");
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

/// `error: CODE: message`, one line.
#[track_caller]
fn assert_error_line(run: &polis_testing::Run, exit: i32, code: &str) -> String {
    run.code(exit);
    let stderr = run.stderr();
    let first = stderr.lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with(&format!("error: {code}: ")), "want `error: {code}: …`\n{run}");
    first
}

#[test]
fn every_error_line_names_its_code() {
    let mesh = mesh();
    let bad_json = mesh.run(&["call", "echo", "ping", "{bad"]);
    let line = assert_error_line(&bad_json, 2, "INVALID_ARGUMENT");
    assert!(line.contains("the params are not JSON"), "{line}");
    assert_eq!(bad_json.stderr().lines().count(), 1, "{bad_json}");
    let no_router = mesh.run(&["status"]);
    assert!(assert_error_line(&no_router, 4, "UNAVAILABLE").contains("no router is running"), "{no_router}");
    assert_error_line(&mesh.run(&["module", "list"]), 4, "UNAVAILABLE");
    assert_error_line(&mesh.run(&["resolve", "nobody"]), 3, "NOT_FOUND");
    assert_error_line(&mesh.run(&["call", "--no-launch", "echo", "ping"]), 4, "UNAVAILABLE");
    assert_error_line(&mesh.run(&["--no-such-flag"]), 2, "INVALID_ARGUMENT");
    let timeout = mesh.run(&["call", "--timeout", "soon", "echo", "ping"]);
    assert!(assert_error_line(&timeout, 2, "INVALID_ARGUMENT").contains("--timeout"), "{timeout}");
    let linger = mesh.run(&["router", "--linger", "forever"]);
    assert!(assert_error_line(&linger, 2, "INVALID_ARGUMENT").contains("never"), "{linger}");
}

#[test]
fn timeout_reads_durations_and_bare_milliseconds() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    for timeout in ["2s", "300"] {
        let run = mesh.run(&["call", "--timeout", timeout, "echo", "sleep", r#"{"ms":60000}"#]);
        assert_error_line(&run, 4, "DEADLINE_EXCEEDED");
    }
    let run = mesh.run(&["call", "--timeout", "30s", "echo", "ping"]);
    assert_eq!(run.code(0).stdout().trim(), "\"pong\"");
}

#[test]
fn attach_prints_only_answers_on_stdout() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut attach = mesh.start_frontend("shell");
    assert!(attach.stderr().starts_with("attached: router pid "), "status on stderr: {}", attach.stderr());
    assert_eq!(attach.call("echo ping"), "\"pong\"", "the first stdout line is the first answer");
    let value: serde_json::Value = serde_json::from_str(&attach.call(r#"echo echo {"a":[1,2]}"#)).unwrap();
    assert_eq!(value, serde_json::json!({"a": [1, 2]}));
    let error = attach.call("echo");
    assert!(error.starts_with("error: INVALID_ARGUMENT: expected SERVICE METHOD"), "{error}");
    let error = attach.call("nosuch ping");
    assert!(error.starts_with("error: NOT_FOUND: "), "{error}");
    attach.quit();
}

#[test]
fn a_router_with_linger_never_stays_until_stopped() {
    let (stays, leaves, unit) = (mesh(), mesh(), mesh());
    let mut router = stays.start_router(&["--linger", "never"]);
    let pid = router.pid();
    // A call, then no session and no call: a lingering router would leave.
    stays.module("echo", ECHO, "");
    stays.run(&["call", "echo", "ping"]).code(0);
    // A foreground router run by systemd (which sets INVOCATION_ID) stays
    // without being told.
    let mut cmd = unit.polis(&["router"]);
    cmd.env("INVOCATION_ID", "0123456789abcdef");
    let mut by_systemd = unit.start(cmd);
    let unit_pid = by_systemd.pid();
    unit.wait_for("the unit's router", || unit.router().filter(|r| r.pid == unit_pid));
    unit.module("echo", ECHO, "");
    unit.run(&["call", "echo", "ping"]).code(0);
    // The same in another mesh with a short linger, started after: it goes.
    leaves.module("echo", ECHO, "");
    let mut short = leaves.start_router(&["--linger", "100ms"]);
    leaves.run(&["call", "echo", "ping"]).code(0);
    assert!(short.wait(WAIT).0.success());
    assert!(router.try_exit().is_none(), "the router with --linger never is still there");
    assert_eq!(stays.router().map(|r| r.pid), Some(pid));
    assert!(by_systemd.try_exit().is_none(), "the router systemd runs is still there");
    stays.run(&["stop"]).code(0);
    assert!(router.wait(WAIT).0.success());
    // Its linger is `never`, not the default that outlasted this test: a
    // planned successor is started with the same settings.
    unit.run(&["router", "restart"]).code(0);
    assert!(by_systemd.wait(WAIT).0.success(), "the old router left office");
    let successor = unit.router().expect("the successor").pid;
    let cmdline = std::fs::read(format!("/proc/{successor}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args.iter().position(|a| *a == b"--linger").expect("--linger");
    assert_eq!(args[at + 1], b"never", "{:?}", String::from_utf8_lossy(&cmdline));
    unit.run(&["stop"]).code(0);
    unit.wait_for("the successor to leave", || (!polis_testing::procs::is_running(successor)).then_some(()));
}

#[test]
fn help_version_usage_and_module_list_read_cleanly() {
    let mesh = mesh();
    let help = mesh.run(&["--help"]).code(0).stdout();
    assert!(help.contains("Exit codes:") && help.contains("4  unavailable"), "{help}");
    let version = mesh.run(&["--version"]).code(0).stdout();
    assert!(version.starts_with("polis 0.1.0 (module protocol 1, frame session preamble 1"), "{version}");

    // A variable is not a flag given: the usage line does not show it.
    let mut cmd = mesh.command(crate::util::POLIS);
    cmd.env("POLIS_MODULES_PATH", &mesh.modules).env("POLIS_MESH_DIR", &mesh.dir).arg("call");
    let run = mesh.run_command(cmd);
    let usage = run.code(2).stderr();
    let usage = usage.lines().find(|l| l.starts_with("Usage:")).unwrap_or_else(|| panic!("{run}"));
    assert_eq!(usage, "Usage: polis call <SERVICE> <METHOD> [PARAMS]");

    mesh.module("echo", ECHO, "");
    let _router = mesh.start_router(&[]);
    let list = mesh.run(&["module", "list"]).code(0).stdout();
    assert!(list.starts_with("MODULE "), "no blank line first: {list:?}");
}

#[test]
fn completions_and_the_man_page_are_generated() {
    let mesh = mesh();
    let bash = mesh.run(&["completions", "bash"]).code(0).stdout();
    assert!(bash.contains("_polis()") && bash.contains("install"), "{bash}");
    let file = mesh.root().join("polis.bash");
    std::fs::write(&file, &bash).unwrap();
    let mut check = mesh.command("bash");
    check.arg("-n").arg(&file);
    mesh.run_command(check).code(0);
    let zsh = mesh.run(&["completions", "zsh"]).code(0).stdout();
    assert!(zsh.starts_with("#compdef polis"), "{zsh}");
    let fish = mesh.run(&["completions", "fish"]).code(0).stdout();
    assert!(fish.contains("complete -c polis"), "{fish}");
    mesh.run(&["completions", "tcsh"]).code(2);

    let man = mesh.run(&["man"]).code(0).stdout();
    assert!(man.contains(".TH polis 1"), "{man}");
    assert!(man.contains("Exit codes") && man.contains("completions"), "{man}");
}
