//! polis's figures, each in a fresh temp mesh with the release binaries:
//! warm calls (frames and jsonrpc), throughput and router memory through
//! `polis_client::Client`; cold starts through `polis call`; the failover gap
//! with a standby router and a router killed by SIGKILL.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use polis_client::{Client, ClientOptions, Launcher, Transport};
use polis_discovery::{Discovery, MeshDir};
use polis_mesh::pb::{self, router_client::RouterClient};
use polis_testing::TestMesh;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{
    CALLERS, CALLERS_MANY, COLD_RUNS, FAILOVER_ROUNDS, PAYLOAD, PROFILE_CALLS, RUNTIME_ENV, THROUGHPUT_FOR,
    TRACED_LOAD_FOR, WARM_CALLS, WARMUP_CALLS,
    procs::{self, Strace, Syscalls, Usage},
    progress,
    results::{Cold, Outcome, Profile, System, Throughput, outcome},
    setup,
    stats::Samples,
};

/// How long any one step may take before the bench gives up on it.
const STEP: Duration = Duration::from_secs(60);

/// polis's figures: the shared ones, and those Norgopolis has no peer for.
#[derive(Debug)]
pub(crate) struct PolisFigures {
    pub(crate) system: System,
    pub(crate) warm_jsonrpc: Outcome<Samples>,
    /// Through `polis_client` over gRPC, and through a bare tonic client.
    pub(crate) warm_grpc: Outcome<(Samples, Profile)>,
    pub(crate) warm_tonic: Outcome<(Samples, Profile)>,
    pub(crate) throughput_grpc: Outcome<Throughput>,
    pub(crate) failover: Outcome<Samples>,
    /// The router on a multi-thread runtime, when this build has the knob.
    pub(crate) multi_thread: Outcome<Flavour>,
}

/// A router's figures on one runtime flavour.
#[derive(Debug)]
pub(crate) struct Flavour {
    pub(crate) threads: usize,
    pub(crate) warm: Samples,
    pub(crate) warm_profile: Profile,
    pub(crate) throughput: Throughput,
    pub(crate) load_usage: Usage,
    pub(crate) throughput_many: Throughput,
}

pub(crate) async fn measure(bins: &setup::Polis) -> PolisFigures {
    let figures = outcome(warm_and_load(bins).await);
    fn err<T>(e: &str) -> Outcome<T> {
        Err(e.to_owned())
    }
    let (warm, warm_jsonrpc, throughput, rss_idle, rss_load) = match &figures {
        Ok(w) => (
            Ok(w.frames.clone()),
            w.jsonrpc.clone(),
            Ok(w.throughput.clone()),
            Ok(w.rss_idle),
            Ok(w.rss_load),
        ),
        Err(e) => (err(e), err(e), err(e), err(e), err(e)),
    };
    let (throughput_many, warm_profile, load_profile, warm_grpc, warm_tonic, throughput_grpc) = match figures
    {
        Ok(w) => (
            Ok(w.throughput_many),
            Ok(w.frames_profile),
            Ok(w.load_profile),
            w.grpc,
            w.tonic,
            w.throughput_grpc,
        ),
        Err(e) => (err(&e), err(&e), err(&e), err(&e), err(&e), err(&e)),
    };
    progress(&format!("polis: the router on a multi-thread runtime ({RUNTIME_ENV}=multi-thread)"));
    let multi_thread = outcome(multi_thread(bins).await);
    progress(&format!("polis: {WARM_CALLS} warm calls to echo, all on one CPU"));
    let warm_one_cpu = outcome(warm_one_cpu(bins).await);
    progress(&format!("polis: cold start, {COLD_RUNS} runs of `polis call` with no router"));
    let cold = outcome(cold_starts(bins).await);
    progress(&format!("polis: failover gap, {FAILOVER_ROUNDS} routers killed with SIGKILL"));
    let failover = outcome(failover(bins).await);
    PolisFigures {
        system: System {
            warm,
            warm_one_cpu,
            throughput,
            cold,
            rss_idle,
            rss_load,
            throughput_many,
            warm_profile,
            load_profile,
        },
        warm_jsonrpc,
        warm_grpc,
        warm_tonic,
        throughput_grpc,
        failover,
        multi_thread,
    }
}

/// A hermetic temp mesh (`polis_testing::TestMesh`) with `echo` (frames)
/// and `pyecho` (jsonrpc) manifests. On drop, every process of the mesh
/// still running is killed.
struct TempMesh {
    mesh: TestMesh,
    dir: PathBuf,
    modules: PathBuf,
    polis: PathBuf,
}

impl TempMesh {
    fn new(bins: &setup::Polis) -> anyhow::Result<Self> {
        let mesh = TestMesh::new(&bins.polis)?;
        mesh.module("echo", &bins.echo, "");
        if let Some(pyecho) = &bins.pyecho {
            mesh.manifest(
                "pyecho",
                &format!("exec = {:?}\nprotocol = \"jsonrpc\"", pyecho.display().to_string()),
            );
        }
        let (dir, modules) = (mesh.dir.clone(), mesh.modules.clone());
        Ok(Self { mesh, dir, modules, polis: bins.polis.clone() })
    }

    /// `polis --mesh-dir <dir> --modules-path <modules> ARGS`, hermetic.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.mesh.polis(args));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Frames, whatever `POLIS_TRANSPORT` says: each figure names its transport.
    fn options(&self, launch: bool) -> ClientOptions {
        self.options_over(launch, Transport::Frames)
    }

    fn options_over(&self, launch: bool, transport: Transport) -> ClientOptions {
        let launcher =
            Launcher { modules_path: Some(self.modules.display().to_string()), ..Launcher::new(&self.polis) };
        ClientOptions {
            mesh_dir: Some(self.dir.clone()),
            launch: launch.then_some(launcher),
            transport,
            ..ClientOptions::new("polis-bench")
        }
    }

    fn router_pid(&self) -> anyhow::Result<u32> {
        let router = MeshDir::open(&self.dir)?.current_router()?;
        Ok(router.context("no router is published")?.pid)
    }

    /// `polis stop`, then waits for the mesh's processes to end.
    async fn stop(&self) -> anyhow::Result<()> {
        let out = procs::output(self.command(&["stop"]), STEP).await?;
        // Exit 4: no router was running, which is fine here.
        if !out.status.success() && out.status.code() != Some(4) {
            return Err(procs::failure("polis stop", &out));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !procs::mesh_processes(&self.dir).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.kill_leftovers()
    }

    fn kill_leftovers(&self) -> anyhow::Result<()> {
        procs::kill_all("mesh cleanup", Duration::from_secs(5), || procs::mesh_processes(&self.dir))
    }
}

impl Drop for TempMesh {
    fn drop(&mut self) {
        let _ = self.kill_leftovers();
    }
}

/// A JSON string of exactly `bytes` bytes.
pub(crate) fn json_payload(bytes: usize) -> String {
    format!("\"{}\"", "x".repeat(bytes - 2))
}

/// One echo call, checked.
async fn echo(
    client: &Client,
    service: &str,
    payload: &Bytes,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let reply = client.call(service, "echo", payload.clone(), timeout).await?;
    check(service, &reply, payload)
}

fn check(service: &str, reply: &Bytes, payload: &Bytes) -> anyhow::Result<()> {
    if reply != payload {
        let same = serde_json::from_slice::<serde_json::Value>(reply).ok()
            == serde_json::from_slice::<serde_json::Value>(payload).ok();
        ensure!(same, "{service} answered {:?}", String::from_utf8_lossy(reply));
    }
    Ok(())
}

/// What makes warm calls: a `polis_client::Client` (either transport), or a
/// bare tonic `RouterClient`, as a foreign gRPC client would hold one.
enum Caller<'a> {
    Client(&'a Client),
    Tonic(RouterClient<Channel>),
}

impl Caller<'_> {
    async fn echo(&mut self, service: &str, payload: &Bytes) -> anyhow::Result<()> {
        match self {
            Caller::Client(client) => echo(client, service, payload, None).await,
            Caller::Tonic(router) => {
                let request = pb::CallRequest {
                    service: service.into(),
                    method: "echo".into(),
                    payload: Some(pb::Payload {
                        content_type: polis_mesh::JSON.into(),
                        data: payload.clone(),
                    }),
                    ..Default::default()
                };
                let reply = router.call(request).await?.into_inner();
                check(service, &reply.payload.map(|p| p.data).unwrap_or_default(), payload)
            }
        }
    }
}

/// `WARM_CALLS` sequential calls, after `WARMUP_CALLS` untimed ones.
async fn warm(caller: &mut Caller<'_>, service: &str, payload: &Bytes) -> anyhow::Result<Samples> {
    let calls = async {
        for _ in 0..WARMUP_CALLS {
            caller.echo(service, payload).await?;
        }
        let mut samples = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            let start = Instant::now();
            caller.echo(service, payload).await?;
            samples.push(start.elapsed());
        }
        anyhow::Ok(Samples::new(samples))
    };
    tokio::time::timeout(STEP, calls).await.context("warm calls took too long")?
}

/// Warm calls with the router's usage over them, then `PROFILE_CALLS` more
/// under strace for its syscalls.
async fn warm_profiled(
    caller: &mut Caller<'_>,
    service: &str,
    payload: &Bytes,
    router: u32,
) -> anyhow::Result<(Samples, Profile)> {
    let before = Usage::of(router)?;
    let samples = warm(caller, service, payload).await?;
    let usage = Usage::of(router)?.since(&before);
    let syscalls = traced(router, async {
        for _ in 0..PROFILE_CALLS {
            caller.echo(service, payload).await?;
        }
        Ok(())
    })
    .await;
    let profile = Profile {
        calls: (WARMUP_CALLS + WARM_CALLS) as u64,
        usage,
        traced_calls: PROFILE_CALLS as u64,
        syscalls,
    };
    Ok((samples, profile))
}

/// The syscalls of `pid` while `run` runs, or why strace could not count them.
pub(crate) async fn traced(pid: u32, run: impl Future<Output = anyhow::Result<()>>) -> Outcome<Syscalls> {
    let strace = outcome(Strace::attach(pid))?;
    outcome(run.await)?;
    outcome(strace.finish())
}

struct Warm {
    frames: Samples,
    frames_profile: Profile,
    jsonrpc: Outcome<Samples>,
    grpc: Outcome<(Samples, Profile)>,
    tonic: Outcome<(Samples, Profile)>,
    throughput: Throughput,
    load_profile: Profile,
    throughput_many: Throughput,
    throughput_grpc: Outcome<Throughput>,
    rss_idle: u64,
    rss_load: u64,
}

/// Warm calls, router memory and throughput, against one router.
async fn warm_and_load(bins: &setup::Polis) -> anyhow::Result<Warm> {
    let mesh = TempMesh::new(bins)?;
    let payload = Bytes::from(json_payload(PAYLOAD));
    progress("polis: launching a router and loading echo");
    let client = Client::connect(mesh.options(true)).await.context("cannot connect to polis")?;
    echo(&client, "echo", &payload, Some(STEP)).await.context("the first call")?;
    let router = mesh.router_pid()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = procs::rss_kib(router).context("cannot read the router's VmRSS")?;

    progress(&format!("polis: {WARM_CALLS} warm calls to echo (frames), then {PROFILE_CALLS} under strace"));
    let (frames, frames_profile) =
        warm_profiled(&mut Caller::Client(&client), "echo", &payload, router).await?;
    let jsonrpc = match bins.pyecho {
        Some(_) => {
            progress(&format!("polis: {WARM_CALLS} warm calls to pyecho (jsonrpc)"));
            outcome(warm(&mut Caller::Client(&client), "pyecho", &payload).await)
        }
        None => Err("python3 is not installed".into()),
    };

    progress(&format!("polis: {WARM_CALLS} warm calls to echo through polis_client over gRPC"));
    let grpc = outcome(
        async {
            let grpc = Client::connect(mesh.options_over(false, Transport::Grpc)).await?;
            let figures = warm_profiled(&mut Caller::Client(&grpc), "echo", &payload, router).await;
            grpc.close().await;
            figures
        }
        .await,
    );
    progress(&format!("polis: {WARM_CALLS} warm calls to echo through a bare tonic RouterClient"));
    let tonic = outcome(
        async {
            let record = MeshDir::open(&mesh.dir)?.current_router()?.context("no router is published")?;
            let channel = polis_client::dial(&record).await?;
            warm_profiled(&mut Caller::Tonic(RouterClient::new(channel)), "echo", &payload, router).await
        }
        .await,
    );

    progress(&format!("polis: throughput, {CALLERS} callers for {THROUGHPUT_FOR:?}"));
    let load = throughput(&mesh, &payload, router, CALLERS, Transport::Frames, THROUGHPUT_FOR, false).await?;
    progress(&format!("polis: throughput, {CALLERS} callers for {TRACED_LOAD_FOR:?} under strace"));
    let traced_load =
        throughput(&mesh, &payload, router, CALLERS, Transport::Frames, TRACED_LOAD_FOR, true).await?;
    let load_profile = Profile {
        calls: load.throughput.calls,
        usage: load.usage,
        traced_calls: traced_load.throughput.calls,
        syscalls: traced_load.syscalls.unwrap_or_else(|| Err("not traced".into())),
    };
    progress(&format!("polis: throughput, {CALLERS_MANY} callers for {THROUGHPUT_FOR:?}"));
    let many =
        throughput(&mesh, &payload, router, CALLERS_MANY, Transport::Frames, THROUGHPUT_FOR, false).await?;
    progress(&format!("polis: throughput over gRPC, {CALLERS} callers for {THROUGHPUT_FOR:?}"));
    let throughput_grpc = outcome(
        throughput(&mesh, &payload, router, CALLERS, Transport::Grpc, THROUGHPUT_FOR, false)
            .await
            .map(|l| l.throughput),
    );
    client.close().await;
    mesh.stop().await?;
    Ok(Warm {
        frames,
        frames_profile,
        jsonrpc,
        grpc,
        tonic,
        throughput: load.throughput,
        load_profile,
        throughput_many: many.throughput,
        throughput_grpc,
        rss_idle,
        rss_load: load.peak_rss.max(many.peak_rss),
    })
}

/// A router started with `RUNTIME_ENV=multi-thread`: warm calls and
/// throughput, as for the default one. The router reads the knob only in a
/// build that has it; its thread count says whether it did.
async fn multi_thread(bins: &setup::Polis) -> anyhow::Result<Flavour> {
    let mesh = TempMesh::new(bins)?;
    let mut router = Candidate::spawn_with(&mesh, false, 0, &[(RUNTIME_ENV, "multi-thread")])?;
    let figures = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while mesh.router_pid().ok() != Some(router.pid()) {
            ensure!(Instant::now() < deadline, "the router did not publish itself within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let pid = router.pid();
        let payload = Bytes::from(json_payload(PAYLOAD));
        let client = Client::connect(mesh.options(false)).await?;
        echo(&client, "echo", &payload, Some(STEP)).await.context("the first call")?;
        let (warm, warm_profile) = warm_profiled(&mut Caller::Client(&client), "echo", &payload, pid).await?;
        let threads = Usage::of(pid)?.threads;
        let load =
            throughput(&mesh, &payload, pid, CALLERS, Transport::Frames, THROUGHPUT_FOR, false).await?;
        let many =
            throughput(&mesh, &payload, pid, CALLERS_MANY, Transport::Frames, THROUGHPUT_FOR, false).await?;
        client.close().await;
        anyhow::Ok(Flavour {
            threads,
            warm,
            warm_profile,
            throughput: load.throughput,
            load_usage: load.usage,
            throughput_many: many.throughput,
        })
    }
    .await;
    mesh.stop().await?;
    router.child.wait().await?;
    figures
}

/// Warm calls with the client, the router and the module all on CPU 0.
async fn warm_one_cpu(bins: &setup::Polis) -> anyhow::Result<Samples> {
    let _pin = procs::OneCpu::pin()?;
    let mesh = TempMesh::new(bins)?;
    let payload = Bytes::from(json_payload(PAYLOAD));
    // The router launched now, and the module it starts, inherit the pin.
    let client = Client::connect(mesh.options(true)).await.context("cannot connect to polis")?;
    let samples = warm(&mut Caller::Client(&client), "echo", &payload).await;
    client.close().await;
    mesh.stop().await?;
    samples
}

/// What one throughput run gave.
struct Load {
    throughput: Throughput,
    /// The router's peak VmRSS meanwhile (KiB).
    peak_rss: u64,
    /// The router's CPU and context switches over the run.
    usage: Usage,
    /// Its syscalls, when traced.
    syscalls: Option<Outcome<Syscalls>>,
}

/// `callers` frontends (each its own `Client`: session and connection)
/// calling in a loop for `time`; with `trace`, strace counts the router's
/// syscalls over the calling (not over the connecting).
async fn throughput(
    mesh: &TempMesh,
    payload: &Bytes,
    router: u32,
    callers: usize,
    transport: Transport,
    time: Duration,
    trace: bool,
) -> anyhow::Result<Load> {
    let mut clients = Vec::new();
    for _ in 0..callers {
        let client = Client::connect(mesh.options_over(false, transport)).await?;
        echo(&client, "echo", payload, Some(STEP)).await?;
        clients.push(client);
    }
    let strace = if trace { Some(outcome(Strace::attach(router))) } else { None };
    let before = Usage::of(router)?;
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let (mut calls, mut errors) = (0, 0);
                while Instant::now() < deadline {
                    match echo(&client, "echo", &payload, None).await {
                        Ok(()) => calls += 1,
                        Err(_) => errors += 1,
                    }
                }
                (calls, errors, client)
            })
        })
        .collect();
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(procs::rss_kib(router).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut total = Throughput { calls: 0, errors: 0, elapsed: Duration::ZERO };
    let mut clients = Vec::new();
    for task in tasks {
        let (calls, errors, client) = task.await?;
        total.calls += calls;
        total.errors += errors;
        clients.push(client);
    }
    total.elapsed = start.elapsed();
    let usage = Usage::of(router)?.since(&before);
    let syscalls = strace.map(|s| s.and_then(|s| outcome(s.finish())));
    for client in clients {
        client.close().await;
    }
    ensure!(peak > 0, "could not read the router's VmRSS under load");
    Ok(Load { throughput: total, peak_rss: peak, usage, syscalls })
}

/// Each run: a fresh mesh, `polis call echo echo PAYLOAD` (which launches
/// the router, which starts echo), timed from spawn to exit; then `polis stop`.
async fn cold_starts(bins: &setup::Polis) -> anyhow::Result<Cold> {
    let payload = json_payload(PAYLOAD);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for run in 0..COLD_RUNS {
        let mesh = TempMesh::new(bins)?;
        let cmd = mesh.command(&["call", "echo", "echo", &payload]);
        let start = Instant::now();
        let out = procs::output(cmd, STEP).await;
        let elapsed = start.elapsed();
        match out {
            Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == payload => {
                times.push(elapsed)
            }
            Ok(out) => failures.push(procs::failure("polis call", &out).to_string()),
            Err(e) => failures.push(format!("{e:#}")),
        }
        mesh.stop().await.with_context(|| format!("stopping cold-start run {run}"))?;
    }
    let times = (!times.is_empty()).then(|| Samples::new(times));
    Ok(Cold { runs: COLD_RUNS, times, failures })
}

/// Sequential echo calls for `time` against the router of `mesh_dir`, then
/// p50 and p99 on stderr: a steady load to profile the router under.
pub(crate) async fn call_loop(
    mesh_dir: &std::path::Path,
    service: &str,
    time: Duration,
) -> anyhow::Result<()> {
    let options =
        ClientOptions { mesh_dir: Some(mesh_dir.into()), launch: None, ..ClientOptions::new("polis-bench") };
    let client = Client::connect(options).await?;
    let payload = Bytes::from(json_payload(PAYLOAD));
    let deadline = Instant::now() + time;
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let start = Instant::now();
        echo(&client, service, &payload, None).await?;
        samples.push(start.elapsed());
    }
    client.close().await;
    let samples = Samples::new(samples);
    let (p50, p99) = (crate::stats::duration(samples.p50()), crate::stats::duration(samples.pct(99.0)));
    progress(&format!("{} calls to {service}: p50 {p50}, p99 {p99}", samples.len()));
    Ok(())
}

/// A router candidate started by the bench, its stdout in a file.
struct Candidate {
    child: tokio::process::Child,
    stdout: PathBuf,
}

impl Candidate {
    fn spawn(mesh: &TempMesh, standby: bool, n: usize) -> anyhow::Result<Self> {
        Self::spawn_with(mesh, standby, n, &[])
    }

    fn spawn_with(mesh: &TempMesh, standby: bool, n: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let stdout = mesh.dir.with_file_name(format!("router-{n}.out"));
        let mut cmd = mesh.command(if standby { &["router", "--standby"] } else { &["router"] });
        cmd.stdout(std::fs::File::create(&stdout)?).stderr(Stdio::null()).envs(env.iter().copied());
        Ok(Self { child: cmd.spawn()?, stdout })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits until it has said it stands by (it then blocks on the lock).
    async fn standing_by(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&self.stdout)?.contains("standing by") {
            ensure!(Instant::now() < deadline, "the standby router did not stand by within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }
}

/// The start and end of the caller's latest successful call.
type LastSuccess = Option<(Instant, Instant)>;

/// The end of the first successful call started at or after `after`.
async fn success_after(rx: &mut watch::Receiver<LastSuccess>, after: Instant) -> anyhow::Result<Instant> {
    let wait = async {
        loop {
            if let Some((start, end)) = *rx.borrow_and_update()
                && start >= after
            {
                return Ok(end);
            }
            if rx.changed().await.is_err() {
                bail!("the caller stopped");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.context("no successful call within 10 s")?
}

/// A router and a standby; a frontend calling echo in a loop; kill the
/// router, time until the next call that succeeds (one started after the
/// kill), start a new standby; `FAILOVER_ROUNDS` times.
async fn failover(bins: &setup::Polis) -> anyhow::Result<Samples> {
    let mesh = TempMesh::new(bins)?;
    let mut router = Candidate::spawn(&mesh, false, 0)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh.router_pid().ok() != Some(router.pid()) {
        ensure!(Instant::now() < deadline, "the first router did not publish itself within 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut standby = Candidate::spawn(&mesh, true, 1)?;
    standby.standing_by().await?;

    // No launcher: the client must find the standby, not start a router.
    let client = Client::connect(mesh.options(false)).await?;
    let payload = Bytes::from(json_payload(PAYLOAD));
    let (tx, mut rx) = watch::channel::<LastSuccess>(None);
    let caller = tokio::spawn(async move {
        while !tx.is_closed() {
            let start = Instant::now();
            match echo(&client, "echo", &payload, Some(Duration::from_secs(5))).await {
                Ok(()) => {
                    let _ = tx.send(Some((start, Instant::now())));
                }
                // A dead router fails calls at once; do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        client
    });

    let mut gaps = Vec::new();
    for round in 0..FAILOVER_ROUNDS {
        success_after(&mut rx, Instant::now())
            .await
            .with_context(|| format!("round {round}: before the kill"))?;
        let pid = mesh.router_pid()?;
        ensure!(pid == router.pid(), "round {round}: router pid {pid} is not the one started");
        let killed = Instant::now();
        procs::kill(pid);
        let back =
            success_after(&mut rx, killed).await.with_context(|| format!("round {round}: after the kill"))?;
        gaps.push(back - killed);
        router.child.wait().await?;
        router = standby;
        standby = Candidate::spawn(&mesh, true, round + 2)?;
        standby.standing_by().await?;
    }
    drop(rx);
    let client = tokio::time::timeout(STEP, caller).await.context("the caller did not stop")??;
    client.close().await;
    // The standby first, or it would take office when the router stops.
    procs::kill(standby.pid());
    standby.child.wait().await?;
    mesh.stop().await?;
    router.child.wait().await?;
    Ok(Samples::new(gaps))
}
