//! Processes, seen through `/proc`: memory, finding what a measurement left
//! behind, and killing exactly those pids (never by name).

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// While kept, this thread runs on CPU 0 only, and so does every process it
/// starts (children inherit the affinity); dropping it restores the old one.
///
/// On this kind of machine (a VM) waking a process on another, idle CPU
/// costs tens of microseconds; on one CPU a wake-up is a plain context
/// switch. Measuring both ways shows which cost is whose.
#[derive(Debug)]
pub(crate) struct OneCpu {
    before: rustix::thread::CpuSet,
}

impl OneCpu {
    pub(crate) fn pin() -> anyhow::Result<Self> {
        let before = rustix::thread::sched_getaffinity(None).context("cannot read the CPU affinity")?;
        let mut one = rustix::thread::CpuSet::new();
        one.set(0);
        rustix::thread::sched_setaffinity(None, &one).context("cannot pin to CPU 0")?;
        Ok(Self { before })
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = rustix::thread::sched_setaffinity(None, &self.before);
    }
}

/// The resident set of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is a running process (not gone, not a zombie).
pub(crate) fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses.
    !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Running processes for which `matches(pid_dir)` holds.
fn scan(matches: impl Fn(&Path) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid != std::process::id() && matches(&entry.path()) && is_running(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Processes of the polis mesh at `mesh`: routers started with
/// `--mesh-dir <mesh>` and modules given `POLIS_MESH_DIR=<mesh>`.
pub(crate) fn mesh_processes(mesh: &Path) -> Vec<u32> {
    let dir = mesh.display().to_string();
    let env_line = format!("POLIS_MESH_DIR={dir}");
    scan(|proc_dir| {
        let read = |f: &str| std::fs::read(proc_dir.join(f)).unwrap_or_default();
        let has = |bytes: &[u8], needle: &str| bytes.split(|b| *b == 0).any(|part| part == needle.as_bytes());
        has(&read("cmdline"), &dir) || has(&read("environ"), &env_line)
    })
}

/// Processes running one of the executables `exes` (absolute, canonical).
pub(crate) fn exe_processes(exes: &[PathBuf]) -> Vec<u32> {
    scan(|proc_dir| std::fs::read_link(proc_dir.join("exe")).is_ok_and(|exe| exes.contains(&exe)))
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Kills every process `find` returns, until none is left (at most `timeout`).
pub(crate) fn kill_all(what: &str, timeout: Duration, find: impl Fn() -> Vec<u32>) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = find();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: processes {pids:?} still running after {timeout:?}");
        }
        pids.into_iter().for_each(kill);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `cmd` to completion within `timeout` (killed after it), stdout and
/// stderr captured.
pub(crate) async fn output(mut cmd: tokio::process::Command, timeout: Duration) -> anyhow::Result<Output> {
    cmd.stderr(Stdio::piped());
    run(cmd, timeout).await
}

/// Like [`output`], but stderr goes where `cmd` says: a process that leaves
/// children behind must not hand them a pipe that is read to its end.
pub(crate) async fn run(mut cmd: tokio::process::Command, timeout: Duration) -> anyhow::Result<Output> {
    cmd.kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::piped());
    let what = format!("{:?}", cmd.as_std());
    let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish within {timeout:?}"))?
        .with_context(|| format!("cannot wait for {what}"))
}

/// An error for a failed command: its status and the end of its stderr.
pub(crate) fn failure(what: &str, out: &Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    anyhow::anyhow!("{what} failed ({}): {}", out.status, tail.join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_read() {
        let kib = rss_kib(std::process::id()).expect("VmRSS of this process");
        assert!(kib > 100, "{kib} KiB");
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }
}
