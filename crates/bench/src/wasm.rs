//! `polis-bench wasm`: the sandboxed module against the same C module built
//! natively, in one run, through one router: warm calls, cold starts (the
//! first one compiling, the others loading compiled code from the cache),
//! and the host's RSS while idle. Prints a table; BENCHMARKS.md is not
//! touched.
//!
//! ```sh
//! cargo build --release -p polis -p polis-bench
//! cargo build --release -p polis-wasm           # alone: runtime-only, see below
//! cargo build --release -p polis-wasm-compile
//! target/release/polis-bench wasm --bin-dir target/release
//! ```
//!
//! `polis-wasm` must be built by a cargo run of its own: built together
//! with `polis-wasm-compile`, cargo unifies wasmtime's features and links
//! cranelift into the host too, which then starts slower than it ships. The
//! table's last row gives the host's size, to tell the two apart.
//!
//! It needs `cc` and Zig's C compiler (`python3 -m pip install ziglang`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use bytes::Bytes;
use polis_client::{Client, ClientOptions};
use polis_testing::{Run, TestMesh};

use crate::{
    PAYLOAD, progress,
    stats::{Samples, duration, mib},
};

const WARM: usize = 3000;
const WARMUP: usize = 200;

/// Builds both modules, measures, prints.
pub(crate) fn run(bin_dir: &Path, cold_runs: usize) -> anyhow::Result<()> {
    let polis = bin_dir.join("polis");
    for bin in ["polis-wasm", "polis-wasm-compile"] {
        ensure!(bin_dir.join(bin).is_file(), "no {bin} in {}: build it first", bin_dir.display());
    }
    let host_size = std::fs::metadata(bin_dir.join("polis-wasm"))?.len();
    let mesh = TestMesh::new(&polis)?;
    let source = crate::setup::workspace().join("modules/wasm-echo/wasm-echo.c");
    let wasm = mesh.root().join("wasm-echo.wasm");
    let native = mesh.root().join("wasm-echo-native");
    progress("building wasm-echo for WASI (zig) and natively (cc)");
    let mut zig = polis_testing::command("python3");
    zig.args(["-m", "ziglang", "cc", "--target=wasm32-wasi", "-O2", "-s", "-o"]).arg(&wasm).arg(&source);
    build(zig)?;
    let mut cc = polis_testing::command("cc");
    cc.args(["-O2", "-o"]).arg(&native).arg(&source);
    build(cc)?;
    mesh.manifest("wecho", &format!("exec = {:?}\nprotocol = \"jsonrpc\"", wasm.display().to_string()));
    mesh.manifest("necho", &format!("exec = {:?}\nprotocol = \"jsonrpc\"", native.display().to_string()));
    // The router is started by hand, with polis-wasm beside its polis.
    let _router = mesh.start_router(&["--linger", "10m"]);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let options =
            ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new("polis-bench") };
        let client = Client::connect(options).await?;
        let cache = mesh.home().join(".cache/polis/wasm");
        let first = start(&client, "wecho").await?;
        ensure!(cache.is_dir(), "polis-wasm cached nothing in {}", cache.display());
        let payload = Bytes::from(crate::polis::json_payload(PAYLOAD));
        let native_warm = warm(&client, "necho", &payload).await?;
        let wasm_warm = warm(&client, "wecho", &payload).await?;
        // The process that compiled (cranelift's pages and heap touched).
        let (compiled_rss, _) = idle_rss(&mesh, "wecho")?;
        let (native_rss, native_anon) = idle_rss(&mesh, "necho")?;
        let mut native_cold = Vec::new();
        let mut wasm_cold = Vec::new();
        for _ in 0..cold_runs {
            unload(&mesh, "necho")?;
            native_cold.push(start(&client, "necho").await?);
            unload(&mesh, "wecho")?;
            wasm_cold.push(start(&client, "wecho").await?);
        }
        // The last wecho started from the cache, as every start after the
        // first does: the idle module the target is about.
        let (cached_rss, cached_anon) = idle_rss(&mesh, "wecho")?;
        client.close().await;
        let (native_cold, wasm_cold) = (Samples::new(native_cold), Samples::new(wasm_cold));
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!("| wasm-echo ({PAYLOAD} B echo, one router) | native (cc -O2) | WASI (polis-wasm) | ratio | target |");
        println!("|---|---|---|---|---|");
        println!(
            "| warm call p50 ({WARM} calls) | {} | {} | {:.2}x | <= 1.5x |",
            duration(native_warm.p50()),
            duration(wasm_warm.p50()),
            ratio(wasm_warm.p50(), native_warm.p50())
        );
        println!(
            "| warm call p99 | {} | {} | {:.2}x | |",
            duration(native_warm.pct(99.0)),
            duration(wasm_warm.pct(99.0)),
            ratio(wasm_warm.pct(99.0), native_warm.pct(99.0))
        );
        println!(
            "| cold start p50, cache warm ({cold_runs} runs: load + first call) | {} | {} | {:.2}x | <= 2x |",
            duration(native_cold.p50()),
            duration(wasm_cold.p50()),
            ratio(wasm_cold.p50(), native_cold.p50())
        );
        println!("| first start (compiling) | | {} | | reported |", duration(first));
        println!(
            "| idle RSS per module process, started from the cache | {} | {} | | <= 20 MiB |",
            mib(native_rss),
            mib(cached_rss)
        );
        println!(
            "| of which private (RssAnon; the rest is the binary's pages, shared) | {} | {} | | |",
            mib(native_anon),
            mib(cached_anon)
        );
        println!("| idle RSS after the first (compiling) start | | {} | | |", mib(compiled_rss));
        println!("| polis-wasm binary (runtime-only when built alone) | | {:.1} MB | | |", host_size as f64 / 1e6);
        anyhow::Ok(())
    })?;
    let stop = mesh.run(&["stop"]);
    ensure!(stop.status().success(), "polis stop failed\n{stop}");
    Ok(())
}

fn build(cmd: std::process::Command) -> anyhow::Result<()> {
    let run = Run::within(cmd, Duration::from_secs(600), None);
    ensure!(run.status().success(), "build failed\n{run}");
    Ok(())
}

fn unload(mesh: &TestMesh, name: &str) -> anyhow::Result<()> {
    let run = mesh.run(&["module", "unload", name]);
    ensure!(run.status().success(), "unload {name} failed\n{run}");
    Ok(())
}

/// The time of a call that loads `name`: spawn, handshake, one ping.
async fn start(client: &Client, name: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pong = client.call_json(name, "ping", &serde_json::Value::Null, None).await?;
    let took = started.elapsed();
    ensure!(pong == "pong", "{name} answered {pong}");
    Ok(took)
}

async fn warm(client: &Client, name: &str, payload: &Bytes) -> anyhow::Result<Samples> {
    for _ in 0..WARMUP {
        client.call(name, "echo", payload.clone(), None).await?;
    }
    let mut samples = Vec::with_capacity(WARM);
    for _ in 0..WARM {
        let started = Instant::now();
        let reply = client.call(name, "echo", payload.clone(), None).await?;
        samples.push(started.elapsed());
        ensure!(reply == *payload, "{name} answered {:?}", String::from_utf8_lossy(&reply));
    }
    Ok(Samples::new(samples))
}

/// The module process's VmRSS and RssAnon in KiB, after its calls, while idle.
fn idle_rss(mesh: &TestMesh, name: &str) -> anyhow::Result<(u64, u64)> {
    let status = mesh.run(&["status", "--json"]);
    let json = status.json();
    let pid = json["modules"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .and_then(|m| m["pid"].as_u64())
        .with_context(|| format!("no pid for {name} in {json}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} for pid {pid}"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// Where `polis-bench wasm` looks for binaries by default.
pub(crate) fn default_bin_dir() -> PathBuf {
    crate::setup::workspace().join("target/release")
}
