//! What one system's measurements produce. A measurement that could not be
//! taken keeps its reason, which the report prints in its cell.

use std::time::Duration;

use crate::stats::Samples;

/// A measurement, or why it is missing.
pub(crate) type Outcome<T> = Result<T, String>;

/// Keeps an error's whole chain, on one line, for the report.
pub(crate) fn outcome<T>(result: anyhow::Result<T>) -> Outcome<T> {
    result.map_err(|e| format!("{e:#}"))
}

/// Calls completed by concurrent callers in a fixed time.
#[derive(Debug, Clone)]
pub(crate) struct Throughput {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

impl Throughput {
    pub(crate) fn per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
}

/// Cold starts: the successful ones' times, and why the others failed.
#[derive(Debug, Clone)]
pub(crate) struct Cold {
    pub(crate) runs: usize,
    pub(crate) times: Option<Samples>,
    /// One reason per failed run.
    pub(crate) failures: Vec<String>,
}

impl Cold {
    pub(crate) fn ok(&self) -> usize {
        self.runs - self.failures.len()
    }

    /// The failure reasons with their counts, most frequent first.
    pub(crate) fn reasons(&self) -> Vec<(usize, String)> {
        let mut counted: Vec<(usize, String)> = Vec::new();
        for reason in &self.failures {
            match counted.iter_mut().find(|(_, r)| r == reason) {
                Some((n, _)) => *n += 1,
                None => counted.push((1, reason.clone())),
            }
        }
        counted.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        counted
    }
}

/// One system's figures (polis's or Norgopolis's); RSS in KiB.
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) warm: Outcome<Samples>,
    /// Warm calls with the client, router and module all on CPU 0.
    pub(crate) warm_one_cpu: Outcome<Samples>,
    pub(crate) throughput: Outcome<Throughput>,
    pub(crate) cold: Outcome<Cold>,
    pub(crate) rss_idle: Outcome<u64>,
    pub(crate) rss_load: Outcome<u64>,
    /// Throughput with `CALLERS_MANY` callers.
    pub(crate) throughput_many: Outcome<Throughput>,
    /// The router over the warm calls.
    pub(crate) warm_profile: Outcome<Profile>,
    /// The router under the `CALLERS`-caller throughput load.
    pub(crate) load_profile: Outcome<Profile>,
}

impl System {
    /// Every row missing, for the same reason.
    pub(crate) fn missing(reason: &str) -> Self {
        let r = reason.to_owned();
        Self {
            warm: Err(r.clone()),
            warm_one_cpu: Err(r.clone()),
            throughput: Err(r.clone()),
            cold: Err(r.clone()),
            rss_idle: Err(r.clone()),
            rss_load: Err(r.clone()),
            throughput_many: Err(r.clone()),
            warm_profile: Err(r.clone()),
            load_profile: Err(r),
        }
    }
}

/// What the router (norgopolis-server) spent on a run of calls: CPU time
/// and context switches over `calls` calls, and the syscalls strace counted
/// over a second, separate run of `traced_calls` calls (strace slows every
/// syscall, so the two are never taken together).
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) calls: u64,
    pub(crate) usage: crate::procs::Usage,
    pub(crate) traced_calls: u64,
    pub(crate) syscalls: Outcome<crate::procs::Syscalls>,
}

impl Profile {
    pub(crate) fn cpu_us(&self) -> f64 {
        self.usage.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    pub(crate) fn ctx_switches(&self) -> f64 {
        self.usage.ctx_switches as f64 / self.calls.max(1) as f64
    }

    /// `count(syscalls)` per traced call.
    pub(crate) fn per_call(&self, count: impl Fn(&crate::procs::Syscalls) -> u64) -> Outcome<f64> {
        self.syscalls
            .as_ref()
            .map(|s| count(s) as f64 / self.traced_calls.max(1) as f64)
            .map_err(Clone::clone)
    }
}
