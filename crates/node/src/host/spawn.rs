//! The one place where module processes are started.

use std::{fs::OpenOptions, io, path::Path, process::Stdio};

use tokio::process::{Child, Command};

use crate::manifest::Manifest;

/// What a spawned module is told about its mesh.
#[derive(Debug, Clone)]
pub(crate) struct SpawnEnv<'a> {
    pub(crate) mesh_dir: &'a Path,
    pub(crate) node_id: &'a str,
    pub(crate) log: &'a Path,
}

/// Starts `manifest.exec` with stdin and stdout piped for the link, stderr
/// appended to the module's log, the manifest's directory as working
/// directory, and the caller's environment plus the manifest's `[env]` and
/// `POLIS_MESH_DIR`, `POLIS_NODE_ID`, `POLIS_SERVICE`.
///
/// The child gets a process group of its own, so that a Ctrl-C meant for a
/// router in a terminal does not reach its modules before their `Shutdown`.
/// It is not killed when its handle drops: a module may outlive this router
/// and re-attach to the next (DESIGN.md §7, Handover), so every kill is an
/// explicit decision of the instance's driver.
pub(crate) fn spawn(manifest: &Manifest, env: &SpawnEnv<'_>) -> io::Result<Child> {
    let log = OpenOptions::new().create(true).append(true).open(env.log)?;
    let mut cmd = Command::new(&manifest.exec);
    cmd.args(&manifest.args)
        .current_dir(manifest.dir())
        .envs(&manifest.env)
        .env("POLIS_MESH_DIR", env.mesh_dir)
        .env("POLIS_NODE_ID", env.node_id)
        .env("POLIS_SERVICE", &manifest.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
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
