//! What the bench needs of processes beyond the harness's `/proc` helpers
//! (`polis_testing::procs`): pinning to one CPU, finding what a measurement
//! left behind, killing exactly those pids (never by name), and running
//! commands to their end.

use std::{
    path::PathBuf,
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

pub(crate) use polis_testing::procs::{kill, mesh_processes, rss_kib};

/// Processes running one of the executables `exes` (absolute, canonical).
pub(crate) fn exe_processes(exes: &[PathBuf]) -> Vec<u32> {
    polis_testing::procs::processes_where(|proc_dir| {
        std::fs::read_link(proc_dir.join("exe")).is_ok_and(|exe| exes.contains(&exe))
    })
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
