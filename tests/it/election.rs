//! Router election across real processes.

use std::time::{Duration, Instant};

use crate::util::{WAIT, mesh, wait_until};

/// Parses "router in office: pid P, epoch E, id I".
fn parse_in_office(line: &str) -> (u32, u64, String) {
    let rest = line.split_once("router in office: ").map(|(_, r)| r).unwrap_or_else(|| panic!("{line:?}"));
    let fields: Vec<&str> = rest.split(", ").collect();
    let field = |name: &str| {
        fields
            .iter()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    (field("pid ").parse().unwrap(), field("epoch ").parse().unwrap(), field("id "))
}

#[test]
fn sixteen_candidates_elect_exactly_one_router() {
    let mesh = mesh();
    let mut candidates: Vec<_> = (0..16).map(|_| mesh.spawn(&["router"])).collect();

    // The losers exit by themselves; the winner stays in office.
    let deadline = Instant::now() + WAIT;
    let mut losers = Vec::new();
    while losers.len() < 15 {
        assert!(Instant::now() < deadline, "only {} candidates exited", losers.len());
        let mut i = 0;
        while i < candidates.len() {
            if candidates[i].try_exit().is_some() {
                losers.push(candidates.remove(i));
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(candidates.len(), 1, "exactly one candidate is still running");
    let mut winner = candidates.pop().unwrap();

    let record = mesh.wait_router();
    assert_eq!(record.pid, winner.pid(), "router.json names the candidate still running");
    assert_eq!(record.epoch, Some(1));

    for mut loser in losers {
        let line = loser.line();
        let (status, stderr) = loser.wait(WAIT);
        assert!(status.success(), "a losing candidate exits 0: {status}, {stderr}");
        let (pid, epoch, id) = parse_in_office(&line);
        assert_eq!(
            (pid, epoch, id),
            (record.pid, 1, record.id.to_string()),
            "every loser reads the same winner"
        );
    }

    // A clean exit on SIGTERM leaves only the lock file with its epoch.
    winner.signal(rustix::process::Signal::TERM);
    let (status, stderr) = winner.wait(WAIT);
    assert!(status.success(), "{status}: {stderr}");
    let mut left: Vec<_> = std::fs::read_dir(&mesh.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["logs", "nodes", "router.lock"]);
    assert_eq!(std::fs::read_dir(mesh.dir.join("nodes")).unwrap().count(), 0);
}

#[test]
fn a_standby_takes_office_when_the_router_is_killed() {
    let mesh = mesh();
    let mut first = mesh.spawn(&["router"]);
    let old = mesh.wait_router();
    assert_eq!(old.pid, first.pid());

    let mut standby = mesh.spawn(&["router", "--standby"]);
    let line = standby.line();
    assert!(line.starts_with("standing by: router in office: "), "{line}");
    assert_eq!(parse_in_office(&line).0, first.pid());

    let killed = Instant::now();
    first.kill();
    let new = wait_until(WAIT, &mesh.dir, "the standby to take office", || {
        mesh.router().filter(|r| r.epoch == Some(2))
    });
    let gap = killed.elapsed();
    // Information only: polis-bench measures the failover gap.
    println!("standby took office {:.2} ms after SIGKILL of the router", gap.as_secs_f64() * 1e3);
    assert_eq!(new.pid, standby.pid());

    // The dead router's record was collected by its successor.
    let nodes = mesh.run(&["ls", "--json"]).code(0).json();
    let ids: Vec<&str> =
        nodes["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [new.id.to_string()]);
    assert!(!mesh.dir.join(format!("nodes/{}.json", old.id)).exists(), "dead record collected");
    assert!(standby.try_exit().is_none(), "the new router stays in office");
}

#[test]
fn a_losing_candidate_without_standby_exits_at_once() {
    let mesh = mesh();
    let _router = mesh.spawn(&["router"]);
    let record = mesh.wait_router();
    let run = mesh.run(&["router"]);
    run.code(0);
    let (pid, epoch, _) = parse_in_office(run.stdout().trim());
    assert_eq!((pid, epoch), (record.pid, 1));
}

#[test]
fn two_meshes_run_side_by_side() {
    let (a, b) = (mesh(), mesh());
    let _ra = a.spawn(&["router"]);
    let _rb = b.spawn(&["router"]);
    let (ra, rb) = (a.wait_router(), b.wait_router());
    assert_ne!(ra.id, rb.id);
    assert_eq!((ra.epoch, rb.epoch), (Some(1), Some(1)), "both won their own election");
    for (mesh, own) in [(&a, &ra), (&b, &rb)] {
        let ls = mesh.run(&["ls", "--json"]).code(0).json();
        let ids: Vec<&str> =
            ls["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [own.id.to_string()], "each mesh sees only its own router");
        assert_eq!(ls["router"]["id"], own.id.to_string());
    }
}
