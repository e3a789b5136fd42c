//! Hosts in network namespaces, for tests of a mesh across machines that
//! need a network to fail: [`Netns`] is a namespace joined to the root one
//! by a veth pair on a /30 of its own (from 198.18.0.0/15, the range set
//! aside for network tests), so that taking the root side's link down
//! ([`Netns::cut`]) partitions it, and bringing it up heals it.
//!
//! Needs root and iproute2's `ip`; a test that cannot make one fails with a
//! message saying so (it never skips). Names and subnets are unique among
//! tests running at once, in one process or in many: a namespace's name is
//! its subnet's index, the first guess derived from the pid and a counter,
//! and `ip netns add` (which fails if the name exists) is the lock that
//! makes a subnet one test's.

use std::{
    ffi::OsStr,
    net::Ipv4Addr,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// How many /30 subnets 198.18.0.0/15 holds.
const SUBNETS: u32 = 1 << 15;

/// Namespaces made by this process, for the first guess of the next index.
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair to the root namespace; on drop,
/// every process still in it is killed and the namespace deleted (with it
/// the veth pair).
#[derive(Debug)]
pub struct Netns {
    name: String,
    root_link: String,
    root_ip: Ipv4Addr,
    ip: Ipv4Addr,
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip<I, S>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = crate::command("ip");
    cmd.args(args).stdin(Stdio::null());
    let what = format!("{cmd:?}");
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{what}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("{what}: cannot run ip (is iproute2 installed?): {e}")),
    }
}

impl Netns {
    /// Makes a namespace and its veth pair, both ends up (and `lo` in the
    /// namespace). Panics, naming what failed, if it cannot: the tests that
    /// use it need root and iproute2.
    #[track_caller]
    pub fn create() -> Self {
        let first = std::process::id().wrapping_mul(16).wrapping_add(MADE.fetch_add(1, Ordering::Relaxed));
        let mut last_error = String::new();
        for attempt in 0..64 {
            let index = first.wrapping_add(attempt) % SUBNETS;
            let name = format!("pl{index}");
            if let Err(e) = ip(["netns", "add", &name]) {
                if e.contains("File exists") {
                    last_error = e;
                    continue;
                }
                panic!(
                    "cannot make a network namespace for a partition test (it needs root and iproute2): {e}"
                );
            }
            // From here on the subnet of `index` is this namespace's.
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 4 * index;
            let ns = Self {
                name,
                root_link: format!("plr{index}"),
                root_ip: Ipv4Addr::from(base + 1),
                ip: Ipv4Addr::from(base + 2),
            };
            match ns.link() {
                Ok(()) => return ns,
                // A namespace of a crashed test may still hold the veth
                // name until its processes die: try the next index.
                Err(e) if e.contains("File exists") => last_error = e,
                Err(e) => panic!("cannot set up the network namespace {}: {e}", ns.name),
            }
        }
        panic!("no free network namespace name after 64 tries; last: {last_error}")
    }

    fn link(&self) -> Result<(), String> {
        let inner = format!("pln{}", &self.root_link[3..]);
        let (root_ip, ip_addr) = (format!("{}/30", self.root_ip), format!("{}/30", self.ip));
        ip(["link", "add", &self.root_link, "type", "veth", "peer", "name", &inner, "netns", &self.name])?;
        ip(["addr", "add", &root_ip, "dev", &self.root_link])?;
        ip(["link", "set", &self.root_link, "up"])?;
        ip(["-n", &self.name, "addr", "add", &ip_addr, "dev", &inner])?;
        ip(["-n", &self.name, "link", "set", &inner, "up"])?;
        ip(["-n", &self.name, "link", "set", "lo", "up"])
    }

    /// The namespace's name (`ip netns exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's own address, which the root namespace reaches it at.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The root side's address, which processes in the namespace reach the
    /// root namespace at (where etcd listens, say).
    pub fn root_ip(&self) -> Ipv4Addr {
        self.root_ip
    }

    /// `cmd` run in the namespace: `ip netns exec NAME PROGRAM ARGS…` with
    /// `cmd`'s environment and directory. `ip netns exec` execs the
    /// program, so the process's pid is the program's.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = crate::command("ip");
        wrapped.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped.stdin(Stdio::null());
        wrapped
    }

    /// Partitions the namespace: the root side of its link goes down.
    #[track_caller]
    pub fn cut(&self) {
        ip(["link", "set", &self.root_link, "down"])
            .unwrap_or_else(|e| panic!("partition {}: {e}", self.name));
    }

    /// Heals the partition: the root side of its link comes up again.
    #[track_caller]
    pub fn heal(&self) {
        ip(["link", "set", &self.root_link, "up"]).unwrap_or_else(|e| panic!("heal {}: {e}", self.name));
    }

    /// The processes in the namespace now.
    pub fn pids(&self) -> Vec<u32> {
        let mut cmd = crate::command("ip");
        cmd.args(["netns", "pids", &self.name]).stdin(Stdio::null());
        let Ok(out) = cmd.output() else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything started in it: routers, their modules, frontends.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                crate::procs::kill(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = ip(["netns", "del", &self.name]);
    }
}
