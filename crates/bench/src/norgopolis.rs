//! Norgopolis's figures, with the same measurements as polis's: warm calls,
//! throughput and server memory against a running `norgopolis-server`, and
//! cold starts through the client library's own autostart.
//!
//! How norgopolis-server 0.1.4 works, from its source: it listens on the
//! fixed address 127.0.0.1:62020, prints `ready` *before* it binds, and
//! starts a module on its first call by running the executable named after
//! the module with `PATH` set to its module directory (`--path`, else
//! `$XDG_DATA_HOME/norgopolis/modules`). norgopolis-client 0.6.0 with
//! `autostart-server` runs `norgopolis-server` from `PATH` when it cannot
//! connect, reads `ready`, and connects once. The calls themselves are gRPC
//! (tonic 0.9) over TCP to the server, and over the module's stdio from there.
//!
//! The peer client and module live in `bench/norgopolis` (see its
//! `src/client.rs` for the modes used here).

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};

use crate::{
    CALLERS, CALLERS_MANY, COLD_RUNS, PAYLOAD, PROFILE_CALLS, THROUGHPUT_FOR, TRACED_LOAD_FOR, WARM_CALLS,
    WARMUP_CALLS,
    polis::traced,
    procs::{self, Usage},
    progress,
    results::{Cold, Profile, System, Throughput, outcome},
    setup,
    stats::Samples,
};

/// Norgopolis's fixed port.
pub(crate) const PORT: u16 = 62020;

const STEP: Duration = Duration::from_secs(60);

pub(crate) async fn measure(tools: &setup::Norgopolis) -> System {
    if let Err(e) = port_free(Duration::ZERO) {
        progress(&format!("{e:#}: skipping Norgopolis"));
        return System::missing(&format!("{e:#}"));
    }
    let bench = match Bench::new(tools) {
        Ok(b) => b,
        Err(e) => return System::missing(&format!("{e:#}")),
    };
    let warm = outcome(bench.warm_and_load().await);
    let _ = bench.kill_all();
    fn err<T>(e: &str) -> Result<T, String> {
        Err(e.to_owned())
    }
    let (warm, throughput, rss_idle, rss_load, throughput_many, warm_profile, load_profile) = match warm {
        Ok(w) => (
            Ok(w.warm),
            Ok(w.throughput),
            Ok(w.rss_idle),
            Ok(w.rss_load),
            Ok(w.many),
            Ok(w.warm_profile),
            Ok(w.load_profile),
        ),
        Err(e) => (err(&e), err(&e), err(&e), err(&e), err(&e), err(&e), err(&e)),
    };
    progress(&format!("Norgopolis: {WARM_CALLS} warm calls to echo, all on one CPU"));
    let warm_one_cpu = outcome(bench.warm_one_cpu().await);
    let _ = bench.kill_all();
    progress(&format!("Norgopolis: cold start, {COLD_RUNS} runs of the client autostarting the server"));
    let cold = outcome(bench.cold_starts().await);
    let _ = bench.kill_all();
    System {
        warm,
        warm_one_cpu,
        throughput,
        cold,
        rss_idle,
        rss_load,
        throughput_many,
        warm_profile,
        load_profile,
    }
}

/// What one server gave under warm calls and load.
struct Warm {
    warm: Samples,
    warm_profile: Profile,
    throughput: Throughput,
    load_profile: Profile,
    many: Throughput,
    rss_idle: u64,
    rss_load: u64,
}

/// Whether 127.0.0.1:62020 can be bound, waiting up to `wait` for it.
fn port_free(wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, PORT)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "port {PORT} on 127.0.0.1 is not free ({e}); Norgopolis needs it: stop what listens there"
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

struct Bench<'a> {
    tools: &'a setup::Norgopolis,
    tmp: tempfile::TempDir,
    /// The module directory for `--path`, holding `echo`.
    modules: PathBuf,
    /// The processes this bench may leave behind, by executable.
    exes: Vec<PathBuf>,
}

impl<'a> Bench<'a> {
    fn new(tools: &'a setup::Norgopolis) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new().prefix("pbn").tempdir_in("/tmp")?;
        let modules = tmp.path().join("modules");
        std::fs::create_dir(&modules)?;
        let echo = modules.join("echo");
        std::fs::copy(&tools.echo, &echo).with_context(|| format!("cannot copy {}", tools.echo.display()))?;
        let exes = vec![echo.canonicalize()?, tools.server.canonicalize()?];
        Ok(Self { tools, tmp, modules, exes })
    }

    /// Kills every server and module this bench started, then waits for the port.
    fn kill_all(&self) -> anyhow::Result<()> {
        procs::kill_all("Norgopolis cleanup", Duration::from_secs(5), || procs::exe_processes(&self.exes))?;
        port_free(Duration::from_secs(5))
    }

    fn client(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(polis_testing::command(&self.tools.client));
        cmd.args(args).arg(PAYLOAD.to_string());
        cmd
    }

    /// Runs the bench client to its JSON line.
    async fn run_client(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = procs::output(self.client(args), STEP).await?;
        if !out.status.success() {
            return Err(procs::failure(&format!("norgopolis-bench-client {}", args.join(" ")), &out));
        }
        serde_json::from_slice(&out.stdout).context("the bench client's output is not JSON")
    }

    /// Starts the server, waits until it accepts connections, and returns its pid.
    async fn start_server(&self) -> anyhow::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::from(polis_testing::command(&self.tools.server));
        cmd.arg("--path").arg(&self.modules).stdin(Stdio::null()).stdout(Stdio::null()).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot run {}", self.tools.server.display()))?;
        // Its `ready` comes before it binds, so wait for a connection instead.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, PORT)).is_err() {
            ensure!(Instant::now() < deadline, "norgopolis-server did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(child)
    }

    /// Warm calls, throughput, idle and peak server RSS (KiB), and the
    /// server's CPU, context switches and syscalls per call.
    async fn warm_and_load(&self) -> anyhow::Result<Warm> {
        progress("Norgopolis: starting norgopolis-server and loading echo");
        let server = self.start_server().await?;
        let pid = server.id().context("the server exited")?;
        // One call loads the module, as in polis's idle figure.
        self.run_client(&["cold"]).await.context("the first call")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_idle = procs::rss_kib(pid).context("cannot read the server's VmRSS")?;

        progress(&format!("Norgopolis: {WARM_CALLS} warm calls to echo, then {PROFILE_CALLS} under strace"));
        let before = Usage::of(pid)?;
        let warm = self.warm().await?;
        let usage = Usage::of(pid)?.since(&before);
        let calls = PROFILE_CALLS.to_string();
        let syscalls = traced(pid, async { self.run_client(&["warm", &calls, "0"]).await.map(drop) }).await;
        // The client's connection is in the usage too: one per run, as
        // polis's session is outside its own.
        let warm_profile = Profile {
            calls: (WARMUP_CALLS + WARM_CALLS) as u64,
            usage,
            traced_calls: PROFILE_CALLS as u64,
            syscalls,
        };

        progress(&format!("Norgopolis: throughput, {CALLERS} callers for {THROUGHPUT_FOR:?}"));
        let (throughput, load_usage, rss_load) = self.throughput(pid, CALLERS, THROUGHPUT_FOR).await?;
        progress(&format!("Norgopolis: throughput, {CALLERS} callers for {TRACED_LOAD_FOR:?} under strace"));
        let mut traced_calls = 0;
        let syscalls = traced(pid, async {
            traced_calls = self.throughput(pid, CALLERS, TRACED_LOAD_FOR).await?.0.calls;
            Ok(())
        })
        .await;
        let load_profile = Profile { calls: throughput.calls, usage: load_usage, traced_calls, syscalls };
        progress(&format!("Norgopolis: throughput, {CALLERS_MANY} callers for {THROUGHPUT_FOR:?}"));
        let (many, _, rss_many) = self.throughput(pid, CALLERS_MANY, THROUGHPUT_FOR).await?;
        drop(server);
        Ok(Warm {
            warm,
            warm_profile,
            throughput,
            load_profile,
            many,
            rss_idle,
            rss_load: rss_load.max(rss_many),
        })
    }

    /// The bench client's throughput run against the server `pid`: the
    /// figure, the server's usage over it, and its peak VmRSS (KiB).
    async fn throughput(
        &self,
        pid: u32,
        callers: usize,
        time: Duration,
    ) -> anyhow::Result<(Throughput, Usage, u64)> {
        let secs = time.as_secs().to_string();
        let callers = callers.to_string();
        let args = ["throughput", &callers, &secs];
        let before = Usage::of(pid)?;
        let run = self.run_client(&args);
        tokio::pin!(run);
        let mut rss_load = 0;
        let out = loop {
            rss_load = rss_load.max(procs::rss_kib(pid).unwrap_or(0));
            tokio::select! {
                out = &mut run => break out?,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        };
        let usage = Usage::of(pid)?.since(&before);
        let throughput = Throughput {
            calls: out["calls"].as_u64().context("no `calls` in the throughput output")?,
            errors: out["errors"].as_u64().unwrap_or(0),
            elapsed: Duration::from_secs_f64(out["secs"].as_f64().unwrap_or(time.as_secs_f64())),
        };
        Ok((throughput, usage, rss_load))
    }

    /// `WARM_CALLS` timed calls by the bench client, after `WARMUP_CALLS`.
    async fn warm(&self) -> anyhow::Result<Samples> {
        let warm = self.run_client(&["warm", &WARM_CALLS.to_string(), &WARMUP_CALLS.to_string()]).await?;
        let ns = warm["ns"].as_array().context("no `ns` in the warm output")?;
        let warm = Samples::new(ns.iter().filter_map(|n| n.as_u64()).map(Duration::from_nanos).collect());
        ensure!(warm.len() == WARM_CALLS, "the warm output has {} samples", warm.len());
        Ok(warm)
    }

    /// Warm calls with the client, the server and the module all on CPU 0.
    async fn warm_one_cpu(&self) -> anyhow::Result<Samples> {
        let _pin = procs::OneCpu::pin()?;
        let _server = self.start_server().await?;
        self.warm().await
    }

    /// Each run: a fresh `$XDG_DATA_HOME` holding the module, no server;
    /// the bench client connects (the library starts the server) and calls
    /// echo once, timed from spawn to exit; then the server is killed.
    async fn cold_starts(&self) -> anyhow::Result<Cold> {
        let server_bin = self.tools.server.parent().context("the server has no directory")?;
        let path = std::env::join_paths(
            std::iter::once(server_bin.to_owned())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )?;
        let mut times = Vec::new();
        let mut failures = Vec::new();
        for run in 0..COLD_RUNS {
            self.kill_all()?;
            let data = self.tmp.path().join(format!("data-{run}"));
            let modules = data.join("norgopolis/modules");
            std::fs::create_dir_all(&modules)?;
            std::os::unix::fs::symlink(self.modules.join("echo"), modules.join("echo"))?;
            let stderr = data.join("client.err");

            let mut cmd = self.client(&["cold"]);
            cmd.env("PATH", &path).env("XDG_DATA_HOME", &data).stderr(std::fs::File::create(&stderr)?);
            let start = Instant::now();
            let out = procs::run(cmd, STEP).await;
            let elapsed = start.elapsed();
            match out {
                Ok(out) if out.status.success() => times.push(elapsed),
                Ok(_) => failures.push(first_line(&stderr)),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        self.kill_all()?;
        let times = (!times.is_empty()).then(|| Samples::new(times));
        Ok(Cold { runs: COLD_RUNS, times, failures })
    }
}

fn first_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().next().unwrap_or("failed without a message").to_owned()
}
