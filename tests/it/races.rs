//! Races and exhaustion (issue 11): calls that meet a router as it leaves,
//! idle connections, a module that floods unsolicited replies, and a
//! planned restart under load. Each loses no call and hurts nothing else.

use std::time::Duration;

use crate::util::{ECHO, mesh};

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
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let mesh = &mesh;
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
