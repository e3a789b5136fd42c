//! `polis-bench --module-calls`: a call from one module to another against
//! a frontend's call to the same module, in one run (the figures are
//! printed, not written into BENCHMARKS.md's generated part).
//!
//! Both are timed where they start: the frontend's by the bench around
//! `Client::call`, the module's by `polis-relay`'s `time` method around
//! each `Call::call` it makes to `echo.echo` (the router routes it as it
//! routes a frontend's, and sends the reply back on the relay's link). The
//! two kinds are measured in alternating rounds, so that a noisy moment on
//! the machine falls on both.

use std::time::{Duration, Instant};

use polis_client::{Client, ClientOptions};
use polis_testing::TestMesh;

use crate::{PAYLOAD, WARMUP_CALLS, progress, setup, stats::Samples};

const ROUNDS: usize = 9;
const PER_ROUND: usize = 1000;
const STEP: Duration = Duration::from_secs(60);

pub(crate) fn run(build: bool) -> anyhow::Result<()> {
    let bins = setup::polis(build)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(measure(&bins))
}

async fn measure(bins: &setup::Polis) -> anyhow::Result<()> {
    let mesh = TestMesh::new(&bins.polis)?;
    mesh.module("echo", &bins.echo, "");
    mesh.module("relay", &bins.relay, "calls = [\"echo\"]\n");
    let _router = mesh.start_router(&["--linger", "5s"]);
    let options =
        ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new("bench-calls") };
    let client = Client::connect(options).await?;

    let value = serde_json::Value::String("x".repeat(PAYLOAD - 2));
    let payload = bytes::Bytes::from(serde_json::to_vec(&value)?);
    let timed = |n: usize| {
        let params = serde_json::json!({"service": "echo", "method": "echo", "params": value, "n": n});
        bytes::Bytes::from(serde_json::to_vec(&params).expect("JSON values serialize"))
    };
    // Both modules started, both paths warm.
    for _ in 0..WARMUP_CALLS {
        client.call("echo", "echo", payload.clone(), Some(STEP)).await?;
    }
    client.call("relay", "time", timed(WARMUP_CALLS), Some(STEP)).await?;

    progress(&format!(
        "module calls: {ROUNDS} rounds of {PER_ROUND} calls from a frontend and from a module"
    ));
    let (mut frontend, mut module) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            let start = Instant::now();
            client.call("echo", "echo", payload.clone(), Some(STEP)).await?;
            frontend.push(start.elapsed());
        }
        let reply = client.call("relay", "time", timed(PER_ROUND), Some(STEP)).await?;
        let us: Vec<u64> = serde_json::from_slice(&reply)?;
        anyhow::ensure!(us.len() == PER_ROUND, "relay.time answered {} durations, not {PER_ROUND}", us.len());
        module.extend(us.into_iter().map(Duration::from_micros));
    }
    let (frontend, module) = (Samples::new(frontend), Samples::new(module));
    println!(
        "warm call to echo.echo ({PAYLOAD} B), p50 (p99): from a frontend {:?} ({:?}), from a module {:?} ({:?}): {:.2}x",
        frontend.p50(),
        frontend.pct(99.0),
        module.p50(),
        module.pct(99.0),
        module.p50().as_secs_f64() / frontend.p50().as_secs_f64()
    );
    client.close().await;
    Ok(())
}
