//! Races and exhaustion (issue 11): calls that meet a router as it leaves,
//! idle connections, a module that floods unsolicited replies, and a
//! planned restart under load. Each loses no call and hurts nothing else.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use crate::util::{COUNTER, ECHO, POLIS, WAIT, mesh, wait_until};

// ---- finding 1: calls racing a leaving router ----

/// One-shot calls every few milliseconds while each router lingers only
/// 30 ms, so that routers keep leaving and being launched under the calls:
/// a router that is leaving refuses new work as not run, and the caller
/// finds or launches the next one. No call fails.
#[test]
fn one_shot_calls_racing_routers_that_keep_leaving_all_succeed() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    const THREADS: usize = 4;
    const CALLS: usize = 60;
    // Every tenth call, all threads pause together for longer than the
    // linger, so that the router is idle and leaves however loaded the
    // machine is.
    let together = std::sync::Barrier::new(THREADS);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let mesh = &mesh;
                let together = &together;
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..CALLS {
                        let mut cmd = mesh.polis(&["call", "echo", "ping"]);
                        cmd.env("POLIS_LINGER", "30ms").env("POLIS_LOG", "info");
                        let run = mesh.run_command(cmd);
                        if run.status().code() != Some(0) || !run.stdout().contains("pong") {
                            failed.push(format!("{:?}: {}", run.status().code(), run.stderr().trim()));
                        }
                        // Pacing, not waiting for a state: gaps of 0 to
                        // 45 ms around the linger, so that routers leave
                        // between calls and while they arrive.
                        std::thread::sleep(Duration::from_millis(((i * 7 + t * 13) % 46) as u64));
                        if i % 10 == 9 {
                            together.wait();
                            std::thread::sleep(Duration::from_millis(150));
                        }
                    }
                    failed
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} of {} calls failed: {failures:#?}", failures.len(), THREADS * CALLS);
    // The race was run: routers left and were launched under the calls.
    let log = std::fs::read_to_string(mesh.dir.join("logs").join("router.log")).unwrap();
    let terms = log.matches("router in office at").count();
    assert!(terms > 1, "routers left between calls: {terms} terms in the log");
}

// ---- finding 2: idle connections ----

/// The HTTP/2 client preface, as a gRPC client opens with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection to the router's socket that sends `first` and then nothing.
fn idle(mesh: &polis_testing::TestMesh, first: &[u8]) -> UnixStream {
    let mut conn = UnixStream::connect(mesh.dir.join("router.sock")).expect("connect to router.sock");
    conn.write_all(first).unwrap();
    conn
}

/// Reads until the router closes `conn` (EOF or reset); panics if it is
/// still open after [`WAIT`].
fn closed_by_router(mut conn: UnixStream, what: &str) {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: still open after {WAIT:?} ({e})"),
        }
    }
}

/// The router's open-file limit starts low (soft 128, hard as it was): more
/// idle connections than it would allow leave new calls and an existing
/// session working, since the router raises its soft limit to the hard one.
#[test]
fn idle_connections_beyond_the_soft_nofile_limit_leave_calls_working() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut cmd = mesh.command("sh");
    cmd.arg("-c").arg(r#"ulimit -Sn 128 && exec "$0" "$@""#).arg(POLIS);
    cmd.arg("--mesh-dir").arg(&mesh.dir).arg("--modules-path").arg(&mesh.modules);
    cmd.arg("router");
    let _router = mesh.start(cmd);
    mesh.wait_router();
    let mut editor = mesh.start_frontend("editor");
    assert_eq!(editor.call("echo ping"), "\"pong\"");

    let preamble = polis_mesh::preamble::encode(polis_mesh::preamble::VERSION);
    let conns: Vec<_> = (0..200)
        .map(|i| match i % 3 {
            0 => idle(&mesh, b""),
            1 => idle(&mesh, &preamble),
            _ => idle(&mesh, H2_PREFACE),
        })
        .collect();

    let run = mesh.run(&["call", "echo", "ping", "--timeout", "10000"]);
    run.code(0);
    assert!(run.stdout().contains("pong"), "{}", run.stdout());
    assert_eq!(editor.call("echo ping"), "\"pong\"", "the existing session is served");
    drop(conns);
}

/// A connection that sends nothing, one that sends the frame preamble and
/// then nothing, and one that sends the HTTP/2 preface and then nothing are
/// each closed by the router within a deadline.
#[test]
fn connections_that_complete_no_handshake_are_closed() {
    let mesh = mesh();
    let mut cmd = mesh.polis(&["router"]);
    cmd.env("POLIS_KEEPALIVE_TIMEOUT", "2s");
    let _router = mesh.start(cmd);
    mesh.wait_router();
    let preamble = polis_mesh::preamble::encode(polis_mesh::preamble::VERSION);
    closed_by_router(idle(&mesh, b""), "a silent connection");
    closed_by_router(idle(&mesh, &preamble), "a frame connection silent after its preamble");
    closed_by_router(idle(&mesh, H2_PREFACE), "a gRPC connection silent after its preface");
}

/// Over the bound on connections, a new call is refused with a clear
/// RESOURCE_EXHAUSTED, an existing session keeps working, and once the
/// idle connections are gone new calls work again.
#[test]
fn connections_over_the_bound_are_refused_clearly_and_sessions_go_on() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut cmd = mesh.polis(&["router"]);
    cmd.env("POLIS_MAX_CONNECTIONS", "8");
    let _router = mesh.start(cmd);
    mesh.wait_router();
    let mut editor = mesh.start_frontend("editor");
    assert_eq!(editor.call("echo ping"), "\"pong\"");

    // Seven frame connections, each seen through its preamble answer: with
    // the editor's session, the router holds its eight.
    let preamble = polis_mesh::preamble::encode(polis_mesh::preamble::VERSION);
    let conns: Vec<_> = (0..7)
        .map(|_| {
            let mut conn = idle(&mesh, &preamble);
            conn.set_read_timeout(Some(WAIT)).unwrap();
            let mut answer = [0; polis_mesh::preamble::LEN];
            conn.read_exact(&mut answer).expect("the router answers the preamble");
            conn
        })
        .collect();

    let run = mesh.run(&["call", "echo", "ping"]);
    run.code(1);
    let error = run.error_line();
    assert!(error.starts_with("error: RESOURCE_EXHAUSTED: "), "{error}");
    assert!(error.contains("8 connections open"), "names the limit: {error}");
    assert_eq!(editor.call("echo ping"), "\"pong\"", "the existing session is served");

    drop(conns);
    mesh.wait_for("a new call to work once the idle connections are gone", || {
        (mesh.run(&["call", "echo", "ping"]).status().code() == Some(0)).then_some(())
    });
}

// ---- finding 5: a module flooding replies nobody asked for ----

/// Answers `initialize`, then meets every request with a flood of replies
/// for ids the router never sent, and never answers the request itself.
const FLOODER: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
    elif "id" in msg:
        for i in range(10000):
            print(json.dumps({"jsonrpc": "2.0", "id": 10**9 + i, "result": "x"}), flush=True)
"#;

/// The flood ends the module's link with a reason that says so: its call
/// fails with it (long before its 60 s deadline), the log names it, and the
/// router goes on serving other modules.
#[test]
fn a_module_flooding_unsolicited_replies_loses_its_link_and_its_calls_fail_at_once() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    mesh.script_module("flooder", "jsonrpc", FLOODER, "");
    let _router = mesh.start_router(&[]);

    let run = mesh.run(&["call", "flooder", "go", "--timeout", "60000"]);
    run.code(4);
    let error = run.error_line();
    assert!(error.contains("replies for requests never made"), "{error}");
    let log = std::fs::read_to_string(mesh.dir.join("logs").join("router.log")).unwrap_or_default();
    let status = mesh.run(&["status"]).stdout();
    assert!(
        log.contains("replies for requests never made") || status.contains("replies for requests never made"),
        "the reason is in the log or `polis status`:\n{status}\n{log}"
    );
    mesh.run(&["call", "echo", "ping"]).code(0);
}

// ---- finding 11: errors with a code, names cut ----

/// A 100 kB invalid service name is not echoed whole: the error stays one
/// short line with its code.
#[test]
fn a_huge_invalid_service_name_is_cut_in_the_error() {
    let mesh = mesh();
    let _router = mesh.start_router(&[]);
    let name = "X".repeat(100_000);
    let run = mesh.run(&["call", &name, "ping"]);
    let error = run.error_line();
    assert!(
        error.starts_with("error: INVALID_ARGUMENT: invalid service name"),
        "{}",
        &error[..200.min(error.len())]
    );
    assert!(error.len() < 400, "the name is cut: {} bytes", error.len());
    assert!(error.contains('…'), "{error}");
}

/// With no router and launching off, the line has its code like any other.
#[test]
fn cannot_reach_the_router_has_a_code_in_its_error_line() {
    let mesh = mesh();
    let run = mesh.run(&["call", "--no-launch", "echo", "ping"]);
    run.code(4);
    assert!(run.error_line().starts_with("error: UNAVAILABLE: no router is running"), "{}", run.error_line());
    let run = mesh.run(&["router", "restart"]);
    run.code(4);
    assert!(run.error_line().starts_with("error: UNAVAILABLE: "), "{}", run.error_line());
}

// ---- finding 8: a planned restart under load ----

/// Two frontends make non-idempotent calls (a counter's `incr`, which no
/// client retries once sent) as fast as they can while the router is
/// restarted again and again: the old router finishes what it accepted
/// before it lets the modules go, and refuses what arrives after its
/// decision as not run, which the frontends take to the successor. No call
/// fails, and the count is the number of calls answered: none was lost or
/// run twice.
#[test]
fn planned_restarts_under_two_busy_frontends_lose_no_call() {
    let mesh = mesh();
    mesh.module("counter", COUNTER, "");
    const RESTARTS: usize = 8;
    let _router = mesh.start_router(&["--linger", "never"]);
    let mut a = mesh.start_frontend("a");
    let mut b = mesh.start_frontend("b");
    assert_eq!(a.call("counter incr"), "1");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (answers, restarted) = std::thread::scope(|scope| {
        let busy: Vec<_> = [&mut a, &mut b]
            .into_iter()
            .map(|frontend| {
                let done = &done;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        answers.push(frontend.call("counter incr"));
                    }
                    answers
                })
            })
            .collect();
        let mut restarted = Vec::new();
        for _ in 0..RESTARTS {
            let before = mesh.router().expect("a router in office").pid;
            let run = mesh.run(&["router", "restart"]);
            run.code(0);
            restarted.push((before, mesh.router().map(|r| r.pid)));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let answers: Vec<String> = busy.into_iter().flat_map(|t| t.join().unwrap()).collect();
        (answers, restarted)
    });
    let failed: Vec<&String> = answers.iter().filter(|a| a.parse::<u64>().is_err()).collect();
    assert!(failed.is_empty(), "{} of {} calls failed: {failed:#?}", failed.len(), answers.len());
    // Every increment answered once, each with its own count: 2 ..= n + 1.
    let mut counts: Vec<u64> = answers.iter().map(|a| a.parse().unwrap()).collect();
    counts.sort_unstable();
    let expected: Vec<u64> = (2..=answers.len() as u64 + 1).collect();
    assert!(counts == expected, "counts are not 2..={}: {counts:?}", answers.len() + 1);
    assert_eq!(a.call("counter get"), (answers.len() + 1).to_string(), "the count is the calls answered");
    // The race was run: every restart handed over under the calls.
    assert!(restarted.iter().all(|(before, after)| Some(*before) != *after), "{restarted:?}");
    assert!(answers.len() > 2 * RESTARTS, "the frontends were busy: {} calls", answers.len());
    assert!(a.quit().success(), "{}", a.describe());
    assert!(b.quit().success(), "{}", b.describe());
    mesh.run(&["stop"]).code(0);
    // A frontend that met a leaving router may have launched one of its
    // own, which stands by behind the successor and takes office once it
    // stops (a redundant standby, not a lost call): stop that one too.
    wait_until(WAIT, &mesh.dir, "every router to stop", || {
        let _ = mesh.run(&["stop"]);
        mesh.processes().is_empty().then_some(())
    });
}
