//! `polis-wasm`: runs one WASI (preview 1) command module, sandboxed, with
//! the module's stdin and stdout on this process's own. The router starts
//! it for a manifest whose `exec` ends in `.wasm`, exactly as it starts any
//! module, so a WASI module speaks `jsonrpc` or `frames` as a native one
//! does.
//!
//! The guest gets what the arguments grant and nothing else: the
//! directories given (`--dir-ro` / `--dir-rw GUEST=HOST`), the environment
//! variables named (`--env NAME`, read from this process's environment),
//! its arguments, a memory cap (`--memory-mb`), stdout, stderr (the
//! module's log), and stdin. No sockets, no network, no other files. The
//! router builds these arguments from the manifest's `[sandbox]` table
//! alone.
//!
//! A module that computes without reading its input for `--cancel-grace-ms`
//! after the router cancelled a call is interrupted (epoch interruption,
//! checked by a timer started at the first cancel), and the host exits 1,
//! so that the router's restart policy takes over.
//!
//! This binary only loads compiled code (wasmtime without cranelift, so
//! that a cold start maps and relocates a small binary): on a cache miss it
//! runs `polis-wasm-compile` (crates/wasm-compile), see compile.rs.
//!
//! Exit status: the guest's own (`proc_exit`), 1 for a trap or an
//! interrupt, 78 (`EX_CONFIG`) when the module cannot be loaded at all: not
//! WebAssembly, an import the host does not provide, a grant that cannot be
//! honoured. The router reports 78 as `FAILED_PRECONDITION`.
//!
//! This crate is the only one that links wasmtime; nothing of polis links it.

mod cache;
mod compile;
mod engine;
mod stdin;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use wasmtime::{Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, WasiCtxBuilder, p1::WasiP1Ctx};

/// The exit status of a module that cannot be loaded (sysexits' EX_CONFIG).
const EX_CONFIG: u8 = 78;

/// How often the watchdog ticks the engine's epoch.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Parser)]
#[command(name = "polis-wasm", version, about = "Runs a WASI module sandboxed, for polis")]
struct Args {
    /// A directory the guest may read: GUEST=HOST (the guest opens GUEST/...).
    #[arg(long = "dir-ro", value_name = "GUEST=HOST")]
    dirs_ro: Vec<String>,
    /// A directory the guest may read and write: GUEST=HOST.
    #[arg(long = "dir-rw", value_name = "GUEST=HOST")]
    dirs_rw: Vec<String>,
    /// An environment variable passed in, with this process's value.
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// The cap on the guest's linear memory, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
    /// How the link is framed: "jsonrpc" or "frames" (to see cancels).
    #[arg(long, default_value = "jsonrpc")]
    protocol: String,
    /// How long a cancel may stay unread while the guest computes.
    #[arg(long, default_value_t = 1000)]
    cancel_grace_ms: u64,
    /// Where compiled code is cached (default: $XDG_CACHE_HOME/polis/wasm).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every time.
    #[arg(long)]
    no_cache: bool,
    /// The guest's argv[0] (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// The module.
    module: PathBuf,
    /// The guest's arguments.
    #[arg(last = true)]
    args: Vec<String>,
}

/// What the store holds: WASI's state and the memory cap.
struct Guest {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// Why the host stops before the guest runs, or while it runs.
enum Failure {
    /// The module cannot be loaded: a precondition the router reports.
    Load(anyhow::Error),
    /// The guest trapped or was interrupted.
    Trap(anyhow::Error),
    /// The guest exited with this status.
    Exit(i32),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Failure::Load(e)) => {
            // One line: the router reports the log's last line as the reason.
            let why = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("polis-wasm: cannot load {}: {why}", args.module.display());
            ExitCode::from(EX_CONFIG)
        }
        Err(Failure::Trap(e)) => {
            // The root cause is the one line a person needs; the wasm
            // backtrace wasmtime adds is noise in a module's log.
            eprintln!("polis-wasm: {} stopped: {}", args.module.display(), e.root_cause());
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let protocol = match args.protocol.as_str() {
        "jsonrpc" => stdin::Protocol::JsonRpc,
        "frames" => stdin::Protocol::Frames,
        other => return Err(Failure::Load(anyhow::anyhow!("unknown protocol {other:?}"))),
    };
    let engine = Engine::new(&engine::config()).map_err(Failure::Load)?;
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(cache::default_dir) };
    let module = cache::load(&engine, &args.module, cache_dir.as_deref()).map_err(Failure::Load)?;

    let mut linker: Linker<Guest> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi).map_err(Failure::Load)?;

    let shared = Arc::new(stdin::Shared::default());
    let wasi = sandbox(args, stdin::GuestStdin(shared.clone())).map_err(Failure::Load)?;
    let memory = usize::try_from(args.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let limits = StoreLimitsBuilder::new().memory_size(memory).instances(1).tables(4).memories(1).build();
    let mut store = Store::new(&engine, Guest { wasi, limits });
    store.limiter(|g| &mut g.limits);
    check_imports(&module, &linker, &mut store).map_err(Failure::Load)?;

    // The watchdog: the epoch ticks, and at each tick a guest that is
    // computing is asked whether it has left a cancel unread too long.
    let grace = Duration::from_millis(args.cancel_grace_ms);
    let watched = shared.clone();
    store.epoch_deadline_callback(move |_| {
        if watched.stuck(grace) {
            anyhow::bail!(
                "interrupted: a call was cancelled and the module did not read its input for {grace:?} (is it stuck in a loop?)"
            );
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store.set_epoch_deadline(1);

    // One current-thread runtime for all of wasmtime-wasi's async insides,
    // driven by the stdin thread (stdin.rs) and entered here on the guest's
    // thread: wasmtime-wasi uses the runtime it finds entered, and would
    // otherwise start its own multi-threaded one (two more threads at every
    // start). File I/O then runs on the guest's thread, which only ever
    // waits for its own call anyway, rather than on tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Load(anyhow::Error::new(e).context("cannot start the I/O runtime")))?;
    let handle = runtime.handle().clone();
    let _entered = handle.enter();
    // The epoch only needs to tick once a cancel is pending: until then no
    // guest can be stuck, so the ticker (a task on that runtime) starts then.
    let ticker = engine.clone();
    let tick_on = handle.clone();
    let start_ticker = move || {
        tick_on.spawn(async move {
            let mut every = tokio::time::interval(TICK);
            loop {
                every.tick().await;
                ticker.increment_epoch();
            }
        });
    };

    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(|e| Failure::Load(e.context("cannot instantiate it")))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| Failure::Load(anyhow::anyhow!("it exports no `_start`: build a WASI command module")))?;
    stdin::pump(runtime, shared, protocol, start_ticker);
    match start.call(&mut store, ()) {
        Ok(()) => Ok(()),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            Some(I32Exit(code)) => Err(Failure::Exit(*code)),
            None => Err(Failure::Trap(e)),
        },
    }
}

/// Every import must be one the host provides, named in the error if not.
fn check_imports(module: &Module, linker: &Linker<Guest>, store: &mut Store<Guest>) -> anyhow::Result<()> {
    let missing: Vec<String> = module
        .imports()
        .filter(|import| linker.get_by_import(&mut *store, import).is_none())
        .map(|import| format!("{}::{}", import.module(), import.name()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "it imports {}, which the host does not provide (polis-wasm provides wasi_snapshot_preview1 only)",
        missing.join(", ")
    )
}

/// The WASI context: exactly what the arguments grant.
fn sandbox(args: &Args, stdin: stdin::GuestStdin) -> anyhow::Result<WasiP1Ctx> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(stdin).inherit_stdout().inherit_stderr();
    wasi.allow_blocking_current_thread(true);
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    wasi.socket_addr_check(|_, _| Box::pin(async { false }));
    let argv0 = args.name.clone().unwrap_or_else(|| {
        args.module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    });
    wasi.arg(argv0).args(&args.args);
    for name in &args.env {
        if let Ok(value) = std::env::var(name) {
            wasi.env(name, value);
        }
    }
    for (specs, dir_perms, file_perms) in
        [(&args.dirs_ro, DirPerms::READ, FilePerms::READ), (&args.dirs_rw, DirPerms::all(), FilePerms::all())]
    {
        for spec in specs {
            let (guest, host) =
                spec.split_once('=').with_context(|| format!("--dir {spec:?}: write it GUEST=HOST"))?;
            wasi.preopened_dir(host, guest, dir_perms, file_perms)
                .with_context(|| format!("cannot grant directory {host} (as {guest})"))?;
        }
    }
    Ok(wasi.build_p1())
}
