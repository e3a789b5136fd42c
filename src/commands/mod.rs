//! One module per command.

mod attach;
mod call;
mod docs;
pub(crate) mod exec;
pub(crate) mod install;
mod introspect;
pub(crate) mod log;
mod ls;
mod monitor;
pub(crate) mod new;
#[cfg(feature = "etcd")]
mod remote;
mod resolve;
mod router;
mod rpc;
mod status;
mod watch;

use std::process::ExitCode;

use polis_discovery::{Listing, MeshDir};

use crate::{
    cli::{Cli, Command, ModuleCommand},
    exit::{Failure, REFUSED},
};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that need no mesh directory at all.
    match &cli.command {
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Man => return docs::man(),
        Command::Module(ModuleCommand::New(args)) => return new::run(args),
        Command::Exec(args) => return exec::run(&cli, args).await,
        _ => {}
    }
    let mesh = open_mesh(&cli)?;
    // The one order every frontend follows (polis_discovery::locate).
    let modules_path = polis_discovery::locate::modules_path(cli.modules_path.as_deref());
    let modules_path = modules_path.as_deref();
    #[cfg(feature = "etcd")]
    if let Some(address) = remote::address(&cli)? {
        return remote::run(cli, address, mesh, modules_path).await;
    }
    #[cfg(not(feature = "etcd"))]
    if let Some(url) = cli.discovery.as_deref().filter(|url| !matches!(*url, "" | "dir")) {
        return Err(Failure::new(
            crate::exit::USAGE,
            format!(
                "--discovery {url}: this polis was built without etcd; build it with \
                 `cargo build --features etcd` (which needs protoc)"
            ),
        )
        .into());
    }
    match cli.command {
        Command::Attach(args) => attach::run(&mesh, modules_path, args).await,
        Command::Call(args) => call::run(&mesh, modules_path, args).await,
        Command::Ls(args) => ls::run(&mesh, args.json),
        Command::Resolve { name } => {
            // A resolve answers with one record; what the directory could
            // not read is said here, as `ls` says it.
            warn_skipped(&polis_discovery::Discovery::list(&mesh)?);
            resolve::run(&mesh, &name)
        }
        Command::Router(args) => router::run(mesh, modules_path, &args).await,
        Command::Status(args) => status::status(&mesh, args.json).await,
        Command::Stop => status::stop(&mesh).await,
        Command::Module(ModuleCommand::Install(args)) => install::install(&mesh, &args).await,
        Command::Module(ModuleCommand::Remove { name }) => install::remove(&mesh, &name).await,
        Command::Module(command) => status::module(&mesh, command).await,
        Command::Introspect(args) => introspect::run(&mesh, modules_path, args).await,
        Command::Monitor(args) => monitor::run(&mesh, args).await,
        Command::Log(args) => log::run(&mesh, &args).await,
        Command::Completions { .. } | Command::Man | Command::Exec(_) => unreachable!("handled above"),
        Command::Watch(args) => watch::watch(&mesh, modules_path, args).await,
        Command::Publish(args) => watch::publish(&mesh, modules_path, args).await,
    }
}

/// Launches `polis router` from this very executable.
fn launcher(modules_path: Option<&str>) -> polis_client::Launcher {
    let polis = std::env::current_exe().unwrap_or_else(|_| "polis".into());
    polis_client::Launcher {
        modules_path: modules_path.map(str::to_owned),
        ..polis_client::Launcher::new(polis)
    }
}

/// Opens the mesh directory; a refusal of it (unsafe or unusable) exits 5.
pub(crate) fn open_mesh(cli: &Cli) -> anyhow::Result<MeshDir> {
    let path = polis_discovery::locate::mesh_dir(cli.mesh_dir.clone());
    let context = || format!("cannot open the mesh at {}", path.display());
    MeshDir::open(&path).map_err(|e| {
        if e.is_refusal() {
            anyhow::Error::new(Failure::new(REFUSED, format!("{}: {e}", context())))
        } else {
            anyhow::Error::new(e).context(context())
        }
    })
}

/// Prints a warning for each record that could not be read.
fn warn_skipped(listing: &Listing) {
    for skipped in &listing.skipped {
        eprintln!("warning: {skipped}");
    }
}
