//! Frontends: connect-or-launch, sessions and reference counting, and the
//! launcher going away, with real `polis` processes.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::util::{ECHO, Mesh, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// A `polis attach` frontend: calls go in on stdin, answers come out on stdout.
struct Frontend {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Frontend {
    /// Starts `polis ARGS` (an `attach`), as [`Frontend::start`] does.
    fn start_with(mesh: &Mesh, args: &[&str]) -> Self {
        Self::spawn(mesh.polis(args), &[], false)
    }

    /// Starts `polis attach` with extra environment (inherited by a router it launches).
    fn start(mesh: &Mesh, name: &str, env: &[(&str, &str)], own_group: bool) -> Self {
        Self::spawn(mesh.polis(&["attach", "--name", name]), env, own_group)
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)], own_group: bool) -> Self {
        cmd.envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let mut child = cmd.spawn().expect("spawn polis attach");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut frontend = Self { child, stdin, lines };
        let attached = frontend.line();
        assert!(attached.starts_with("attached: router pid "), "{attached}");
        frontend
    }

    fn line(&mut self) -> String {
        self.lines.recv_timeout(WAIT).expect("a line from polis attach")
    }

    /// One call; the answer line.
    fn call(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write a call");
        stdin.flush().expect("flush");
        self.line()
    }

    /// Ends stdin: the frontend says goodbye and exits.
    fn quit(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "polis attach exited with {status}");
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of running `polis router` processes of this mesh.
fn routers(mesh: &Mesh) -> Vec<u32> {
    mesh.processes()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"router")
        })
        .collect()
}

#[test]
fn twenty_frontends_at_once_share_one_launched_router() {
    let mesh = Mesh::new();
    mesh.module("echo", ECHO, "");
    let calls: Vec<_> = (0..20)
        .map(|i| {
            mesh.polis(&["call", "echo", "echo", &format!("{{\"i\":{i}}}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let out = call.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "call {i} failed: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{{\"i\":{i}}}"));
    }
    let running = routers(&mesh);
    assert_eq!(running.len(), 1, "exactly one router process: {running:?}");
    assert_eq!(mesh.router().unwrap().pid, running[0]);
    mesh.run(&["stop"]).code(0);
    mesh.wait_no_processes(WAIT);
}

#[test]
fn the_launcher_may_die_without_interrupting_the_others() {
    let mesh = Mesh::new();
    mesh.module("echo", ECHO, "");
    // A launches the router, in a process group of its own like a terminal's job.
    let mut a = Frontend::start(&mesh, "a", &[], true);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    let router = mesh.router().unwrap();
    let mut b = Frontend::start(&mesh, "b", &[], false);

    let mut failures = Vec::new();
    for i in 0..200 {
        if i == 50 {
            // As when A's terminal closes: its whole process group dies.
            let group = rustix::process::Pid::from_raw(a.child.id() as i32).unwrap();
            rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
            a.child.wait().unwrap();
        }
        let answer = b.call(&format!("echo echo {{\"i\":{i}}}"));
        if answer != format!("{{\"i\":{i}}}") {
            failures.push((i, answer));
        }
    }
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    let now = mesh.router().expect("the router is still in office");
    assert_eq!((now.id, now.pid), (router.id, router.pid), "the same router served throughout");
    drop(a);
    b.quit();
    mesh.run(&["stop"]).code(0);
}

#[test]
fn the_router_counts_sessions_and_leaves_after_the_last_with_its_modules() {
    let mesh = Mesh::new();
    mesh.module("echo", ECHO, "");
    let linger = [("POLIS_LINGER", "400ms")];
    let mut a = Frontend::start(&mesh, "a", &linger, false);
    let mut b = Frontend::start(&mesh, "b", &linger, false);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    assert_eq!(b.call("echo ping"), "\"pong\"");

    let status = mesh.run(&["status", "--json"]).code(0).json();
    let mut names: Vec<&str> =
        status["sessions"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    let frontends = ls["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "frontend").count();
    assert_eq!(frontends, 2, "each frontend publishes its record: {ls}");

    a.quit();
    // Well past the linger: B's session keeps the router.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(b.call("echo ping"), "\"pong\"", "the router stayed for B");
    assert_eq!(routers(&mesh).len(), 1);

    let left = Instant::now();
    b.quit();
    mesh.wait_no_processes(WAIT);
    println!("router and modules gone {:?} after the last session (linger 400 ms)", left.elapsed());
    assert!(left.elapsed() >= Duration::from_millis(400), "it lingered first");
    assert!(!mesh.dir.join("router.json").exists());
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    assert_eq!(ls["nodes"], serde_json::json!([]), "no live record remains");
}

#[test]
fn a_hung_frontend_is_dropped_after_missed_keepalives() {
    let mesh = Mesh::new();
    mesh.module("echo", ECHO, "");
    let env = [
        ("POLIS_LINGER", "100ms"),
        ("POLIS_KEEPALIVE_INTERVAL", "100ms"),
        ("POLIS_KEEPALIVE_TIMEOUT", "600ms"),
    ];
    let mut a = Frontend::start(&mesh, "hung", &env, false);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    let router = mesh.router().unwrap();

    let pid = rustix::process::Pid::from_raw(a.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let stopped = Instant::now();
    wait_until(WAIT, &mesh.dir, "the router to drop the hung session and leave", || {
        (!mesh.processes().contains(&router.pid)).then_some(())
    });
    println!(
        "router left {:?} after the frontend was stopped (timeout 600 ms + linger 100 ms)",
        stopped.elapsed()
    );
    assert!(stopped.elapsed() >= Duration::from_millis(600), "not before the keepalive timeout");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

#[test]
fn names_resolve_to_the_nodes_serving_them() {
    let mesh = Mesh::new();
    mesh.module("echo", ECHO, "");
    let mut a = Frontend::start(&mesh, "a", &[], false);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    let router = mesh.router().unwrap();
    let echo = mesh.run(&["resolve", "echo"]).code(0).json();
    assert_eq!(echo["role"], "module");
    assert_eq!(echo["services"], serde_json::json!(["echo"]));
    assert_eq!(echo["router"], router.id.to_string());
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let module_pid =
        status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "echo").unwrap()["pid"].clone();
    assert_eq!(echo["pid"], module_pid);
    assert_eq!(mesh.run(&["resolve", "router"]).code(0).json()["id"], router.id.to_string());
    a.quit();
    mesh.run(&["stop"]).code(0);
}

#[test]
fn a_router_hosted_in_a_frontend_moves_to_another_when_it_leaves() {
    let mesh = Mesh::new();
    mesh.module("counter", crate::util::COUNTER, "");
    let a = Frontend::start_with(&mesh, &["attach", "--name", "a", "--host-router"]);
    let first = mesh.router().expect("a router");
    assert_eq!(first.pid, a.child.id(), "A hosts the router in its own process");
    let mut b = Frontend::start_with(&mesh, &["attach", "--name", "b", "--host-router"]);
    for n in 1..=3 {
        assert_eq!(b.call("counter incr"), n.to_string());
    }
    let counter = mesh.run(&["resolve", "counter"]).code(0).json()["pid"].clone();

    a.quit();
    let next = wait_until(WAIT, &mesh.dir, "B to host the next router", || {
        mesh.router().filter(|r| r.id != first.id)
    });
    assert_eq!(next.pid, b.child.id(), "B took over");
    // The counter re-parented with its state; B's calls go on.
    let count = wait_until(WAIT, &mesh.dir, "B's calls to succeed again", || {
        Some(b.call("counter get")).filter(|answer| !answer.starts_with("error:"))
    });
    assert_eq!(count, "3");
    assert_eq!(b.call("counter incr"), "4");
    assert_eq!(mesh.run(&["resolve", "counter"]).code(0).json()["pid"], counter, "the same counter process");
    b.quit();
    mesh.wait_no_processes(WAIT);
}
