//! Processes seen through `/proc`: which are running, which belong to a
//! mesh, who holds the router's lock, how much memory one uses; and killing
//! exactly those pids (never by name).

use std::path::Path;

/// Whether `pid` is a running process: it exists and is neither a zombie
/// nor dead.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may
    // itself contain parentheses: it is the first field after the last one.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z" && s != "X" && s != "x")
}

/// Running processes, other than this one, for which `matches(/proc/<pid>)`
/// holds.
pub fn processes_where(matches: impl Fn(&Path) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid != std::process::id() && matches(&entry.path()) && is_running(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the NUL-separated list `bytes` (a `cmdline` or an `environ`) has
/// the item `item`.
fn has_item(bytes: &[u8], item: &str) -> bool {
    bytes.split(|b| *b == 0).any(|part| part == item.as_bytes())
}

/// Processes of the mesh at `dir`: `polis` processes named with it
/// (`--mesh-dir <dir>`) and modules given it in `POLIS_MESH_DIR`.
pub fn mesh_processes(dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    let env_line = format!("POLIS_MESH_DIR={dir}");
    processes_where(|proc_dir| {
        let read = |f: &str| std::fs::read(proc_dir.join(f)).unwrap_or_default();
        has_item(&read("cmdline"), &dir) || has_item(&read("environ"), &env_line)
    })
}

/// Processes whose environment has `name=value`: with `HOME` and a
/// [`TestMesh`](crate::TestMesh)'s home, every process it started and their
/// children, whatever mesh they use.
pub fn processes_with_env(name: &str, value: &Path) -> Vec<u32> {
    let line = format!("{name}={}", value.display());
    processes_where(|proc_dir| has_item(&std::fs::read(proc_dir.join("environ")).unwrap_or_default(), &line))
}

/// How many live processes hold the `router.lock` of the mesh at `dir`, from
/// the kernel's lock table, taken in one `read` (several reads could tear
/// across a change and show a holder and its successor together). Blocked
/// waiters (`->`) and processes that have exited do not count.
pub fn routers_in_office(dir: &Path) -> usize {
    use std::{io::Read, os::unix::fs::MetadataExt};
    let Ok(meta) = std::fs::metadata(dir.join("router.lock")) else { return 0 };
    let inode = format!(":{} ", meta.ino());
    let mut buf = vec![0; 1 << 20];
    let Ok(n) = std::fs::File::open("/proc/locks").and_then(|mut f| f.read(&mut buf)) else { return 0 };
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->") && l.contains(&inode))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .filter(|pid| is_running(*pid))
        .count()
}

/// The resident set of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends SIGKILL to `pid`, if it is still there.
pub fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_uses_memory() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
        let kib = rss_kib(std::process::id()).expect("VmRSS of this process");
        assert!(kib > 100, "{kib} KiB");
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = crate::command("true").spawn().expect("run true");
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        crate::wait_until(crate::WAIT, Path::new("/nonexistent"), "true to exit", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?.contains(") Z").then_some(())
        });
        assert!(!is_running(pid), "a zombie");
        child.wait().expect("reap");
        assert!(!is_running(pid), "gone");
    }
}
