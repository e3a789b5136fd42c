//! A partition of the router's host, on a mesh whose directory is etcd:
//! router hosts in network namespaces of their own (`polis_testing::Netns`,
//! needs root and iproute2: the test fails, never skips, without them),
//! joined to the root namespace, where etcd and the majority side's
//! frontend run, by a veth link each. Taking the leader's link down
//! partitions it from etcd and from the other hosts.
//!
//! The module called is `polis-fence` (modules/fence): a counter in a file
//! every host shares, which refuses (and counts as `stale`) a call routed
//! by a router whose epoch is older than the greatest that wrote. So two
//! routers accepting calls at once would show as `stale > 0`, and a lost
//! increment as an OK answer whose id is not in the file.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use polis_testing::{EtcdCluster, Netns, Process, Run};
use serde_json::Value;

use crate::util::{ECHO, FENCE, TestMesh, WAIT, mesh, wait_until};

/// The lease TTL of these meshes, in seconds.
const TTL: u64 = 2;

/// One machine of the mesh: a temp mesh with the fence module, in a
/// network namespace or not, reaching etcd through `url`.
struct Host<'a> {
    mesh: TestMesh,
    url: String,
    token: PathBuf,
    netns: Option<&'a Netns>,
}

impl<'a> Host<'a> {
    fn new(cluster: &EtcdCluster, netns: Option<&'a Netns>, token: &Path, state: &Path) -> Self {
        let mesh = mesh();
        mesh.module("fence", FENCE, &format!("[config]\nstate = {:?}", state.display().to_string()));
        mesh.module("echo", ECHO, "");
        let url = match netns {
            Some(ns) => cluster.url_at(ns.root_ip().into(), "polis/partition", TTL),
            None => cluster.url("polis/partition", TTL),
        };
        Self { mesh, url, token: token.to_owned(), netns }
    }

    /// `polis ARGS` on this host: in its namespace, if it has one.
    fn command(&self, cmd: Command) -> Command {
        match self.netns {
            Some(ns) => ns.wrap(&cmd),
            None => cmd,
        }
    }

    /// `polis --discovery URL --token-file TOKEN ARGS`: through etcd.
    fn polis(&self, args: &[&str]) -> Command {
        let mut cmd = self.mesh.polis(&["--discovery", &self.url]);
        cmd.arg("--token-file").arg(&self.token).args(args);
        self.command(cmd)
    }

    /// `polis ARGS` on the host's own mesh directory: its router's Unix
    /// socket, no etcd.
    fn local(&self, args: &[&str]) -> Command {
        self.command(self.mesh.polis(args))
    }

    fn run(&self, cmd: Command) -> Run {
        self.mesh.run_command(cmd)
    }

    /// A router candidate, its TCP endpoint on the namespace's address.
    fn router(&self) -> Process {
        let ip = self.netns.map_or_else(|| "127.0.0.1".to_owned(), |ns| ns.ip().to_string());
        self.mesh.start(self.polis(&["router", "--listen", &format!("{ip}:0")]))
    }

    fn resolve(&self) -> Option<Value> {
        let run = self.run(self.polis(&["resolve", "router"]));
        run.status().success().then(|| run.json())
    }
}

/// One `fence incr` as a frontend saw it.
#[derive(Debug)]
struct Answer {
    id: String,
    /// The epoch of the router that served it, if it was answered OK.
    epoch: Option<u64>,
    /// The exit status and error line otherwise.
    code: Option<i32>,
    error: String,
    took: Duration,
}

/// Calls `fence incr {id}` in a loop until `stop`, one `polis call` each
/// (made by `call`), recording every answer.
fn hammer(name: &str, stop: &AtomicBool, answers: &Mutex<Vec<Answer>>, call: impl Fn(&str) -> Run) {
    static N: AtomicU64 = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        let id = format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let run = call(&format!(r#"{{"id":"{id}"}}"#));
        let took = started.elapsed();
        let answer = if run.status().success() {
            let reply = run.json();
            Answer { id, epoch: reply["epoch"].as_u64(), code: None, error: String::new(), took }
        } else {
            Answer { id, epoch: None, code: run.status().code(), error: run.stderr().trim().to_owned(), took }
        };
        answers.lock().unwrap().push(answer);
    }
}

fn token_file(cluster: &EtcdCluster) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = cluster.dir().join("token");
    std::fs::write(&path, "partition-token\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn pid_epoch(record: &Value) -> (u64, u64) {
    (record["pid"].as_u64().unwrap(), record["epoch"].as_u64().unwrap())
}

/// Sets its flag on drop.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Waits until `answers` has one that `want` likes.
fn wait_answer(answers: &Mutex<Vec<Answer>>, mesh: &Path, what: &str, want: impl Fn(&Answer) -> bool) {
    wait_until(WAIT, mesh, what, || answers.lock().unwrap().iter().any(&want).then_some(()));
}

/// Router A is elected, B stands in the election; frontends on both sides
/// call `fence incr` without pause. A's link goes down: A judges its lease
/// lost before etcd can expire it and leaves office (exit 4), its frontend
/// gets UNAVAILABLE errors, B takes office with a greater epoch, and the
/// fence saw no stale call and lost no increment. Healed, A's host runs a
/// candidate again, which stands by behind B and takes office when B resigns.
#[test]
fn a_partitioned_leader_steps_down_before_another_is_elected_and_no_call_is_accepted_twice() {
    let (ns_a, ns_b) = (Netns::create(), Netns::create());
    let cluster = EtcdCluster::start_on(3, &[ns_a.root_ip().into(), ns_b.root_ip().into()]);
    let token = token_file(&cluster);
    let state = cluster.dir().join("fence");
    let a = Host::new(&cluster, Some(&ns_a), &token, &state);
    let b = Host::new(&cluster, Some(&ns_b), &token, &state);
    let client = Host::new(&cluster, None, &token, &state);

    let mut router_a = a.router();
    let first = wait_until(WAIT, &client.mesh.dir, "router A in office", || client.resolve());
    let (pid_a, epoch_a) = pid_epoch(&first);
    assert_eq!(pid_a, u64::from(router_a.pid()), "{first}");
    let endpoint = first["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with(&format!("tcp:{}:", ns_a.ip())), "{first}");
    let mut router_b = b.router();
    // A call in flight over TCP when the partition comes: a stream of
    // items from A's echo module.
    let mut streaming = client.mesh.start(client.polis(&[
        "call",
        "--stream",
        "echo",
        "stream",
        r#"{"count":100000,"interval_ms":20}"#,
    ]));
    assert_eq!(streaming.line(), "0");

    let stop = AtomicBool::new(false);
    let (near, far) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        // The frontends stop with this scope, also when an assertion in it
        // fails (the scope waits for them before it lets the panic go on).
        let _stop = Stop(&stop);
        // A's side: A's router through its Unix socket, from A's namespace,
        // never launching one.
        scope.spawn(|| {
            hammer("a", &stop, &near, |params| {
                a.run(a.local(&["call", "--no-launch", "fence", "incr", params]))
            })
        });
        // The majority side: through etcd and TCP, from the root namespace.
        scope.spawn(|| {
            hammer("c", &stop, &far, |params| client.run(client.polis(&["call", "fence", "incr", params])))
        });
        let ok_at = |epoch: u64| move |x: &Answer| x.epoch == Some(epoch);
        wait_answer(&near, &a.mesh.dir, "A's frontend served by A", ok_at(epoch_a));
        wait_answer(&far, &client.mesh.dir, "the other frontend served by A", ok_at(epoch_a));

        ns_a.cut();
        // The call in flight fails, UNAVAILABLE, rather than wait for ever
        // on a router that can no longer answer.
        let (status, stderr) = streaming.wait(WAIT);
        assert_eq!(status.code(), Some(4), "{stderr}");
        assert!(stderr.starts_with("error: UNAVAILABLE: "), "{stderr}");
        // A cannot renew its lease: it leaves office, saying why.
        let (status, stderr) = router_a.wait(Duration::from_secs(TTL * 5));
        assert_eq!(status.code(), Some(4), "{stderr}");
        assert!(stderr.contains("UNAVAILABLE: lost the router office"), "{stderr}");
        // B is elected, and the majority side's calls get there.
        assert!(router_b.line().starts_with("router in office through etcd: epoch "));
        wait_answer(&far, &client.mesh.dir, "the other frontend served by B", |x| {
            x.epoch.is_some_and(|e| e > epoch_a)
        });
        // A's frontend, once A is gone, is refused: at least one more try.
        let tried = near.lock().unwrap().len();
        wait_until(WAIT, &a.mesh.dir, "A's frontend refused after A left", || {
            (near.lock().unwrap().len() > tried + 1).then_some(())
        });
    });
    let second = client.resolve().expect("B in office");
    let (pid_b, epoch_b) = pid_epoch(&second);
    assert_eq!(pid_b, u64::from(router_b.pid()), "{second}");
    assert!(epoch_b > epoch_a, "epoch {epoch_b} after {epoch_a}");

    let (near, far) = (near.into_inner().unwrap(), far.into_inner().unwrap());
    // A's frontend: OK from A, or a clear UNAVAILABLE (exit 4), never a hang.
    for x in &near {
        assert!(x.epoch == Some(epoch_a) || x.code == Some(4), "{x:?}");
        if x.code.is_some() {
            assert!(x.error.starts_with("error: UNAVAILABLE: "), "{x:?}");
        }
    }
    assert!(near.iter().any(|x| x.code == Some(4)), "A's frontend was never refused: {near:?}");
    for x in &far {
        assert!(x.epoch.is_some() || x.code == Some(4), "{x:?}");
    }

    // The fence's own record, read through B.
    let fence = client.run(client.polis(&["call", "fence", "get"])).code(0).json();
    assert_eq!(fence["stale"], 0, "a call came through the deposed router: {fence}");
    assert_eq!(fence["max_epoch"].as_u64(), Some(epoch_b), "{fence}");
    let ids = std::fs::read_to_string(state.join("fence.ids")).unwrap();
    let written: Vec<&str> = ids.lines().collect();
    assert_eq!(fence["count"].as_u64(), Some(written.len() as u64), "{fence}");
    let written: HashSet<&str> = written.into_iter().collect();
    let answered: Vec<&Answer> = near.iter().chain(&far).collect();
    // No state lost: every increment answered OK is in the file…
    for x in answered.iter().filter(|x| x.epoch.is_some()) {
        assert!(written.contains(x.id.as_str()), "answered OK but not in the count: {x:?}\n{fence}");
    }
    // …and nothing else but increments whose answer was lost with A.
    let tried: HashSet<&str> = answered.iter().map(|x| x.id.as_str()).collect();
    assert!(written.iter().all(|id| tried.contains(id)), "{fence}");
    let epochs = &fence["epochs"];
    assert!(
        epochs[epoch_a.to_string()]["last_ms"].as_u64() < epochs[epoch_b.to_string()]["first_ms"].as_u64(),
        "A's last write after B's first: {fence}"
    );
    let slowest = answered.iter().map(|x| x.took).max().unwrap();
    eprintln!(
        "{} calls from A's side, {} from the other, {} written, the slowest took {slowest:?}",
        near.len(),
        far.len(),
        written.len()
    );

    // Healed: A's host, whose router exited, runs a candidate again; it
    // stands by behind B, and takes office when B resigns.
    ns_a.heal();
    let mut again = a.router();
    let listed = client.run(client.polis(&["ls", "--json"])).code(0).json();
    assert_eq!(listed["router"]["pid"].as_u64(), Some(pid_b), "{listed}");
    router_b.signal(rustix::process::Signal::TERM);
    let (status, stderr) = router_b.wait(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(again.line().starts_with("router in office through etcd: epoch "));
    let third = wait_until(WAIT, &client.mesh.dir, "A in office again", || {
        client.resolve().filter(|r| r["pid"].as_u64() == Some(u64::from(again.pid())))
    });
    assert!(pid_epoch(&third).1 > epoch_b, "{third}");
    let reply = client.run(client.polis(&["call", "fence", "incr"])).code(0).json();
    assert_eq!(reply["count"].as_u64(), Some(written.len() as u64 + 1), "{reply}");
}

/// The fence's refusals, on one machine: a call routed with an epoch older
/// than the greatest that wrote is refused and counted; a manifest without
/// `[config] state` is a clear error, not a write somewhere.
#[test]
fn the_fence_refuses_a_stale_epoch_and_names_a_missing_state_dir() {
    let mesh = mesh();
    let state = mesh.root().join("fence-state");
    mesh.module("fence", FENCE, &format!("[config]\nstate = {:?}", state.display().to_string()));
    let first = mesh.run(&["call", "fence", "incr", r#"{"id":"one"}"#]).code(0).json();
    let epoch = first["epoch"].as_u64().unwrap();
    assert_eq!(first["count"], 1, "{first}");
    // A later router has written (as after a failover elsewhere).
    let later = epoch + 1000;
    let written = serde_json::json!({"count": 7, "max_epoch": later, "stale": 0, "epochs": {}});
    std::fs::write(state.join("fence.json"), written.to_string()).unwrap();
    let refused = mesh.run(&["call", "fence", "incr", r#"{"id":"two"}"#]);
    refused.code(1);
    assert_eq!(
        refused.error_line(),
        format!(
            "error: FAILED_PRECONDITION: stale epoch {epoch} < {later}: this call came through a deposed router"
        )
    );
    let got = mesh.run(&["call", "fence", "get"]).code(0).json();
    assert_eq!((got["count"].as_u64(), got["stale"].as_u64()), (Some(7), Some(1)), "{got}");
    assert_eq!(std::fs::read_to_string(state.join("fence.ids")).unwrap(), "one\n");

    let bare = crate::util::mesh();
    bare.module("fence", FENCE, "");
    let run = bare.run(&["call", "fence", "incr"]);
    run.code(1);
    assert!(
        run.error_line()
            .starts_with("error: FAILED_PRECONDITION: the fence module needs [config] state = \"DIR\""),
        "{run}"
    );
}
