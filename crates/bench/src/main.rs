//! `polis-bench`: measures polis against the physical floor and against
//! Norgopolis in one run on one machine, and writes BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p polis-bench
//! ```
//!
//! It builds polis's release binaries, installs norgopolis-server 0.1.4 and
//! builds the Norgopolis peer crates in `bench/norgopolis` (a Cargo project
//! outside the workspace), then measures, with progress on stderr.
//!
//! # Layout
//! - `setup`: building and installing what is measured.
//! - `floor`: raw Unix-socket and pipe ping-pong (and the hidden `echo-peer` mode).
//! - `polis`: warm calls, throughput, cold start, failover gap, router memory.
//! - `norgopolis`: the same for Norgopolis, through its bench client.
//! - `report`: BENCHMARKS.md, with every target as a ratio, met or missed.
//! - `machine`: what the machine is, and waiting for it to be quiet.
//! - `results`, `stats`, `procs`: shared types, percentiles, `/proc`.
//! - `calls`: `polis-bench --module-calls`, a module's call against a frontend's.
//! - `wasm`: `polis-bench wasm`, the sandboxed module against its native twin.
//!
//! Not part of the test run; CI only builds it (`cargo build --workspace`).

mod calls;
mod events;
mod floor;
mod machine;
mod norgopolis;
mod notes;
mod polis;
mod procs;
mod report;
mod results;
mod setup;
mod stats;
mod tcp;
mod wasm;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Payload size of every call and round trip.
const PAYLOAD: usize = 64;
const WARM_CALLS: usize = 5000;
const WARMUP_CALLS: usize = 200;
const CALLERS: usize = 16;
/// The second throughput load: more callers than the router has reason to
/// keep threads for.
const CALLERS_MANY: usize = 64;
/// Calls counted under strace (each syscall is slowed, so few and apart).
const PROFILE_CALLS: usize = 1000;
/// The throughput load under strace, for syscalls (and writes) per call.
const TRACED_LOAD_FOR: Duration = Duration::from_secs(2);
/// Picks the router's runtime flavour in a build that reads it (today's
/// `src/main.rs` does not; see BENCHMARKS.md's flavour section).
const RUNTIME_ENV: &str = "POLIS_ROUTER_RUNTIME";
const THROUGHPUT_FOR: Duration = Duration::from_secs(5);
const COLD_RUNS: usize = 30;
const FAILOVER_ROUNDS: usize = 20;

/// Benchmarks polis against the floor and Norgopolis; writes BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to write the report [default: BENCHMARKS.md in the workspace].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Use polis's release binaries as they are, without `cargo build`.
    #[arg(long)]
    no_build: bool,
    /// Leave Norgopolis out (its cells then say so).
    #[arg(long)]
    skip_norgopolis: bool,
    /// Measure the event bus alone (deliveries/s, publish-to-delivery
    /// latency, a stalled subscriber's cost) and print the figures.
    #[arg(long)]
    events: bool,
    /// Measure a warm call from one module to another against the same
    /// call from a frontend, and print the figures.
    #[arg(long)]
    module_calls: bool,
    #[command(subcommand)]
    peer: Option<Mode>,
}

// `EchoPeer` keeps its name: the floor's scripts call `echo-peer`.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
enum Mode {
    /// The floor's echo peer: `unix PATH` or `pipe`.
    #[command(hide = true)]
    EchoPeer { mode: String, path: Option<String> },
    /// Warm calls in a loop against a running router, for profiling it:
    /// `polis-bench call-loop MESH_DIR SERVICE SECS`.
    #[command(hide = true)]
    CallLoop { mesh_dir: PathBuf, service: String, secs: u64 },
    /// The notes module on a generated workspace; prints its own section.
    Notes {
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        /// Use the release binaries as they are, without `cargo build`.
        #[arg(long)]
        no_build: bool,
    },
    /// Writes a synthetic Neorg workspace of FILES notes into DIR.
    GenerateNotes {
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        files: usize,
    },
    /// The sandboxed wasm-echo against the same C module built natively:
    /// warm calls, cold starts, idle RSS (prints a table; see src/wasm.rs).
    Wasm {
        /// Where polis and polis-wasm are [default: target/release].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Cold starts of each module, alternating native and WASI: a
        /// start is a few milliseconds, so its median needs many on a
        /// shared machine.
        #[arg(long, default_value_t = 60)]
        cold_runs: usize,
    },
    /// A warm call over the router's TCP endpoint (a mesh on etcd), plain
    /// and with TLS, against the same call over router.sock (prints the
    /// figures; see src/tcp.rs).
    Tcp {
        /// Where polis and polis-echo are [default: target/release].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

/// One line of progress on stderr.
pub(crate) fn progress(message: &str) {
    eprintln!("polis-bench: {message}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.peer {
        Some(Mode::EchoPeer { mode, path }) => floor::echo_peer(mode, path.as_deref(), PAYLOAD),
        Some(Mode::CallLoop { mesh_dir, service, secs }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(polis::call_loop(mesh_dir, service, Duration::from_secs(*secs)))),
        None if args.events => events::run(!args.no_build),
        None if args.module_calls => calls::run(!args.no_build),
        Some(Mode::Notes { files, no_build }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(notes::run(*files, !*no_build))),
        Some(Mode::GenerateNotes { dir, files }) => notes::generate(dir, *files).map(|bytes| {
            progress(&format!("wrote {files} notes, {bytes} bytes, in {}", dir.display()));
        }),
        Some(Mode::Wasm { bin_dir, cold_runs }) => {
            wasm::run(&bin_dir.clone().unwrap_or_else(wasm::default_bin_dir), *cold_runs)
        }
        Some(Mode::Tcp { bin_dir }) => tcp::run(&bin_dir.clone().unwrap_or_else(wasm::default_bin_dir)),
        None => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| setup::workspace().join("BENCHMARKS.md"));
    progress("[1/5] preparing polis");
    let bins = setup::polis(!args.no_build)?;
    progress("[2/5] preparing Norgopolis");
    let peer = if args.skip_norgopolis {
        Err("left out with --skip-norgopolis".to_owned())
    } else {
        setup::norgopolis().map_err(|e| {
            progress(&format!("cannot prepare Norgopolis: {e:#}"));
            format!("{e:#}")
        })
    };

    let quiet = machine::wait_quiet();
    progress("[3/5] the floor: Unix-socket and pipe ping-pong");
    let floor = results::outcome(floor::measure(PAYLOAD));
    let floor_one_cpu = results::outcome(procs::OneCpu::pin().and_then(|_pin| floor::measure(PAYLOAD)));

    // Current-thread: the client side of every measurement runs on one
    // thread, the same for polis and Norgopolis.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    progress("[4/5] polis");
    let polis = rt.block_on(polis::measure(&bins));
    progress("[5/5] Norgopolis");
    let norgopolis = match &peer {
        Ok(peer) => rt.block_on(norgopolis::measure(peer)),
        Err(e) => results::System::missing(e),
    };

    let run =
        report::Run { machine: machine::Machine::here(&quiet), floor, floor_one_cpu, polis, norgopolis };
    // What follows the marker is written by hand: keep it.
    let old = std::fs::read_to_string(&output).ok();
    let report = report::keep_hand_written(&run.markdown(), old.as_deref());
    std::fs::write(&output, report).with_context(|| format!("cannot write {}", output.display()))?;
    progress(&format!("wrote {}", output.display()));
    for (target, met) in run.verdicts() {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        progress(&format!("  {verdict:>12}: {target}"));
    }
    Ok(())
}
