//! The command-line grammar (DESIGN.md §8).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// A per-user mesh of processes: one router shared by many frontends, and
/// modules started on demand.
#[derive(Debug, Parser)]
#[command(name = "polis", version, propagate_version = true)]
pub(crate) struct Cli {
    /// The mesh directory [default: $XDG_RUNTIME_DIR/polis/<mesh>, else <tmp>/polis-<uid>/<mesh>]
    #[arg(long, global = true, env = "POLIS_MESH_DIR", value_name = "DIR")]
    pub(crate) mesh_dir: Option<PathBuf>,

    /// Where to look for modules, `:`-separated, before the user's data dir
    #[arg(long, global = true, env = "POLIS_MODULES_PATH", value_name = "PATHS")]
    pub(crate) modules_path: Option<String>,

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
    /// Manage modules at run time
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Print one JSON line per event matching PATTERN, until interrupted
    Watch(WatchArgs),
    /// Publish one event: TOPIC with a JSON value
    Publish(PublishArgs),
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
    /// Give up after this many milliseconds
    #[arg(long, value_name = "MS")]
    pub(crate) timeout: Option<u64>,
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
    /// How long to stay with no session and no call before exiting
    #[arg(long, value_name = "DURATION", default_value = "30s", env = "POLIS_LINGER", value_parser = humantime::parse_duration)]
    pub(crate) linger: Duration,
    /// How often frontends send keepalives
    #[arg(long, value_name = "DURATION", default_value = "5s", env = "POLIS_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) keepalive_interval: Duration,
    /// Drop a session silent for this long (a hung frontend)
    #[arg(long, value_name = "DURATION", default_value = "15s", env = "POLIS_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub(crate) keepalive_timeout: Duration,
    /// The largest frame or payload, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = polis_mesh::codec::DEFAULT_MAX_FRAME_LEN)]
    pub(crate) max_frame: usize,
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
}
