//! The one place where module processes are started, behind the seam
//! ([`Launch`]) that lets tests start in-process modules instead.

use std::{fs::OpenOptions, future::Future, io, path::Path, pin::Pin, process::ExitStatus, process::Stdio};

use polis_mesh::process::{self, Group};

use super::link::{ByteReader, ByteWriter};
use crate::manifest::Manifest;

/// What a spawned module is told about its mesh.
#[derive(Debug, Clone)]
pub(crate) struct SpawnEnv<'a> {
    pub(crate) mesh_dir: &'a Path,
    pub(crate) node_id: &'a str,
    pub(crate) log: &'a Path,
    /// The router's own additions ([`crate::HostConfig::module_env`]).
    pub(crate) extra: &'a [(String, std::ffi::OsString)],
}

/// A started module: the two ends of its link and the process to reap.
pub(crate) struct Launched {
    pub(crate) stdin: ByteWriter,
    pub(crate) stdout: ByteReader,
    pub(crate) child: Box<dyn ChildProcess>,
}

/// How the host starts a module's process: [`Spawn`] for real, or a test's
/// stand-in that hands back in-memory pipes.
pub(crate) trait Launch: Send + Sync + 'static {
    fn launch(&self, manifest: &Manifest, env: &SpawnEnv<'_>) -> io::Result<Launched>;
}

/// A process the host started: its own child, which it kills and reaps.
pub(crate) trait ChildProcess: Send {
    fn id(&self) -> Option<u32>;
    /// Sends SIGKILL; returns at once.
    fn start_kill(&mut self) -> io::Result<()>;
    /// Waits for the exit and reaps.
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>>;
}

impl ChildProcess for tokio::process::Child {
    fn id(&self) -> Option<u32> {
        tokio::process::Child::id(self)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        tokio::process::Child::start_kill(self)
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>> {
        Box::pin(tokio::process::Child::wait(self))
    }
}

/// Starts real processes, with [`spawn`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawn;

impl Launch for Spawn {
    fn launch(&self, manifest: &Manifest, env: &SpawnEnv<'_>) -> io::Result<Launched> {
        let mut child = spawn(manifest, env)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("spawned module has no stdio pipes"));
        };
        Ok(Launched { stdin: Box::new(stdin), stdout: Box::new(stdout), child: Box::new(child) })
    }
}

/// Starts `manifest.exec` with stdin and stdout piped for the link, stderr
/// appended to the module's log, the manifest's directory as working
/// directory, and the caller's environment plus the manifest's `[env]`,
/// the router's additions (how to reach the next router, on etcd) and
/// `POLIS_MESH_DIR`, `POLIS_NODE_ID`, `POLIS_SERVICE`.
///
/// The child gets a process group of its own, so that a Ctrl-C meant for a
/// router in a terminal does not reach its modules before their `Shutdown`.
/// It is not killed when its handle drops: a module may outlive this router
/// and re-attach to the next (DESIGN.md §7, Handover), so every kill is an
/// explicit decision of the instance's driver.
pub(crate) fn spawn(manifest: &Manifest, env: &SpawnEnv<'_>) -> io::Result<tokio::process::Child> {
    let log = OpenOptions::new().create(true).append(true).open(env.log)?;
    let mut cmd = match &manifest.sandbox {
        // A WebAssembly module runs in polis-wasm, with its grants.
        Some(sandbox) => super::wasm::command(manifest, sandbox)?,
        None => {
            let mut cmd = process::command(&manifest.exec, manifest.dir(), Group::Own);
            cmd.args(&manifest.args);
            cmd
        }
    };
    cmd.envs(&manifest.env)
        .envs(env.extra.iter().map(|(k, v)| (k, v)))
        .env("POLIS_MESH_DIR", env.mesh_dir)
        .env("POLIS_NODE_ID", env.node_id)
        .env("POLIS_SERVICE", &manifest.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
}

/// The last lines a module wrote to its log, for error messages.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 4096;
    let Ok(mut file) = std::fs::File::open(log) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    tail[tail.len().saturating_sub(lines)..].join(" | ")
}
