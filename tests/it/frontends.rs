//! Frontends: connect-or-launch, sessions and reference counting, and the
//! launcher going away, with real `polis` processes.

use std::{process::Stdio, time::Duration};

use crate::util::{COUNTER, ECHO, Process, TestMesh, WAIT, mesh, wait_until};

/// Starts `polis attach --name NAME` with extra environment (inherited by
/// a router it launches), in a process group of its own if `own_group`.
fn frontend(mesh: &TestMesh, name: &str, env: &[(&str, &str)], own_group: bool) -> Process {
    let mut cmd = mesh.polis(&["attach", "--name", name]);
    cmd.envs(env.iter().copied());
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    mesh.frontend(cmd)
}

/// Pids of running `polis router` processes of this mesh.
fn routers(mesh: &TestMesh) -> Vec<u32> {
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
    let mesh = mesh();
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
    mesh.wait_no_processes();
}

#[test]
fn the_launcher_may_die_without_interrupting_the_others() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    // A launches the router, in a process group of its own like a terminal's job.
    let mut a = frontend(&mesh, "a", &[], true);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    let router = mesh.router().unwrap();
    let mut b = frontend(&mesh, "b", &[], false);

    let mut failures = Vec::new();
    for i in 0..200 {
        if i == 50 {
            // As when A's terminal closes: its whole process group dies.
            let group = rustix::process::Pid::from_raw(a.pid() as i32).unwrap();
            rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
            a.wait(WAIT);
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
    assert!(b.quit().success(), "{}", b.describe());
    mesh.run(&["stop"]).code(0);
}

/// The names of the router's sessions, sorted, and the router's id, from
/// `polis status`; `None` when no router answers.
fn sessions(mesh: &TestMesh) -> Option<(Vec<String>, String)> {
    let run = mesh.run(&["status", "--json"]);
    (run.status().code() == Some(0)).then(|| {
        let status = run.json();
        let mut names: Vec<String> = status["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        (names, status["router"]["id"].as_str().unwrap_or_default().to_owned())
    })
}

#[test]
fn the_router_counts_sessions_and_leaves_after_the_last_with_its_modules() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    // A linger long enough to be seen from outside, and the router's log.
    let env = [("POLIS_LINGER", "1500ms"), ("POLIS_LOG", "info")];
    let mut a = frontend(&mesh, "a", &env, false);
    let mut b = frontend(&mesh, "b", &env, false);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    assert_eq!(b.call("echo ping"), "\"pong\"");
    let router = mesh.router().expect("a router");

    let (names, _) = sessions(&mesh).expect("the router answers");
    assert_eq!(names, ["a", "b"]);
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    let frontends = ls["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "frontend").count();
    assert_eq!(frontends, 2, "each frontend publishes its record: {ls}");

    assert!(a.quit().success(), "{}", a.describe());
    mesh.wait_for("A's session to end", || (sessions(&mesh)?.0 == ["b"]).then_some(()));
    // Past the linger, giving the router every chance to leave wrongly: B's
    // session keeps it. (Not a wait for readiness: nothing is to happen.)
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(b.call("echo ping"), "\"pong\"", "the router stayed for B");
    assert_eq!(routers(&mesh).len(), 1);

    assert!(b.quit().success(), "{}", b.describe());
    // It lingers: seen in office with no session left, then it leaves.
    let (_, id) = mesh.wait_for("the router in office with no session", || {
        sessions(&mesh).filter(|(names, _)| names.is_empty())
    });
    assert_eq!(id, router.id.to_string(), "the same router, lingering");
    mesh.wait_no_processes();
    let log = std::fs::read_to_string(mesh.dir.join("logs/router.log")).unwrap_or_default();
    assert!(log.contains("no sessions and no calls for 1.5s; leaving"), "it left after its linger\n{log}");
    assert!(!mesh.dir.join("router.json").exists());
    let ls = mesh.run(&["ls", "--json"]).code(0).json();
    assert_eq!(ls["nodes"], serde_json::json!([]), "no live record remains");
}

#[test]
fn a_hung_frontend_is_dropped_after_missed_keepalives() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let env = [
        ("POLIS_LINGER", "100ms"),
        ("POLIS_KEEPALIVE_INTERVAL", "100ms"),
        ("POLIS_KEEPALIVE_TIMEOUT", "600ms"),
        ("POLIS_LOG", "info"),
    ];
    let mut a = frontend(&mesh, "hung", &env, false);
    assert_eq!(a.call("echo ping"), "\"pong\"");
    let router = mesh.router().unwrap();

    a.signal(rustix::process::Signal::STOP);
    wait_until(WAIT, &mesh.dir, "the router to drop the hung session and leave", || {
        (!mesh.processes().contains(&router.pid)).then_some(())
    });
    assert!(polis_testing::procs::is_running(a.pid()), "the hung frontend is still there");
    // Why it went, in order: the keepalives were missed, then the linger ran out.
    let log = std::fs::read_to_string(mesh.dir.join("logs/router.log")).unwrap_or_default();
    let dropped = log.find("session closed: hung (missed keepalives: the frontend is hung)");
    let left = log.find("no sessions and no calls for 100ms; leaving");
    assert!(dropped.is_some() && dropped < left, "dropped for missed keepalives, then left\n{log}");
}

#[test]
fn names_resolve_to_the_nodes_serving_them() {
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let mut a = frontend(&mesh, "a", &[], false);
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
    assert!(a.quit().success(), "{}", a.describe());
    mesh.run(&["stop"]).code(0);
}

#[test]
fn a_router_hosted_in_a_frontend_moves_to_another_when_it_leaves() {
    let mesh = mesh();
    mesh.module("counter", COUNTER, "");
    let mut a = mesh.frontend(mesh.polis(&["attach", "--name", "a", "--host-router"]));
    let first = mesh.router().expect("a router");
    assert_eq!(first.pid, a.pid(), "A hosts the router in its own process");
    let mut b = mesh.frontend(mesh.polis(&["attach", "--name", "b", "--host-router"]));
    for n in 1..=3 {
        assert_eq!(b.call("counter incr"), n.to_string());
    }
    let counter = mesh.run(&["resolve", "counter"]).code(0).json()["pid"].clone();

    assert!(a.quit().success(), "{}", a.describe());
    let next = wait_until(WAIT, &mesh.dir, "B to host the next router", || {
        mesh.router().filter(|r| r.id != first.id)
    });
    assert_eq!(next.pid, b.pid(), "B took over");
    // The counter re-parented with its state; B's calls go on.
    let count = wait_until(WAIT, &mesh.dir, "B's calls to succeed again", || {
        Some(b.call("counter get")).filter(|answer| !answer.starts_with("error:"))
    });
    assert_eq!(count, "3");
    assert_eq!(b.call("counter incr"), "4");
    assert_eq!(mesh.run(&["resolve", "counter"]).code(0).json()["pid"], counter, "the same counter process");
    assert!(b.quit().success(), "{}", b.describe());
    mesh.wait_no_processes();
}
