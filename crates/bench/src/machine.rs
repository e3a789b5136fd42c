//! The machine the run happens on: what it is, and how busy it is. Other
//! work on the machine moves every figure, so the bench waits for a quiet
//! machine before measuring, and the report says how quiet it was.

use std::time::{Duration, Instant};

use crate::progress;

/// How busy the machine may be (all cores, other work) when measuring begins.
const QUIET: f64 = 0.15;
/// How long to wait for that.
const QUIET_WAIT: Duration = Duration::from_secs(300);

/// Where and when the run happened.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
    pub(crate) date: String,
    pub(crate) polis_rev: String,
    pub(crate) rustc: String,
    /// How busy the machine was before and after measuring.
    pub(crate) load: String,
}

impl Machine {
    /// The machine now; `before` is [`wait_quiet`]'s finding.
    pub(crate) fn here(before: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |line: &str| line.split_once(':').map(|(_, v)| v.trim().to_owned());
        let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let cpu = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(field);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let rev = command("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = command("git", &["status", "--porcelain", "--untracked-files=no"]);
        Self {
            cores: cores.max(1),
            cpu: cpu.unwrap_or_else(|| "unknown CPU".into()),
            kernel: format!("Linux {}", kernel.trim()),
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            polis_rev: if dirty.is_empty() || dirty == "unknown" {
                rev
            } else {
                format!("{rev} + local changes")
            },
            rustc: command("rustc", &["--version"]),
            load: format!("{before}; load average (1, 5, 15 min) {} at the end", loadavg()),
        }
    }
}

/// A command's trimmed stdout, run in the workspace, or `unknown`.
fn command(program: &str, args: &[&str]) -> String {
    polis_testing::command(program)
        .args(args)
        .current_dir(crate::setup::workspace())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15-minute load averages.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// (busy, total) jiffies of all CPUs, from the first line of `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// The share of all CPUs busy over the next second.
fn busy_share() -> Option<f64> {
    let (b0, t0) = cpu_jiffies()?;
    std::thread::sleep(Duration::from_secs(1));
    let (b1, t1) = cpu_jiffies()?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// Waits (at most a few minutes) until the machine is quiet, and says how
/// busy it was when measuring began, for the report.
pub(crate) fn wait_quiet() -> String {
    let deadline = Instant::now() + QUIET_WAIT;
    let mut said = false;
    loop {
        let Some(busy) = busy_share() else { return "CPU use unknown".into() };
        let percent = (busy * 100.0).round();
        if busy <= QUIET {
            return format!("{percent:.0} % of the CPUs busy with other work when measuring began");
        }
        if Instant::now() > deadline {
            progress(&format!("the machine is still {percent:.0} % busy; measuring anyway"));
            return format!("**{percent:.0} % of the CPUs busy with other work when measuring began**");
        }
        if !said {
            progress(&format!(
                "the machine is {percent:.0} % busy with other work; waiting up to {QUIET_WAIT:?} for it to calm"
            ));
            said = true;
        }
    }
}
