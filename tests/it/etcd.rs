//! A mesh whose directory is etcd: a real three-member cluster
//! (`polis_testing::EtcdCluster`), routers on three "hosts" (each a
//! hermetic temp mesh of its own: its own mesh directory, home and
//! modules, so that nothing but etcd and TCP joins them), and frontends on
//! a fourth. Leases of 2 s keep every wait short.

use std::{path::PathBuf, process::Command, time::Duration};

use polis_testing::{EtcdCluster, Process, Run};

use crate::util::{ECHO, TestMesh, WAIT, mesh, wait_until};

/// The lease TTL of these meshes, in seconds.
pub(crate) const TTL: u64 = 2;

/// One machine of the mesh: a temp mesh with the echo module, reaching the
/// others through `url` with the token in `token`.
pub(crate) struct Host {
    pub(crate) mesh: TestMesh,
    url: String,
    token: PathBuf,
}

impl Host {
    pub(crate) fn new(url: &str, token: &std::path::Path) -> Self {
        let mesh = mesh();
        mesh.module("echo", ECHO, "");
        Self { mesh, url: url.to_owned(), token: token.to_owned() }
    }

    pub(crate) fn polis(&self, args: &[&str]) -> Command {
        let mut cmd = self.mesh.polis(&["--discovery", &self.url]);
        cmd.arg("--token-file").arg(&self.token).args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.mesh.run_command(self.polis(args))
    }

    pub(crate) fn router(&self) -> Process {
        self.mesh.start(self.polis(&["router", "--listen", "127.0.0.1:0"]))
    }

    /// The router's record as etcd has it, once one is in office.
    pub(crate) fn resolve(&self) -> Option<serde_json::Value> {
        let run = self.run(&["resolve", "router"]);
        run.status().success().then(|| run.json())
    }
}

pub(crate) fn token_file(cluster: &EtcdCluster, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn pid_epoch(record: &serde_json::Value) -> (u64, u64) {
    (record["pid"].as_u64().unwrap(), record["epoch"].as_u64().unwrap())
}

/// Three candidates on three hosts: one is elected, a frontend on a fourth
/// host calls it over TCP; SIGKILL of the leader puts another in office with
/// a greater epoch, and the frontend's next call gets there; a clean stop
/// hands the office on the same way. Wrong and missing tokens are refused.
#[test]
fn one_of_three_routers_is_elected_and_another_takes_over_when_it_is_killed() {
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("polis/failover", TTL);
    let token = token_file(&cluster, "token", "s3cret-token\n");
    let hosts: Vec<Host> = (0..3).map(|_| Host::new(&url, &token)).collect();
    let client = Host::new(&url, &token);
    let mut routers: Vec<Process> = hosts.iter().map(Host::router).collect();

    let first = wait_until(WAIT, &client.mesh.dir, "a router in office", || client.resolve());
    let (leader_pid, first_epoch) = pid_epoch(&first);
    let pids: Vec<u64> = routers.iter().map(|r| u64::from(r.pid())).collect();
    assert!(pids.contains(&leader_pid), "the router in office ({leader_pid}) is one of {pids:?}");
    assert!(first["endpoint"].as_str().unwrap().starts_with("tcp:127.0.0.1:"), "{first}");
    let leader = pids.iter().position(|&p| p == leader_pid).unwrap();
    assert!(routers[leader].line().starts_with("router in office through etcd: epoch "));
    // Exactly one router's record: the others wait in the election.
    let ls = client.run(&["ls", "--json"]).code(0).json();
    let listed: Vec<_> = ls["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "router").collect();
    assert_eq!(listed.len(), 1, "{ls}");

    assert_eq!(client.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    // The router's own status, over TCP: its epoch is etcd's.
    let status = client.run(&["status", "--json"]).code(0).json();
    assert_eq!(
        (status["router"]["pid"].as_u64(), status["router"]["epoch"].as_u64()),
        (Some(leader_pid), Some(first_epoch)),
        "{status}"
    );
    let streamed = client.run(&["call", "--stream", "echo", "stream", r#"{"count":3,"interval_ms":1}"#]);
    assert_eq!(streamed.code(0).stdout().lines().count(), 3, "{streamed}");

    // Refusals: a wrong token, and none at all.
    let wrong = token_file(&cluster, "wrong", "not-the-token\n");
    let mut cmd = client.mesh.polis(&["--discovery", &url, "--token-file"]);
    cmd.arg(&wrong).args(["call", "echo", "ping"]);
    let refused = client.mesh.run_command(cmd);
    refused.code(5);
    assert!(refused.error_line().starts_with("error: UNAUTHENTICATED: wrong token"), "{refused}");
    let missing = client.mesh.run(&["--discovery", &url, "call", "echo", "ping"]);
    missing.code(5);
    assert!(
        missing.error_line().contains("UNAUTHENTICATED: a mesh on etcd is reached over TCP with its token")
    );

    // SIGKILL: nothing resigns; the office passes at lease expiry.
    routers[leader].kill();
    assert_eq!(client.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    let second = client.resolve().expect("a router in office after the call");
    let (second_pid, second_epoch) = pid_epoch(&second);
    assert_ne!(second_pid, leader_pid);
    assert!(second_epoch > first_epoch, "epoch {second_epoch} after {first_epoch}");

    // A clean stop resigns: the last candidate takes office.
    let next = pids.iter().position(|&p| p == second_pid).unwrap();
    routers[next].signal(rustix::process::Signal::TERM);
    let (status, stderr) = routers[next].wait(WAIT);
    assert!(status.success(), "{stderr}");
    let third = wait_until(WAIT, &client.mesh.dir, "the third router in office", || {
        client.resolve().filter(|r| r["pid"].as_u64() != Some(second_pid))
    });
    assert!(pid_epoch(&third).1 > second_epoch);
    assert_eq!(client.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
}

/// One member killed: quorum holds and calls go on. Two killed: a clear
/// UNAVAILABLE for the frontend, and the router gives up its office rather
/// than serve without a lease; once the members return, a router is in
/// office again and calls work.
#[test]
fn calls_survive_a_lost_member_and_come_back_after_quorum_returns() {
    let mut cluster = EtcdCluster::start(3);
    let url = cluster.url("polis/quorum", TTL);
    let token = token_file(&cluster, "token", "quorum-token\n");
    let hosts: Vec<Host> = (0..2).map(|_| Host::new(&url, &token)).collect();
    let client = Host::new(&url, &token);
    let mut routers: Vec<Process> = hosts.iter().map(Host::router).collect();
    let first = wait_until(WAIT, &client.mesh.dir, "a router in office", || client.resolve());
    let leader = routers.iter().position(|r| u64::from(r.pid()) == pid_epoch(&first).0).unwrap();

    // A follower: the leader's death would cost an election timeout with no
    // lease renewed, which a TTL of 2 s does not always ride out.
    let follower = cluster.follower();
    cluster.kill(follower);
    assert_eq!(client.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
    assert_eq!(client.resolve().map(|r| pid_epoch(&r)), Some(pid_epoch(&first)), "nothing changed");

    let second = (0..3).find(|&i| i != follower).unwrap();
    cluster.kill(second);
    let down = client.run(&["call", "echo", "ping"]);
    down.code(4);
    assert!(down.error_line().starts_with("error: UNAVAILABLE: the mesh's etcd at "), "{down}");
    // The router in office cannot renew its lease: it leaves office.
    let (status, stderr) = routers[leader].wait(Duration::from_secs(TTL * 5));
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("UNAVAILABLE: lost the router office"), "{stderr}");

    cluster.restart(follower);
    cluster.restart(second);
    cluster.wait_healthy();
    let back = wait_until(WAIT, &client.mesh.dir, "a router in office again", || {
        client.resolve().filter(|r| r["pid"].as_u64() != Some(u64::from(routers[leader].pid())))
    });
    assert!(pid_epoch(&back).1 > pid_epoch(&first).1);
    assert_eq!(client.run(&["call", "echo", "ping"]).code(0).stdout().trim(), "\"pong\"");
}

#[test]
fn a_bad_discovery_address_is_a_usage_error_naming_what_is_wrong() {
    let mesh = mesh();
    let run = mesh.run(&["--discovery", "etcd://127.0.0.1:2379", "ls"]);
    run.code(2);
    assert!(
        run.error_line().contains("INVALID_ARGUMENT: discovery \"etcd://127.0.0.1:2379\": no /PREFIX"),
        "{run}"
    );
    let mut cmd = mesh.polis(&["ls"]);
    cmd.env("POLIS_DISCOVERY", "consul://h:1/m");
    let run = mesh.run_command(cmd);
    run.code(2);
    assert!(run.error_line().contains("expected etcd://"), "{run}");

    // A router on etcd without an address for the other machines.
    let token = mesh.root().join("token");
    std::fs::write(&token, "t\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = mesh.polis(&["--discovery", "etcd://127.0.0.1:1/m", "--token-file"]);
    cmd.arg(&token).arg("router");
    let run = mesh.run_command(cmd);
    run.code(2);
    assert!(run.error_line().contains("a router on etcd needs --listen HOST:PORT"), "{run}");
    // No etcd at all: a clear UNAVAILABLE, not a hang.
    let mut cmd = mesh.polis(&["--discovery", "etcd://127.0.0.1:1/m?ttl=1", "--token-file"]);
    cmd.arg(&token).args(["call", "echo", "ping"]);
    let run = mesh.run_command(cmd);
    run.code(4);
    assert!(
        run.error_line().starts_with("error: UNAVAILABLE: the mesh's etcd at 127.0.0.1:1 cannot be reached"),
        "{run}"
    );
}
