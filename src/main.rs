//! `polis`: the command line, and the router daemon.
//!
//! Exit codes are a contract (DESIGN.md §8): 0 success, 1 the remote side
//! returned an error, 2 usage, 3 not found, 4 unavailable, and 5 (an
//! extension) the local mesh directory refused as unsafe. Errors are one
//! line on stderr starting with `error:`.

/// `println!` that hands back the write's error instead of panicking, so
/// that a closed stdout (`polis status | head`) ends a command quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod cli;
mod commands;
mod exit;
mod logs;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    init_logging(cli.verbose);
    // One thread: a call crosses the router as a chain of task wake-ups
    // (gRPC stream, module writer, module reader), and on one thread each is
    // a queue push, not a cross-thread wake. Measured faster for the router
    // (BENCHMARKS.md), and the commands need no more.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit::report(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        // Whoever read our output has stopped reading: that ends us quietly,
        // as it ends git and ripgrep.
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing_subscriber::filter::LevelFilter::WARN,
        1 => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::DEBUG,
    };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // `POLIS_LOG` takes `target=level` directives (`debug`,
    // `polis_node=debug,warn`): `Targets` parses them without the regex
    // engine `EnvFilter` brings, whose code every start would load (the
    // CLI's and the router's) and the router would keep resident. A
    // directive that does not parse is reported, and `-v` rules.
    let targets = std::env::var("POLIS_LOG").ok().map(|v| v.parse::<tracing_subscriber::filter::Targets>());
    match targets {
        Some(Ok(targets)) => {
            use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
            fmt.with_max_level(tracing::Level::TRACE).finish().with(targets).init();
        }
        Some(Err(e)) => {
            fmt.with_max_level(level).init();
            tracing::warn!("POLIS_LOG is not a list of target=level directives ({e}); using -v");
        }
        None => fmt.with_max_level(level).init(),
    }
}
