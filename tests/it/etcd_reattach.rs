//! SDK modules across machines: a module whose router is SIGKILLed
//! re-attaches to the next router in office in etcd, on another host,
//! over TCP with the mesh's token, keeping its state. Hosts as in
//! `etcd.rs`: temp meshes joined only by etcd, TCP and a 0600 token file.

use std::time::Instant;

use polis_testing::{EtcdCluster, MeshCa, Process, Run, procs};

use crate::{
    etcd::{Host, TTL, token_file},
    util::{COUNTER, ECHO, WAIT, wait_until},
};

/// A frontend's `polis` command: with the arguments it needs (the mesh CA)
/// before the ones given.
type Frontend<'a> = &'a dyn Fn(&[&str]) -> Run;

/// The counter module as the router in office reports it, once it runs
/// there (has a pid).
fn counter(frontend: Frontend<'_>) -> Option<serde_json::Value> {
    let run = frontend(&["status", "--json"]);
    if !run.status().success() {
        return None;
    }
    let status = run.json();
    let modules = status["modules"].as_array()?;
    modules.iter().find(|m| m["name"] == "counter" && m["pid"].is_u64()).cloned()
}

fn router_pid_epoch(frontend: &Host) -> Option<(u64, u64)> {
    let record = frontend.resolve()?;
    Some((record["pid"].as_u64()?, record["epoch"].as_u64()?))
}

fn incr(frontend: Frontend<'_>) -> String {
    frontend(&["call", "counter", "incr"]).code(0).stdout().trim().to_owned()
}

fn median(mut ms: Vec<u128>) -> u128 {
    ms.sort_unstable();
    ms[ms.len() / 2]
}

/// Routers on two hosts (the first in office, the second a candidate) and
/// a frontend on a third. The counter runs on the first host; SIGKILL of
/// its router puts the candidate in office with a greater epoch, and the
/// same counter process re-attaches to it over TCP: the next `incr`, made
/// as soon as the candidate is in office, goes on from the count it had,
/// and the new router spawned no counter of its own. Then a new candidate on the dead router's host, and the same again
/// the other way, `POLIS_REATTACH_ROUNDS` times in all (default 2); each
/// round's time from SIGKILL to the first call served by the re-attached
/// module is printed (run with `--nocapture` to see them).
#[test]
fn a_module_follows_its_killed_router_to_the_next_one_on_another_host_with_its_state() {
    let rounds: usize = std::env::var("POLIS_REATTACH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("polis/reattach", TTL);
    let token = token_file(&cluster, "token", "reattach-token\n");
    let hosts = [Host::new(&url, &token), Host::new(&url, &token)];
    for host in &hosts {
        host.mesh.module("counter", COUNTER, "");
    }
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);

    let mut routers: [Option<Process>; 2] = [Some(hosts[0].router()), None];
    let (first_pid, mut epoch) =
        wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || router_pid_epoch(&frontend));
    assert_eq!(first_pid, u64::from(routers[0].as_ref().unwrap().pid()));
    routers[1] = Some(hosts[1].router());

    for n in 1..=3 {
        assert_eq!(incr(&plain), n.to_string());
    }
    let module = counter(&plain).expect("the counter runs on the first host");
    let module_pid = module["pid"].as_u64().unwrap();
    assert_eq!(hosts[0].mesh.processes().iter().filter(|&&p| u64::from(p) == module_pid).count(), 1);

    let mut count = 3;
    let mut times = Vec::new();
    for round in 0..rounds {
        let (dead, next) = (round % 2, 1 - round % 2);
        let next_pid = u64::from(routers[next].as_ref().unwrap().pid());
        let killed = Instant::now();
        routers[dead].take().unwrap().kill();

        let (pid, next_epoch) = wait_until(WAIT, &frontend.mesh.dir, "the candidate in office", || {
            router_pid_epoch(&frontend).filter(|&(pid, _)| pid == next_pid)
        });
        assert_eq!(pid, next_pid);
        assert!(next_epoch > epoch, "epoch {next_epoch} after {epoch}");
        epoch = next_epoch;
        // Called without waiting for the counter to re-attach: the new
        // router sees its record in etcd and waits for it.
        count += 1;
        assert_eq!(incr(&plain), count.to_string(), "the count went on");
        let took = killed.elapsed().as_millis();
        eprintln!("re-attach round {}: {took} ms from SIGKILL to the first call served", round + 1);
        times.push(took);
        let module = counter(&plain).expect("the counter runs");
        assert_eq!(module["pid"].as_u64(), Some(module_pid), "the same process, re-attached: {module}");

        // The host in office runs its router and no counter of its own
        // (the first host: the one counter, still the same process).
        let mut expected = vec![next_pid as u32];
        if next == 0 {
            expected.push(module_pid as u32);
        }
        let mut running = hosts[next].mesh.processes();
        running.sort_unstable();
        expected.sort_unstable();
        assert_eq!(running, expected, "the processes of the host in office");
        assert!(procs::is_running(module_pid as u32));
        // A new candidate on the dead router's host, for the next round.
        if round + 1 < rounds {
            routers[dead] = Some(hosts[dead].router());
        }
    }
    eprintln!("re-attach across machines: p50 {} ms over {rounds} rounds", median(times));
    let status = frontend.run(&["status", "--json"]).code(0).json();
    let counters: Vec<_> =
        status["modules"].as_array().unwrap().iter().filter(|m| m["name"] == "counter").collect();
    assert_eq!(counters.len(), 1, "{status}");
    assert_eq!(counters[0]["restarts"], 0, "{status}");
}

/// A module whose token file no longer holds the mesh's token when its
/// router dies: the next router refuses it, and it says so on stderr and
/// exits rather than wait or hang.
#[test]
fn a_module_with_a_wrong_token_says_so_and_exits_when_its_router_dies() {
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("polis/badtoken", TTL);
    let token = token_file(&cluster, "token", "right-token\n");
    // The first host's own copy of the token, replaced below.
    let own = token_file(&cluster, "own-token", "right-token\n");
    let first = Host::new(&url, &own);
    first.mesh.module("counter", COUNTER, "");
    let second = Host::new(&url, &token);
    second.mesh.module("counter", COUNTER, "");
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);

    let mut router = first.router();
    wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == u64::from(router.pid()))
    });
    let candidate = second.router();
    assert_eq!(incr(&plain), "1");
    let module_pid = counter(&plain).unwrap()["pid"].as_u64().unwrap() as u32;

    std::fs::write(&own, "rotated-token\n").unwrap();
    router.kill();
    wait_until(WAIT, &frontend.mesh.dir, "the module to exit", || {
        (!procs::is_running(module_pid)).then_some(())
    });
    let log = std::fs::read_to_string(first.mesh.dir.join("logs/counter.log")).unwrap();
    assert!(
        log.contains("counter: cannot re-attach: UNAUTHENTICATED: wrong token for this mesh's router (router at tcp:127.0.0.1:"),
        "{log}"
    );
    // The candidate took office and serves a fresh counter of its own.
    wait_until(WAIT, &frontend.mesh.dir, "the candidate in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == u64::from(candidate.pid()))
    });
    assert_eq!(incr(&plain), "1");
}

/// The same through routers that serve TLS: the router's `--tls-ca`
/// reaches its modules as `POLIS_TLS_CA`, and the counter dials the next
/// router inside TLS, checking its certificate against the mesh CA.
#[test]
fn a_module_follows_its_killed_router_to_the_next_one_inside_tls() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/reattach-tls", TTL);
    let token = token_file(&cluster, "token", "tls-reattach-token\n");
    let ca = MeshCa::new(&cluster.dir().join("ca"));
    let issued = ca.issue("router", "127.0.0.1");
    let hosts = [Host::new(&url, &token), Host::new(&url, &token)];
    for host in &hosts {
        host.mesh.module("counter", COUNTER, "");
    }
    let frontend = Host::new(&url, &token);
    let trusting = |args: &[&str]| {
        let mut cmd = frontend.polis(&["--tls-ca"]);
        cmd.arg(ca.cert()).args(args);
        frontend.mesh.run_command(cmd)
    };
    let router = |host: &Host| {
        let mut cmd = host.polis(&["--tls-ca"]);
        cmd.arg(ca.cert()).args(["router", "--listen", "127.0.0.1:0", "--tls-cert"]);
        cmd.arg(&issued.cert).arg("--tls-key").arg(&issued.key);
        host.mesh.start(cmd)
    };

    let mut first = router(&hosts[0]);
    let first_pid = u64::from(first.pid());
    wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == first_pid)
    });
    let second = router(&hosts[1]);
    assert_eq!((incr(&trusting), incr(&trusting)), ("1".to_owned(), "2".to_owned()));
    let module_pid = counter(&trusting).unwrap()["pid"].as_u64().unwrap();

    first.kill();
    let second_pid = u64::from(second.pid());
    wait_until(WAIT, &frontend.mesh.dir, "the second router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == second_pid)
    });
    let record = frontend.resolve().unwrap();
    assert!(record["endpoint"].as_str().unwrap().starts_with("tls:127.0.0.1:"), "{record}");
    assert_eq!(incr(&trusting), "3", "the count went on");
    let module = counter(&trusting).expect("the counter runs");
    assert_eq!(module["pid"].as_u64(), Some(module_pid), "the same process, re-attached inside TLS");
}

/// A call that reaches the next router before the module is back: the
/// module's record in etcd (under its own lease, alive while it is) says it
/// is on its way, so the router waits for it rather than start a counter of
/// its own. The call is made at once after the SIGKILL, without waiting for
/// the candidate to take office or the counter to re-attach: it answers 4,
/// from the same process, and nothing was restarted. Then that counter is
/// SIGKILLed in turn: its record lapses with its lease, and the next call
/// starts a fresh counter (at 0) rather than wait for one that will never
/// come.
#[test]
fn a_call_at_once_after_the_kill_waits_for_the_module_on_its_way_back() {
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("polis/at-once", TTL);
    let token = token_file(&cluster, "token", "at-once-token\n");
    let hosts = [Host::new(&url, &token), Host::new(&url, &token)];
    for host in &hosts {
        host.mesh.module("counter", COUNTER, "");
    }
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);

    let mut first = hosts[0].router();
    let first_pid = u64::from(first.pid());
    wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == first_pid)
    });
    let second = hosts[1].router();
    for n in 1..=3 {
        assert_eq!(incr(&plain), n.to_string());
    }
    let module_pid = counter(&plain).expect("the counter runs on the first host")["pid"].as_u64().unwrap();
    // Its record is in etcd, where the router on any host can see it.
    wait_until(WAIT, &frontend.mesh.dir, "the counter's record in etcd", || {
        let records = etcd_modules(&frontend, "counter");
        records.iter().any(|r| r["pid"].as_u64() == Some(module_pid)).then_some(())
    });

    first.kill();
    assert_eq!(incr(&plain), "4", "the count went on");
    let module = counter(&plain).expect("the counter runs");
    assert_eq!(module["pid"].as_u64(), Some(module_pid), "the same process, re-attached: {module}");
    assert_eq!(module["restarts"], 0, "{module}");
    // The host in office runs its router and no counter of its own.
    assert_eq!(hosts[1].mesh.processes(), [second.pid()], "the processes of the host in office");
    assert!(procs::is_running(module_pid as u32));
    let status = frontend.run(&["status", "--json"]).code(0).json();
    let counters: Vec<_> =
        status["modules"].as_array().unwrap().iter().filter(|m| m["name"] == "counter").collect();
    assert_eq!(counters.len(), 1, "{status}");

    // SIGKILL of the counter itself: nothing revokes its lease, which
    // lapses within the TTL; the next call starts a fresh one on the host
    // in office (after at most the router's re-attach wait, not a hang).
    procs::kill(module_pid as u32);
    assert_eq!(incr(&plain), "1", "a fresh counter");
    let fresh = counter(&plain).expect("the fresh counter runs");
    let fresh_pid = fresh["pid"].as_u64().unwrap();
    assert_ne!(fresh_pid, module_pid);
    assert!(hosts[1].mesh.processes().contains(&(fresh_pid as u32)), "{fresh}");
    // The dead counter's record lapsed (the load waited for that); the
    // fresh one's is put in the background after its handshake.
    assert!(
        etcd_modules(&frontend, "counter").iter().all(|r| r["pid"].as_u64() != Some(module_pid)),
        "the killed counter's record outlived its lease"
    );
    wait_until(WAIT, &frontend.mesh.dir, "the fresh counter's record in etcd", || {
        let records = etcd_modules(&frontend, "counter");
        (records.iter().map(|r| r["pid"].as_u64()).collect::<Vec<_>>() == [Some(fresh_pid)]).then_some(())
    });
}

/// A module's record in etcd is its own and goes with it: published under
/// its own lease once it runs, and gone the moment it exits cleanly (here,
/// `polis module unload`), not at the lease's expiry.
#[test]
fn a_module_that_exits_cleanly_leaves_no_record_in_etcd() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/clean-exit", TTL);
    let token = token_file(&cluster, "token", "clean-exit-token\n");
    let host = Host::new(&url, &token);
    host.mesh.module("counter", COUNTER, "");
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);

    let router = host.router();
    let router_pid = u64::from(router.pid());
    wait_until(WAIT, &frontend.mesh.dir, "the router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == router_pid)
    });
    assert_eq!(incr(&plain), "1");
    let module = counter(&plain).expect("the counter runs");
    let module_pid = module["pid"].as_u64().unwrap();
    // Published in the background after the handshake: soon, not at once.
    let record = wait_until(WAIT, &frontend.mesh.dir, "the counter's record in etcd", || {
        etcd_modules(&frontend, "counter").into_iter().next()
    });
    assert_eq!(record["pid"].as_u64(), Some(module_pid), "{record}");
    assert_eq!(record["services"], serde_json::json!(["counter"]), "{record}");
    assert_eq!(record["role"], "module", "{record}");
    assert_eq!(record["router"].as_str(), frontend.resolve().unwrap()["id"].as_str(), "{record}");

    frontend.run(&["module", "unload", "counter"]).code(0);
    assert!(!procs::is_running(module_pid as u32), "the counter exited");
    assert_eq!(etcd_modules(&frontend, "counter"), Vec::<serde_json::Value>::new(), "no record left");
}

/// The records of modules serving `service` that etcd has (`polis ls
/// --json --discovery …`).
fn etcd_modules(frontend: &Host, service: &str) -> Vec<serde_json::Value> {
    let ls = frontend.run(&["ls", "--json"]).code(0).json();
    ls["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "module" && n["services"].as_array().unwrap().iter().any(|s| s == service))
        .cloned()
        .collect()
}

/// The same race, decided against the module every time: its router is
/// SIGKILLed, the counter held back (SIGSTOP), the office passed at once
/// (the dead router's lease revoked in etcd, as its lapse would), and the
/// call made then. Only once the router in office says it waits
/// for the counter (on main it started a counter of its own and answered 1
/// instead) does the counter go on (SIGCONT): it re-attaches, and the call
/// answers 4, from the same process, with nothing restarted. The lease TTL
/// is longer here so that the counter's own lease outlives its stop.
#[test]
fn a_call_that_reaches_the_next_router_before_the_module_waits_for_it() {
    use rustix::process::Signal;
    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/held-back", 10);
    let token = token_file(&cluster, "token", "held-back-token\n");
    let hosts = [Host::new(&url, &token), Host::new(&url, &token)];
    for host in &hosts {
        host.mesh.module("counter", COUNTER, "");
    }
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);
    let router = |host: &Host| host.mesh.start(host.polis(&["-v", "router", "--listen", "127.0.0.1:0"]));

    let mut first = router(&hosts[0]);
    let first_pid = u64::from(first.pid());
    wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == first_pid)
    });
    let second = router(&hosts[1]);
    let second_pid = u64::from(second.pid());
    for n in 1..=3 {
        assert_eq!(incr(&plain), n.to_string());
    }
    let module_pid = counter(&plain).expect("the counter runs on the first host")["pid"].as_u64().unwrap();
    wait_until(WAIT, &frontend.mesh.dir, "the counter's record in etcd", || {
        etcd_modules(&frontend, "counter").iter().any(|r| r["pid"].as_u64() == Some(module_pid)).then_some(())
    });

    // Stopped once its router is gone (a stopped process whose process
    // group is orphaned gets SIGHUP): until the lease is revoked below the
    // dead router holds the office, so the counter cannot have re-attached.
    let module = rustix::process::Pid::from_raw(module_pid as i32).unwrap();
    first.kill();
    rustix::process::kill_process(module, Signal::STOP).unwrap();
    cluster.revoke_leader("/polis/held-back/router");
    wait_until(WAIT, &frontend.mesh.dir, "the candidate in office", || {
        router_pid_epoch(&frontend).filter(|&(pid, _)| pid == second_pid)
    });
    let mut call = frontend.mesh.start(frontend.polis(&["call", "counter", "incr"]));
    let waiting =
        wait_until(WAIT, &frontend.mesh.dir, "the router to wait for the counter, or the call", || {
            if second.stderr().contains("waiting for module counter to re-attach") {
                Some(true)
            } else {
                call.try_exit().map(|_| false)
            }
        });
    rustix::process::kill_process(module, Signal::CONT).unwrap();
    let (status, stderr) = call.wait(WAIT);
    let answer = call.line();
    assert!(status.success(), "{stderr}");
    assert!(waiting, "the router did not wait for the counter: the call answered {answer}");
    let log = std::fs::read_to_string(hosts[0].mesh.dir.join("logs/counter.log")).unwrap_or_default();
    assert_eq!(
        answer.trim(),
        "4",
        "the count went on\nrouter in office: {}\ncounter: {log}",
        second.stderr()
    );

    let module = counter(&plain).expect("the counter runs");
    assert_eq!(module["pid"].as_u64(), Some(module_pid), "the same process, re-attached: {module}");
    assert_eq!(module["restarts"], 0, "{module}");
    assert_eq!(hosts[1].mesh.processes(), [second.pid()], "no counter on the host in office");
}

/// A program that loads itself (`Module::attach`, here `polis-echo
/// --attach` serving `hand`, which no manifest names) on a mesh on etcd,
/// told so as a spawned module is (`POLIS_DISCOVERY`, `POLIS_TOKEN_FILE`),
/// lives as one: its record is in etcd under its own lease, naming the
/// router it attached to; when that router is SIGKILLed it re-attaches to
/// the next one in office, on another host, and its record is put again
/// naming that one; and a clean exit (`polis module unload`) takes the
/// record at once, not at the lease's expiry (10 s here).
#[test]
fn a_self_loaded_module_publishes_in_etcd_and_follows_the_office_to_another_host() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url("polis/self-loaded", 10);
    let token = token_file(&cluster, "token", "self-loaded-token\n");
    let hosts = [Host::new(&url, &token), Host::new(&url, &token)];
    let frontend = Host::new(&url, &token);
    let plain = |args: &[&str]| frontend.run(args);

    let mut first = hosts[0].router();
    let first_pid = u64::from(first.pid());
    let first_id = wait_until(WAIT, &frontend.mesh.dir, "the first router in office", || {
        frontend.resolve().filter(|r| r["pid"].as_u64() == Some(first_pid))
    })["id"]
        .clone();
    let second = hosts[1].router();
    let second_pid = u64::from(second.pid());

    let mut cmd = hosts[0].mesh.command(ECHO);
    cmd.arg("--attach").arg(&hosts[0].mesh.dir).env("POLIS_SERVICE", "hand");
    cmd.env("POLIS_DISCOVERY", &url).env("POLIS_TOKEN_FILE", &token);
    let mut hand = hosts[0].mesh.start(cmd);
    let hand_pid = u64::from(hand.pid());
    let record = wait_until(WAIT, &frontend.mesh.dir, "the self-loaded module's record in etcd", || {
        etcd_modules(&frontend, "hand").into_iter().next()
    });
    assert_eq!((record["pid"].as_u64(), &record["router"]), (Some(hand_pid), &first_id), "{record}");
    assert_eq!(plain(&["call", "hand", "echo", r#"{"n":1}"#]).code(0).json(), serde_json::json!({"n": 1}));

    // The office passes at once (the dead router's lease revoked, as its
    // lapse would): the module finds the next router in etcd.
    first.kill();
    cluster.revoke_leader("/polis/self-loaded/router");
    let second_id = wait_until(WAIT, &frontend.mesh.dir, "the second router in office", || {
        frontend.resolve().filter(|r| r["pid"].as_u64() == Some(second_pid))
    })["id"]
        .clone();
    let record = wait_until(WAIT, &frontend.mesh.dir, "the module's record to name the next router", || {
        etcd_modules(&frontend, "hand").into_iter().find(|r| r["router"] == second_id)
    });
    assert_eq!(record["pid"].as_u64(), Some(hand_pid), "the same process: {record}");
    assert_eq!(etcd_modules(&frontend, "hand").len(), 1, "one record, put again in place of the other");
    assert_eq!(plain(&["call", "hand", "echo", r#"{"n":2}"#]).code(0).json(), serde_json::json!({"n": 2}));
    let status = plain(&["status", "--json"]).code(0).json();
    let listed = status["modules"].as_array().unwrap().iter().find(|m| m["name"] == "hand").cloned();
    assert_eq!(listed.and_then(|m| m["pid"].as_u64()), Some(hand_pid), "{status}");

    plain(&["module", "unload", "hand"]).code(0);
    let (exited, stderr) = hand.wait(WAIT);
    assert!(exited.success(), "{stderr}");
    assert_eq!(etcd_modules(&frontend, "hand"), Vec::<serde_json::Value>::new(), "no record left");
}
