//! Router handover: standbys, re-parented modules keeping their state, and
//! frontends re-attaching, with real processes killed for real.
//!
//! A test binary of its own: cargo runs test binaries one after another, so
//! these tests, which keep several routers and frontends busy, do not share
//! the CPUs with the rest of the suite. They assert correctness only; the
//! failover gap they print is information (polis-bench measures it).

#[path = "it/util.rs"]
#[allow(dead_code)]
mod util;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use polis_client::{CallOptions, Client, ClientOptions};
use serde_json::json;

use util::{COUNTER, ECHO, Process, TestMesh, WAIT, listing, mesh, wait_until};

/// The tests of this binary take turns: each has the machine to itself.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the next may still run.
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

use polis_testing::procs::routers_in_office;

/// Samples [`routers_in_office`] until dropped; remembers the most seen.
struct OfficeSampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OfficeSampler {
    fn start(mesh: &TestMesh) -> Self {
        let (stop, most) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let dir = mesh.dir.clone();
        let thread = std::thread::spawn({
            let (stop, most) = (stop.clone(), most.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    most.fetch_max(routers_in_office(&dir), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Self { stop, most, thread: Some(thread) }
    }

    fn most(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.most.load(Ordering::Relaxed)
    }
}

fn standby(mesh: &TestMesh) -> Process {
    mesh.start_standby(&["-v"])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The turn is held for the whole test, awaits included: each test has a
// runtime of its own, so nothing else waits on this lock inside it.
#[allow(clippy::await_holding_lock)]
async fn fifty_router_kills_lose_no_state_and_no_frontend() {
    let _alone = alone();
    const KILLS: usize = 50;
    const FRONTENDS: usize = 4;
    let mesh = mesh();
    mesh.module("counter", COUNTER, "");
    let mut router = mesh.spawn(&["-v", "router"]);
    let first = mesh.wait_router();
    let sampler = OfficeSampler::start(&mesh);

    // Four frontends, each incrementing with idempotency keys, counting what succeeded.
    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicU64::new(0));
    let mut frontends = Vec::new();
    let mut last_success = Vec::new();
    for f in 0..FRONTENDS {
        let options = ClientOptions {
            mesh_dir: Some(mesh.dir.clone()),
            launch: None,
            ..ClientOptions::new(format!("f{f}"))
        };
        let client = Client::connect(options).await.expect("connect");
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        last_success.push(last.clone());
        let (stop, successes) = (stop.clone(), successes.clone());
        frontends.push(tokio::spawn(async move {
            let options =
                CallOptions { timeout: Some(Duration::from_secs(5)), idempotent: true, ..Default::default() };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let params = json!({"key": format!("{f}-{n}")});
                match client.call_json_with("counter", "incr", &params, options).await {
                    Ok(_) => {
                        successes.fetch_add(1, Ordering::Relaxed);
                        *last.lock().unwrap() = Instant::now();
                    }
                    Err(e) => panic!("frontend {f}: incr {n} failed: {e}"),
                }
                // An editor's pace, not a benchmark's: four flat-out loops
                // would starve the very standby that is to take over.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client.close().await;
        }));
    }

    let mut gaps = Vec::new();
    let mut offices = Vec::new();
    let counter_pid = {
        wait_until(WAIT, &mesh.dir, "a first increment", || {
            (successes.load(Ordering::Relaxed) > 0).then_some(())
        });
        mesh.run(&["resolve", "counter"]).code(0).json()["pid"].as_u64().unwrap()
    };
    let first_epoch = first.epoch.unwrap();
    for epoch in (first_epoch + 1..).take(KILLS) {
        let next = standby(&mesh);
        let killed = Instant::now();
        router.kill();
        router = next;
        wait_until(WAIT, &mesh.dir, "the standby to take office", || {
            mesh.router().filter(|r| r.epoch == Some(epoch)).map(|_| ())
        });
        offices.push(killed.elapsed());
        // Every frontend's next call succeeds: within the deadline, at all.
        for last in &last_success {
            let gap = wait_until(WAIT, &mesh.dir, "every frontend to succeed again", || {
                let at = *last.lock().unwrap();
                (at > killed).then(|| at - killed)
            });
            gaps.push(gap);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in frontends {
        f.await.expect("a frontend failed");
    }
    let most = sampler.most();

    // Information only: polis-bench measures the failover gap.
    gaps.sort();
    offices.sort();
    println!(
        "the standby was in office (router.json published) after p50 {:.1} ms, p99 {:.1} ms",
        percentile(&offices, 0.5).as_secs_f64() * 1e3,
        percentile(&offices, 0.99).as_secs_f64() * 1e3
    );
    let (p50, p99, max) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99), *gaps.last().unwrap());
    println!(
        "{KILLS} router kills, {FRONTENDS} frontends: calls succeed again after p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert_eq!(most, 1, "never two routers in office at once");
    let count = mesh.run(&["call", "--no-launch", "counter", "get"]).code(0).json();
    let succeeded = successes.load(Ordering::Relaxed);
    assert_eq!(
        count,
        json!(succeeded),
        "the count equals the increments that succeeded\n{}",
        listing(&mesh.dir)
    );
    let now = mesh.run(&["resolve", "counter"]).code(0).json();
    assert_eq!(now["pid"].as_u64(), Some(counter_pid), "one counter process, re-parented {KILLS} times");

    mesh.run(&["stop"]).code(0);
    drop(router);
    mesh.wait_no_processes();
}

#[test]
fn jsonrpc_modules_are_loaded_again_by_the_next_router() {
    let _alone = alone();
    let mesh = mesh();
    let pyecho = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/pyecho/pyecho.py");
    mesh.manifest("pyecho", &format!("exec = {:?}\nprotocol = \"jsonrpc\"", pyecho.display().to_string()));
    let mut router = mesh.spawn(&["router"]);
    mesh.wait_router();
    assert_eq!(mesh.run(&["call", "pyecho", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let old_pid = mesh.run(&["status", "--json"]).json()["modules"][0]["pid"].as_u64().unwrap();
    let _next = standby(&mesh);
    router.kill();
    wait_until(WAIT, &mesh.dir, "the old pyecho to exit with its stdin", || {
        (!polis_testing::procs::is_running(old_pid as u32)).then_some(())
    });
    wait_until(WAIT, &mesh.dir, "the standby in office", || mesh.router().filter(|r| r.epoch == Some(2)));
    assert_eq!(mesh.run(&["call", "pyecho", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let new_pid = mesh.run(&["status", "--json"]).json()["modules"][0]["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid, "a new process, loaded lazily");
    mesh.run(&["stop"]).code(0);
}

#[test]
fn an_sdk_module_waits_for_a_router_and_exits_when_none_comes() {
    let _alone = alone();
    let mesh = mesh();
    // Long enough to see it waiting from outside, even on a loaded machine.
    mesh.module("echo", ECHO, "[env]\nPOLIS_REATTACH_WAIT = \"2000\"");
    let mut router = mesh.spawn(&["router"]);
    mesh.wait_router();
    mesh.run(&["call", "echo", "ping"]).code(0);
    let pid = mesh.run(&["resolve", "echo"]).code(0).json()["pid"].as_u64().unwrap() as u32;
    router.kill();
    // The router is dead and reaped; its orphan is still there, waiting.
    assert!(
        polis_testing::procs::is_running(pid),
        "the orphaned echo waits for a router\n{}",
        listing(&mesh.dir)
    );
    wait_until(WAIT, &mesh.dir, "the orphaned echo to give up", || {
        (!polis_testing::procs::is_running(pid)).then_some(())
    });
    let log = std::fs::read_to_string(mesh.dir.join("logs/echo.log")).unwrap();
    assert!(log.contains("no router came within 2s"), "{log}");
}

/// Polls `check` every millisecond without blocking the runtime, with a
/// deadline; on failure, shows the mesh.
async fn wait_async<T>(mesh: &TestMesh, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", listing(&mesh.dir));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the echo binary by hand, loading itself into the mesh as `name`.
fn self_loaded(mesh: &TestMesh, name: &str) -> Process {
    let mut cmd = mesh.command(ECHO);
    cmd.arg("--attach").arg(&mesh.dir).env("POLIS_SERVICE", name);
    mesh.start(cmd)
}

#[test]
fn a_self_loaded_module_serves_by_name_until_it_leaves() {
    let _alone = alone();
    let mesh = mesh();
    mesh.module("echo", ECHO, "");
    let _router = mesh.spawn(&["router"]);
    mesh.wait_router();

    // No manifest: only the running program serves "hand".
    let mut hand = self_loaded(&mesh, "hand");
    wait_until(WAIT, &mesh.dir, "the self-loaded module to attach", || {
        let record = mesh.run(&["resolve", "hand"]);
        (record.output.status.code() == Some(0)).then_some(())
    });
    assert_eq!(mesh.run(&["call", "hand", "echo", r#"{"by":"hand"}"#]).code(0).json(), json!({"by": "hand"}));
    let status = mesh.run(&["status", "--json"]).code(0).json();
    let listed = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "hand").cloned().unwrap();
    assert_eq!(
        (listed["state"].as_str(), listed["pid"].as_u64()),
        (Some("running"), Some(u64::from(hand.pid())))
    );
    hand.kill();
    wait_until(WAIT, &mesh.dir, "the router to drop it", || {
        let run = mesh.run(&["call", "hand", "ping"]);
        (run.output.status.code() == Some(3)).then(|| assert!(run.stderr().contains("NOT_FOUND"), "{run}"))
    });

    // With a manifest, the service is loaded lazily again once it leaves.
    let mut by_hand = self_loaded(&mesh, "echo");
    let hand_pid = u64::from(by_hand.pid());
    wait_until(WAIT, &mesh.dir, "echo to attach", || {
        let run = mesh.run(&["resolve", "echo"]);
        (run.output.status.code() == Some(0) && run.json()["pid"].as_u64() == Some(hand_pid)).then_some(())
    });
    assert_eq!(mesh.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    by_hand.kill();
    assert_eq!(mesh.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let pid = mesh.run(&["resolve", "echo"]).code(0).json()["pid"].as_u64().unwrap();
    assert_ne!(pid, hand_pid, "loaded from the manifest");
    mesh.run(&["stop"]).code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The turn is held for the whole test, awaits included: each test has a
// runtime of its own, so nothing else waits on this lock inside it.
#[allow(clippy::await_holding_lock)]
async fn a_restart_under_load_fails_no_call_started_after_the_successor_took_office() {
    let _alone = alone();
    let mesh = mesh();
    mesh.module("counter", COUNTER, "");
    let _router = mesh.spawn(&["router"]);
    let old = mesh.wait_router();
    let options =
        ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new("load") };
    let client = Arc::new(Client::connect(options).await.expect("connect"));
    client.call_json("counter", "incr", &json!({"key": "first"}), None).await.unwrap();

    // Calls started while the successor is in office are timed against it.
    let in_office: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let rounds_after = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let (client, in_office, stop, rounds) =
            (client.clone(), in_office.clone(), stop.clone(), rounds.clone());
        let rounds_after = rounds_after.clone();
        async move {
            let (mut after, mut failed_after, mut incrs) = (0, Vec::new(), 1u64);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                // Keyed increments are retried through the handover; `get`s
                // are not, so they show any call that fails.
                let keyed = client
                    .call_json_with(
                        "counter",
                        "incr",
                        &json!({"key": n.to_string()}),
                        CallOptions {
                            timeout: Some(Duration::from_secs(5)),
                            idempotent: true,
                            ..Default::default()
                        },
                    )
                    .await;
                let plain = client.call_json("counter", "get", &json!(null), None).await;
                incrs += u64::from(keyed.is_ok());
                rounds.fetch_add(1, Ordering::Relaxed);
                if in_office.lock().unwrap().is_some_and(|t| started > t) {
                    after += 1;
                    rounds_after.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = plain {
                        failed_after.push(e.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (after, failed_after, incrs)
        }
    });
    wait_async(&mesh, "calls under way", || (rounds.load(Ordering::Relaxed) >= 20).then_some(())).await;
    let restart = tokio::task::spawn_blocking({
        let (polis, dir) = (mesh.polis(&["router", "restart"]), mesh.dir.clone());
        move || polis_testing::Run::within(polis, WAIT, Some(&dir))
    });
    let new = wait_async(&mesh, "the successor in office", || mesh.router().filter(|r| r.id != old.id)).await;
    *in_office.lock().unwrap() = Some(Instant::now());
    restart.await.unwrap().code(0);
    assert_eq!(new.epoch, Some(2));
    wait_async(&mesh, "50 rounds of calls after the handover", || {
        (rounds_after.load(Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (after, failed_after, incrs) = load.await.unwrap();
    assert!(after >= 50, "calls ran after the handover: {after}");
    assert!(
        failed_after.is_empty(),
        "{} of {after} calls failed after the successor took office: {failed_after:?}",
        failed_after.len()
    );
    let count = client.call_json("counter", "get", &json!(null), None).await.unwrap();
    assert_eq!(count, json!(incrs), "the counter kept its state");
    Arc::try_unwrap(client).unwrap().close().await;
    mesh.run(&["stop"]).code(0);
}

#[test]
fn the_harness_runs_routers_standbys_frontends_and_checks_the_invariants() {
    let _alone = alone();
    let mesh = mesh();
    mesh.module("counter", COUNTER, "");
    let mut router = mesh.start_router(&[]);
    let _standby = mesh.start_standby(&[]);
    let mut frontend = mesh.start_frontend("tester");
    assert_eq!(frontend.call("counter incr"), "1");
    assert_eq!(mesh.routers_in_office(), 1);
    mesh.check_records().unwrap();

    router.kill();
    let next = mesh.wait_for("the standby in office", || mesh.router().filter(|r| r.epoch == Some(2)));
    assert_ne!(next.pid, router.pid());
    let count = mesh.wait_for("the frontend's calls to succeed again", || {
        Some(frontend.call("counter get")).filter(|a| !a.starts_with("error:"))
    });
    assert_eq!(count, "1", "the counter kept its state");
    assert_eq!(mesh.routers_in_office(), 1);
    mesh.check_records().unwrap();

    // A record of a running process whose lock nobody holds breaks an invariant.
    let mut fake = polis_discovery::NodeRecord::new(polis_discovery::Role::Frontend, "liar");
    fake.pid = std::process::id();
    let path = mesh.dir.join(format!("nodes/{}.json", fake.id));
    std::fs::write(&path, fake.to_json()).unwrap();
    let err = mesh.check_records().unwrap_err();
    assert!(err.contains("has no lock held"), "{err}");
    std::fs::remove_file(&path).unwrap();

    assert!(frontend.quit().success());
    mesh.teardown(WAIT).unwrap();
    assert!(mesh.processes().is_empty());
}
