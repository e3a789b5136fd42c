//! `polis exec [--module NAME]… -- APP ARGS…`: APP with a private mesh.
//!
//! This process makes a fresh mesh directory, takes office as its router
//! (in this very process, so that nothing can outlive it: a `polis exec`
//! killed outright takes its router along), loads the modules asked for,
//! and runs APP with `POLIS_MESH_DIR` set to the new mesh. When APP exits,
//! the router stops its modules (Shutdown, the grace, then a kill), the
//! directory is removed, and APP's exit status is ours: its code, or 128+n
//! when signal n ended it, as a shell reports it.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{ExitCode, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use polis_discovery::{Campaign, Discovery, MeshDir};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::Cli,
    exit::{Failure, UNAVAILABLE, USAGE},
};

/// `polis exec` runs APP in a mesh of its own: a fresh mesh directory
/// (exported to APP as POLIS_MESH_DIR), a router for it in this process, and
/// the modules named by --module started before APP. When APP exits, the
/// router and its modules stop and the directory is removed; polis exits
/// with APP's status (128+n after signal n). SIGTERM and SIGHUP are passed
/// on to APP; Ctrl-C reaches APP from the terminal and polis waits for it.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// A module to start before APP (repeatable); others load on first call
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// How long a module has to exit after Shutdown before it is killed
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// The program and its arguments
    #[arg(last = true, required = true, value_name = "APP")]
    app: Vec<OsString>,
}

pub(crate) async fn run(cli: &Cli, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    for name in &args.modules {
        polis_node::manifest::validate_name(name).map_err(|e| Failure::new(USAGE, e))?;
    }
    let dir = PrivateDir::create()?;
    let mesh = MeshDir::open(dir.path()).context("cannot open the private mesh")?;
    let Campaign::Won(term) = mesh.campaign()? else {
        anyhow::bail!("another router holds the fresh mesh at {}", dir.path().display());
    };
    let modules_path = polis_discovery::locate::modules_path(cli.modules_path.as_deref());
    let mut host =
        polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(modules_path.as_deref()));
    host.grace = args.grace;
    let config = polis_node::router::RouterConfig {
        host,
        // It goes when APP goes, never before.
        sessions: polis_node::router::SessionConfig { linger: crate::cli::NEVER, ..Default::default() },
        successor: None,
        hand_over_on_exit: false,
    };
    let shutdown = CancellationToken::new();
    let router = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(polis_node::router::serve(
        term,
        config,
        shutdown.clone(),
    )));

    let status = async {
        let watch = mesh.watch()?;
        watch
            .wait_for(Duration::from_secs(10), || mesh.current_router())
            .await?
            .ok_or_else(|| Failure::new(UNAVAILABLE, "the private router did not start within 10 s"))?;
        load_modules(&mesh, &args.modules).await?;
        run_app(&args.app, mesh.root()).await
    }
    .await;

    shutdown.cancel();
    match router.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the private router: {e}"),
        Err(e) => tracing::warn!("the private router's task: {e}"),
    }
    drop(mesh);
    dir.remove();
    Ok(ExitCode::from(exit_code(status?)))
}

async fn load_modules(mesh: &MeshDir, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut admin = super::rpc::admin(mesh).await?;
    for name in names {
        admin
            .load_module(polis_mesh::pb::ModuleRequest { name: name.clone() })
            .await
            .map_err(super::rpc::status)?;
    }
    Ok(())
}

/// Runs APP in the terminal's process group (so that Ctrl-C and the
/// terminal reach it), passing SIGTERM and SIGHUP on, until it exits.
async fn run_app(app: &[OsString], mesh_dir: &Path) -> anyhow::Result<ExitStatus> {
    let (program, rest) = app.split_first().ok_or_else(|| Failure::new(USAGE, "no APP to run"))?;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let mut child = polis_mesh::process::command(program, &cwd, polis_mesh::process::Group::Parent)
        .args(rest)
        .env("POLIS_MESH_DIR", mesh_dir)
        .stdin(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound { crate::exit::NOT_FOUND } else { USAGE };
            Failure::new(code, format!("cannot run {} ({e})", program.to_string_lossy()))
        })?;
    wait_passing_signals(&mut child).await
}

#[cfg(unix)]
async fn wait_passing_signals(child: &mut tokio::process::Child) -> anyhow::Result<ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Listening is what keeps a Ctrl-C from ending us before APP.
    let mut int = signal(SignalKind::interrupt())?;
    let pid = child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    let pass = |sig: rustix::process::Signal| {
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = term.recv() => pass(rustix::process::Signal::TERM),
            _ = hup.recv() => pass(rustix::process::Signal::HUP),
            _ = int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
async fn wait_passing_signals(child: &mut tokio::process::Child) -> anyhow::Result<ExitStatus> {
    Ok(child.wait().await?)
}

/// A shell's view of a status: the code, or 128+n after signal n.
fn exit_code(status: ExitStatus) -> u8 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return u8::try_from(128 + signal).unwrap_or(u8::MAX);
    }
    status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))
}

/// The fresh mesh directory, removed by [`PrivateDir::remove`] (or on drop).
struct PrivateDir(Option<PathBuf>);

impl PrivateDir {
    /// `$XDG_RUNTIME_DIR/polis-exec-<pid>-<n>`, else the same under the temp
    /// dir: short, for the socket path's limit, and 0700 from the start.
    fn create() -> anyhow::Result<Self> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute() && d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        for n in 0..100u32 {
            let path = base.join(format!("polis-exec-{}-{n}", std::process::id()));
            match builder.create(&path) {
                Ok(()) => return Ok(Self(Some(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).context(format!("cannot create a mesh dir in {}", base.display())),
            }
        }
        anyhow::bail!("cannot create a fresh mesh dir in {}", base.display())
    }

    fn path(&self) -> &Path {
        self.0.as_deref().expect("not removed yet")
    }

    fn remove(mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!("cannot remove the private mesh at {}: {e}", path.display());
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
