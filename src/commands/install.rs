//! `polis module install DIR` and `polis module remove NAME`: the user's
//! own modules, in the data dir at the end of the search path
//! (`~/.local/share/polis/modules/NAME`).
//!
//! An install copies DIR (but its `target/` and `.git/`: build output and
//! history are not the module) into a staging directory beside the
//! destination, checks that the copy loads as a manifest there (so a
//! relative `exec` that pointed outside DIR is caught now, not at the first
//! call), and then puts it in place with one rename, or one atomic exchange
//! when an older copy is there. A module running from the files it
//! replaces is then replaced by the router (`Admin.ReplaceModule`): new
//! calls wait while it answers its calls in flight, then it stops and the
//! new version starts, with no failed call and no router restart.
//! `--force` stops it at once instead, before the files change (its calls
//! in flight fail); it loads again from the new files on the next call.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::Args;
use polis_discovery::{Discovery, MeshDir};
use polis_mesh::pb;

use crate::exit::{Failure, NOT_FOUND, USAGE};

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The module's directory (with its module.toml); its name is the module's
    dir: PathBuf,
    /// Stop a running copy at once, failing its calls in flight, rather
    /// than replacing it once they are answered
    #[arg(long)]
    force: bool,
}

/// Top-level entries of a module's directory that are never copied.
const SKIPPED: &[&str] = &["target", ".git"];

pub(crate) async fn install(mesh: &MeshDir, args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let source = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
    let manifest = polis_node::manifest::load(&source.join("module.toml"))
        .map_err(|e| Failure::new(USAGE, format!("cannot install {}: {e}", source.display())))?;
    let root = user_dir()?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let dest = root.join(&manifest.name);

    let staging_root = root.join(format!(".install-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(staging_root.clone());
    let staging = staging_root.join(&manifest.name);
    copy_dir(&source, &staging, true).with_context(|| format!("cannot copy {}", source.display()))?;
    let copy = polis_node::manifest::load(&staging.join("module.toml")).map_err(|e| {
        Failure::new(
            USAGE,
            format!(
                "the installed copy of {} would not load: {e}; a relative exec must point inside the \
                 module's directory, or name a program on PATH",
                manifest.name
            ),
        )
    })?;

    let mut replace = None;
    if dest.exists() {
        if let Some(running) = running_from(mesh, &manifest.name, &dest).await? {
            if args.force {
                unload(mesh, &manifest.name).await?;
                eprintln!("stopped {} (pid {})", manifest.name, running.pid);
            } else {
                replace = Some(running);
            }
        }
        exchange(&staging, &dest)?;
    } else {
        std::fs::rename(&staging, &dest)
            .with_context(|| format!("cannot move {} to {}", staging.display(), dest.display()))?;
    }
    say!("installed {} {} in {}", copy.name, copy.version, dest.display())?;
    if let Some(old) = replace {
        let mut admin = super::rpc::admin(mesh).await?;
        let request = pb::ModuleRequest { name: copy.name.clone() };
        let new = admin.replace_module(request).await.map_err(|s| {
            eprintln!("{} is installed, but its new version did not start:", copy.name);
            super::rpc::status(s)
        })?;
        let new = new.into_inner();
        eprintln!(
            "replaced {} {} (pid {}) with {} (pid {}) once its calls in flight were answered",
            copy.name, old.version, old.pid, new.version, new.pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn remove(mesh: &MeshDir, name: &str) -> anyhow::Result<ExitCode> {
    polis_node::manifest::validate_name(name).map_err(|e| Failure::new(USAGE, e))?;
    let root = user_dir()?;
    let dest = root.join(name);
    if !dest.join("module.toml").exists() {
        return Err(Failure::new(
            NOT_FOUND,
            format!("no module {name:?} is installed in {}", root.display()),
        )
        .into());
    }
    if let Some(running) = running_from(mesh, name, &dest).await? {
        unload(mesh, name).await?;
        eprintln!("stopped {name} (pid {})", running.pid);
    }
    // Out of the search path at once, then deleted.
    let doomed = root.join(format!(".remove-{}-{name}", std::process::id()));
    std::fs::rename(&dest, &doomed).with_context(|| format!("cannot remove {}", dest.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove {}", doomed.display()))?;
    say!("removed {name} from {}", root.display())?;
    Ok(ExitCode::SUCCESS)
}

fn user_dir() -> anyhow::Result<PathBuf> {
    polis_node::manifest::user_dir()
        .ok_or_else(|| Failure::new(USAGE, "no home directory: cannot find the user's data dir").into())
}

/// The module `name` if the router in office runs it from `dir`.
async fn running_from(mesh: &MeshDir, name: &str, dir: &Path) -> anyhow::Result<Option<pb::ModuleInfo>> {
    if mesh.current_router()?.is_none() {
        return Ok(None);
    }
    let mut admin = super::rpc::admin(mesh).await?;
    let modules = admin.list_modules(pb::ListModulesRequest {}).await.map_err(super::rpc::status)?;
    let manifest = dir.join("module.toml");
    Ok(modules
        .into_inner()
        .modules
        .into_iter()
        .find(|m| m.name == name && m.state == "running" && Path::new(&m.manifest) == manifest))
}

async fn unload(mesh: &MeshDir, name: &str) -> anyhow::Result<()> {
    let mut admin = super::rpc::admin(mesh).await?;
    admin.unload_module(pb::ModuleRequest { name: name.to_owned() }).await.map_err(super::rpc::status)?;
    Ok(())
}

/// Swaps `new` into `dest` in one step, then deletes the old files (now at `new`).
fn exchange(new: &Path, dest: &Path) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::fs::renameat_with(rustix::fs::CWD, new, rustix::fs::CWD, dest, rustix::fs::RenameFlags::EXCHANGE)
        .with_context(|| format!("cannot put {} in place of {}", new.display(), dest.display()))?;
    #[cfg(not(target_os = "linux"))]
    {
        std::fs::remove_dir_all(dest).with_context(|| format!("cannot replace {}", dest.display()))?;
        std::fs::rename(new, dest)
            .with_context(|| format!("cannot move {} to {}", new.display(), dest.display()))?;
    }
    let _ = std::fs::remove_dir_all(new);
    Ok(())
}

/// Copies a directory tree, keeping permissions and symlinks; at the top,
/// [`SKIPPED`] entries are left out.
fn copy_dir(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_dir(&source, &target, false)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Removes the staging directory whatever happened.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
