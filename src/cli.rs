//! The command-line grammar (DESIGN.md §8).

use std::path::PathBuf;

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
    /// List the live nodes of the mesh
    Ls(LsArgs),
    /// Print the live record serving NAME as JSON (`router` for the router)
    Resolve {
        /// A service name, or `router`
        name: String,
    },
    /// Run a router candidate in the foreground
    Router(RouterArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Print JSON for scripts
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RouterArgs {
    /// If another router is in office, wait and take over when it goes
    #[arg(long)]
    pub(crate) standby: bool,
}
