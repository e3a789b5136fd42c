//! The command-line grammar (DESIGN.md §8).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// The exit codes, shown at the end of `polis --help` (DESIGN.md §8).
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the remote side (router or module) returned an error
  2  usage: the command line or its input was wrong
  3  not found: no such module, service, node or log
  4  unavailable: no router and none could be launched, or a deadline passed
  5  refused: the mesh directory or setup is unsafe or unusable
  N  polis exec: APP's own status (128+n when a signal ended it)

Every error is one line on stderr: `error: CODE: message`.";

/// A per-user mesh of processes: one router shared by many frontends, and
/// modules started on demand.
#[derive(Debug, Parser)]
#[command(name = "polis", version, propagate_version = true, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    // Both read their variable after parsing (`parse`), not through clap's
    // `env`: clap counts a variable as a flag given, and a usage line would
    // show `--modules-path <PATHS>` as if it were required.
    /// The mesh directory [env: POLIS_MESH_DIR] [default: $XDG_RUNTIME_DIR/polis/<mesh>, else <tmp>/polis-<uid>/<mesh>]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) mesh_dir: Option<PathBuf>,

    /// Where to look for modules, `:`-separated, before the user's data dir [env: POLIS_MODULES_PATH]
    #[arg(long, global = true, value_name = "PATHS")]
    pub(crate) modules_path: Option<String>,

    /// The mesh's directory on etcd instead of the mesh directory alone, for a
    /// mesh across machines: `etcd://HOST:PORT[,HOST:PORT…]/PREFIX[?ttl=SECONDS]` [env: POLIS_DISCOVERY]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) discovery: Option<String>,

    /// The file (mode 0600) holding the token of a router's TCP endpoint [env: POLIS_TOKEN_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// The mesh CA's certificate (PEM): reach a router on etcd over TLS,
    /// trusting only this CA [env: POLIS_TLS_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// More logging on stderr (-v info, -vv debug); POLIS_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Call METHOD of SERVICE through the router, launching it if needed
    Call(CallArgs),
    /// Be a frontend: hold a session and run calls read from stdin, one per line
    Attach(AttachArgs),
    /// Print the live record serving NAME as JSON (`router` for the router)
    Resolve {
        /// A service name, or `router`
        name: String,
    },
    /// Show the router, its sessions and modules
    Status(JsonArg),
    /// List the live nodes of the mesh (read from the directory alone)
    Ls(JsonArg),
    /// Run a router candidate in the foreground
    Router(RouterArgs),
    /// Stop the router and its modules gracefully
    Stop,
    /// Manage modules at run time, and install them
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Show the methods a module serves, as it declares them (loading it if needed)
    Introspect(IntrospectArgs),
    /// Watch the calls (and events) crossing the router, one line each
    Monitor(MonitorArgs),
    /// Run APP with a private mesh of its own, gone when APP exits
    Exec(crate::commands::exec::ExecArgs),
    /// Show the router's log, or a module's
    Log(crate::commands::log::LogArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `polis man > ~/.local/share/man/man1/polis.1`
    Man,
    /// Print one JSON line per event matching PATTERN, until interrupted
    Watch(WatchArgs),
    /// Publish one event: TOPIC with a JSON value
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IntrospectArgs {
    /// The service (module) name
    pub(crate) service: String,
    /// Print JSON for scripts
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    /// Only these: a service, `service.method`, or a prefix ending in `*`
    pub(crate) pattern: Option<String>,
    /// One JSON object per line, for scripts
    #[arg(long)]
    pub(crate) json: bool,
    /// Show the request and reply payloads too
    #[arg(long)]
    pub(crate) payloads: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// A topic, or a prefix ending in `*` (`*` alone: every event)
    pub(crate) pattern: String,
    /// Fail (exit 4) instead of launching a router when none runs
    #[arg(long)]
    pub(crate) no_launch: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The topic (not `polis.…`: those are the router's)
    pub(crate) topic: String,
    /// The value, as JSON (default: null)
    pub(crate) value: Option<String>,
    /// Fail (exit 4) instead of launching a router when none runs
    #[arg(long)]
    pub(crate) no_launch: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The service (module) name
    pub(crate) service: String,
    /// The method
    pub(crate) method: String,
    /// The params, as JSON (default: none)
    pub(crate) params: Option<String>,
    /// Print each streamed item as one JSON value per line, as it arrives
    #[arg(long)]
    pub(crate) stream: bool,
    /// Give up after this long: `500ms`, `30s`, `2m`; a bare number is milliseconds
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Fail (exit 4) instead of launching a router when none runs
    #[arg(long)]
    pub(crate) no_launch: bool,
    #[command(flatten)]
    pub(crate) transport: TransportArg,
}

/// Each stdin line is `SERVICE METHOD [JSON]`; each answer is one line of
/// JSON on stdout, or `error: CODE: message`. The session (and so the router)
/// lasts until stdin ends.
#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// The frontend's name, as `polis status` shows it
    #[arg(long, default_value = "polis-attach")]
    pub(crate) name: String,
    /// Fail (exit 4) instead of launching a router when none runs
    #[arg(long)]
    pub(crate) no_launch: bool,
    /// Host the router in this process when none runs; when it leaves, the
    /// modules move on to the next router (hosted by another such frontend)
    #[arg(long)]
    pub(crate) host_router: bool,
    #[command(flatten)]
    pub(crate) transport: TransportArg,
}

/// How a frontend reaches the router.
#[derive(Debug, Args)]
pub(crate) struct TransportArg {
    /// Speak gRPC to the router instead of frames (also POLIS_TRANSPORT=grpc)
    #[arg(long)]
    pub(crate) grpc: bool,
}

impl TransportArg {
    /// `--grpc`, else `POLIS_TRANSPORT` (`frames` or `grpc`), else frames.
    pub(crate) fn transport(&self) -> Result<polis_client::Transport, String> {
        if self.grpc {
            return Ok(polis_client::Transport::Grpc);
        }
        match std::env::var("POLIS_TRANSPORT") {
            Ok(name) if !name.is_empty() => name.parse().map_err(|e| format!("POLIS_TRANSPORT: {e}")),
            _ => Ok(polis_client::Transport::Frames),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print JSON for scripts
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RouterArgs {
    /// If another router is in office, wait and take over when it goes
    #[arg(long)]
    pub(crate) standby: bool,
    /// Leave the terminal's session (setsid), as a launched router does
    #[arg(long)]
    pub(crate) detach: bool,
    /// How long a module has to exit after Shutdown before it is killed
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) grace: Duration,
    /// How long to stay with no session and no call before exiting; `never`
    /// keeps the router until it is stopped (for a service manager)
    /// [default: 30s; `never` for a router systemd runs in the foreground,
    /// which it tells by INVOCATION_ID]
    #[arg(long, value_name = "DURATION", env = "POLIS_LINGER", value_parser = parse_linger)]
    pub(crate) linger: Option<Duration>,
    /// Rotate a log in the mesh's `logs/` past this many bytes, keeping one
    /// older file (`router.log.1`)
    #[arg(long, value_name = "BYTES", default_value_t = crate::logs::DEFAULT_MAX_BYTES, env = "POLIS_LOG_MAX_BYTES")]
    pub(crate) log_max_bytes: u64,
    /// How often frontends send keepalives
    #[arg(long, value_name = "DURATION", default_value = "5s", env = "POLIS_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) keepalive_interval: Duration,
    /// Drop a session silent for this long (a hung frontend)
    #[arg(long, value_name = "DURATION", default_value = "15s", env = "POLIS_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub(crate) keepalive_timeout: Duration,
    /// The largest frame or payload, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = polis_mesh::codec::DEFAULT_MAX_FRAME_LEN)]
    pub(crate) max_frame: usize,
    /// With --discovery etcd://…: serve TCP at ADDR too (HOST:PORT; port 0
    /// picks one), for frontends on other machines, with --token-file's token
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// The address published for --listen, when it differs (0.0.0.0, NAT)
    #[arg(long, value_name = "ADDR", requires = "listen")]
    pub(crate) advertise: Option<String>,
    /// With --listen: serve TLS with this certificate (PEM, signed by the
    /// mesh CA, naming the advertised host), published as tls:HOST:PORT
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key (PEM, mode 0600) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) action: Option<RouterAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RouterAction {
    /// Hand the mesh to a fresh router process, keeping modules and sessions
    Restart,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModuleCommand {
    /// List the modules known to the router
    List(JsonArg),
    /// Start a module (and its dependencies) now
    Load {
        /// The module's name
        name: String,
    },
    /// Stop a module
    Unload {
        /// The module's name
        name: String,
    },
    /// Stop a module and start it again, reading its manifest anew
    Reload {
        /// The module's name
        name: String,
    },
    /// Install the module in DIR into the user's data dir
    Install(crate::commands::install::InstallArgs),
    /// Remove an installed module (stopping it first if it runs)
    Remove {
        /// The module's name
        name: String,
    },
    /// Make a new module's skeleton (manifest, code and a test) in ./NAME
    New(crate::commands::new::NewArgs),
}

impl RouterArgs {
    /// `--linger` or `POLIS_LINGER` if given; else `never` for a router in
    /// the foreground of a systemd unit (systemd sets INVOCATION_ID), which
    /// must not leave on its own, and 30s for any other.
    pub(crate) fn linger(&self) -> Duration {
        let systemd = std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty());
        self.linger.unwrap_or(if systemd && !self.detach { NEVER } else { Duration::from_secs(30) })
    }
}

/// A linger that stands for "never": the router stays until stopped.
pub(crate) const NEVER: Duration = Duration::MAX;

/// `--linger`: a duration, or `never`.
fn parse_linger(text: &str) -> Result<Duration, String> {
    if text == "never" {
        return Ok(NEVER);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it like `30s`, `5m`, or `never`)"))
}

/// `--timeout`: a duration like the router's flags; a bare number is
/// milliseconds, as it always was.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write it like `500ms`, `30s`, or milliseconds)"))
}

/// The version line: polis's own and the wire protocols it speaks.
pub(crate) fn version() -> String {
    format!(
        "{} (module protocol {}, frame session preamble {}, gRPC polis.v1)",
        env!("CARGO_PKG_VERSION"),
        polis_mesh::PROTOCOL_VERSION,
        polis_mesh::preamble::VERSION
    )
}

/// The whole grammar, with the version line filled in.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    Cli::command().version(VERSION.get_or_init(version).as_str())
}

/// Parses the command line; help and version go to stdout (exit 0), usage
/// errors to stderr as `error: INVALID_ARGUMENT: …` (exit 2).
pub(crate) fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().try_get_matches().unwrap_or_else(|e| usage_error(e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e));
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    cli.mesh_dir = cli.mesh_dir.or_else(|| var("POLIS_MESH_DIR").map(PathBuf::from));
    cli.modules_path =
        cli.modules_path.or_else(|| var("POLIS_MODULES_PATH").map(|v| v.to_string_lossy().into_owned()));
    cli.discovery =
        cli.discovery.or_else(|| var("POLIS_DISCOVERY").map(|v| v.to_string_lossy().into_owned()));
    cli.token_file = cli.token_file.or_else(|| var("POLIS_TOKEN_FILE").map(PathBuf::from));
    cli.tls_ca = cli.tls_ca.or_else(|| var("POLIS_TLS_CA").map(PathBuf::from));
    cli
}

fn usage_error(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) || !error.use_stderr()
    {
        error.exit();
    }
    let text = error.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("error: INVALID_ARGUMENT: {text}");
    std::process::exit(i32::from(crate::exit::USAGE));
}
