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

/// What a process has used so far: CPU time (user + system, all its
/// threads) and context switches (voluntary + involuntary, summed over the
/// threads alive now), from `/proc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) cpu: Duration,
    pub(crate) ctx_switches: u64,
    pub(crate) threads: usize,
}

/// `/proc/<pid>/stat` counts CPU time in `USER_HZ` ticks, which Linux fixes
/// at 100 for user space whatever the kernel's own tick is.
const USER_HZ: u64 = 100;

impl Usage {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
        // Fields 14 and 15 (utime, stime); the command name before them is in
        // parentheses and may hold spaces, so count from the last `)`.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
            bail!("/proc/{pid}/stat has no utime and stime")
        };
        let mut ctx_switches = 0;
        let mut threads = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
            threads += 1;
            ctx_switches += status
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(Self { cpu: Duration::from_millis((utime + stime) * 1000 / USER_HZ), ctx_switches, threads })
    }

    /// What was used between `before` and `self`.
    pub(crate) fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            ctx_switches: self.ctx_switches.saturating_sub(before.ctx_switches),
            threads: self.threads,
        }
    }
}

/// Syscall counts by name, from `strace -c`'s summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Syscalls {
    pub(crate) counts: std::collections::BTreeMap<String, u64>,
}

impl Syscalls {
    fn sum(&self, names: &[&str]) -> u64 {
        names.iter().filter_map(|n| self.counts.get(*n)).sum()
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Every syscall that writes to a socket or pipe.
    pub(crate) fn writes(&self) -> u64 {
        self.sum(&["write", "writev", "sendto", "sendmsg", "sendmmsg"])
    }

    pub(crate) fn reads(&self) -> u64 {
        self.sum(&["read", "readv", "recvfrom", "recvmsg", "recvmmsg"])
    }

    /// Waiting for readiness or for another thread.
    pub(crate) fn waits(&self) -> u64 {
        self.sum(&["epoll_wait", "epoll_pwait", "epoll_pwait2", "futex"])
    }

    /// The rows of `strace -c`: `% time  seconds  usecs/call  calls  [errors]  syscall`.
    fn parse(summary: &str) -> Self {
        let mut counts = std::collections::BTreeMap::new();
        for line in summary.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(calls)) = (fields.last(), fields.get(3)) else { continue };
            if fields.len() < 5 || *name == "total" || *name == "syscall" {
                continue;
            }
            if let Ok(calls) = calls.parse::<u64>() {
                *counts.entry((*name).to_owned()).or_insert(0) += calls;
            }
        }
        Self { counts }
    }
}

/// `strace -c -f -p <pid>` attached to a running process (all its threads);
/// [`Strace::finish`] detaches it and reads the counts. Dropped unfinished,
/// strace is killed and reaped (the kernel then detaches the tracee).
pub(crate) struct Strace {
    child: std::process::Child,
    summary: PathBuf,
    _dir: tempfile::TempDir,
}

impl Strace {
    /// Attaches, and returns once every thread of `pid` is traced.
    pub(crate) fn attach(pid: u32) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("pbs").tempdir_in("/tmp")?;
        let summary = dir.path().join("strace.txt");
        let child = polis_testing::command("strace")
            .args(["-c", "-f", "-o"])
            .arg(&summary)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run strace")?;
        let strace = Self { child, summary, _dir: dir };
        let tracer = format!("TracerPid:\t{}", strace.child.id());
        strace.wait_attached(pid, &tracer, Instant::now() + Duration::from_secs(10))
    }

    fn wait_attached(mut self, pid: u32, tracer: &str, deadline: Instant) -> anyhow::Result<Self> {
        loop {
            let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten().collect();
            if !tasks.is_empty()
                && tasks.iter().all(|t| {
                    std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| s.contains(tracer))
                })
            {
                return Ok(self);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("strace could not attach to {pid} ({status})");
            }
            if Instant::now() > deadline {
                bail!("strace did not attach to {pid} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops strace with SIGINT (it then detaches and writes its summary)
    /// and returns the counts.
    pub(crate) fn finish(mut self) -> anyhow::Result<Syscalls> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("strace did not stop within 10 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let summary = std::fs::read_to_string(&self.summary).context("strace wrote no summary")?;
        Ok(Syscalls::parse(&summary))
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strace_summaries() {
        let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           4       100           epoll_wait
 30.00    0.000300           3       100        10 recvfrom
 20.00    0.000200           2        50           sendto
 10.00    0.000100           1        25           writev
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           3       275        10 total
";
        let s = Syscalls::parse(summary);
        assert_eq!(s.total(), 275);
        assert_eq!(s.writes(), 75);
        assert_eq!(s.reads(), 100);
        assert_eq!(s.waits(), 100);
    }
}
