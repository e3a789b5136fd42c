//! A harness for tests with several routers, for polis itself and for
//! module authors (feature `testing`).
//!
//! [`TestMesh`] is a fresh mesh directory in a temp dir. It starts real
//! `polis` processes (routers, standbys, frontends) and module processes,
//! kills them for real, and checks the mesh's invariants:
//! - at most one process holds `router.lock` at any instant
//!   ([`TestMesh::routers_in_office`], read from the kernel's lock table);
//! - every live process's published record has its lock held
//!   ([`TestMesh::check_records`]);
//! - no process of the mesh is left at teardown ([`TestMesh::teardown`]).
//!
//! ```no_run
//! use polis_node::testing::TestMesh;
//! use std::time::Duration;
//!
//! let mesh = TestMesh::new("target/debug/polis").unwrap();
//! mesh.module("mymod", "target/debug/my-module", "");
//! let mut router = mesh.start_router(&[]);
//! let _standby = mesh.start_standby();
//! let mut nvim = mesh.start_frontend("nvim");
//! assert_eq!(nvim.call("mymod ping"), "\"pong\"");
//! router.kill();                                  // the standby takes over
//! assert_eq!(nvim.call("mymod ping"), "\"pong\""); // state and all
//! assert!(mesh.routers_in_office() <= 1);
//! mesh.check_records().unwrap();
//! mesh.teardown(Duration::from_secs(10)).unwrap();
//! ```

// FIXME(issue 9): temporary, until this harness gets its own allowed spawn
// site; polis_mesh::process::command is the only one (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use polis_discovery::{Discovery, MeshDir, NodeRecord};

/// How long a harness step waits for a process to answer.
const STEP: Duration = Duration::from_secs(20);

/// A temp mesh directory with a modules directory beside it.
#[derive(Debug)]
pub struct TestMesh {
    tmp: tempfile::TempDir,
    polis: PathBuf,
    /// The mesh directory.
    pub dir: PathBuf,
    /// The modules directory (`--modules-path`).
    pub modules: PathBuf,
}

impl TestMesh {
    /// A fresh mesh run with the `polis` executable at `polis`. The temp dir
    /// is under `/tmp` with a short name: socket paths must stay under 108 bytes.
    pub fn new(polis: impl Into<PathBuf>) -> std::io::Result<Self> {
        let tmp = tempfile::Builder::new().prefix("pm").tempdir_in(std::env::temp_dir())?;
        let (dir, modules) = (tmp.path().join("m"), tmp.path().join("mods"));
        std::fs::create_dir(&modules)?;
        Ok(Self { tmp, polis: polis.into(), dir, modules })
    }

    /// The temp root holding the mesh and modules directories.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes `<modules>/<name>/module.toml` for the `frames` module `exec`,
    /// with `extra` TOML lines appended.
    pub fn module(&self, name: &str, exec: impl AsRef<Path>, extra: &str) -> PathBuf {
        let dir = self.modules.join(name);
        std::fs::create_dir_all(&dir).expect("create the module's directory");
        let path = dir.join("module.toml");
        let exec = exec.as_ref().display().to_string();
        let toml = format!(
            "name = {name:?}\nversion = \"0.1.0\"\nexec = {exec:?}\nprotocol = \"frames\"\n{extra}\n"
        );
        std::fs::write(&path, toml).expect("write the manifest");
        path
    }

    /// A `polis` command aimed at this mesh and its modules.
    pub fn polis(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.polis);
        cmd.arg("--mesh-dir").arg(&self.dir).arg("--modules-path").arg(&self.modules).args(args);
        cmd.env_remove("POLIS_MESH_DIR").env_remove("POLIS_MODULES_PATH").stdin(Stdio::null());
        cmd
    }

    /// Starts `polis router ARGS` and waits until it is published.
    pub fn start_router(&self, args: &[&str]) -> TestNode {
        let node = self.spawn(&[&["router"], args].concat());
        let pid = node.pid();
        self.wait_for("the router to take office", || self.router().filter(|r| r.pid == pid));
        node
    }

    /// Starts `polis router --standby` and waits until it stands by.
    pub fn start_standby(&self) -> TestNode {
        let mut node = self.spawn(&["router", "--standby"]);
        let line = node.line();
        assert!(line.starts_with("standing by"), "a standby says so: {line:?}");
        node
    }

    /// Starts `polis attach` (a frontend holding a session); calls go
    /// through [`TestNode::call`].
    pub fn start_frontend(&self, name: &str) -> TestNode {
        let mut cmd = self.polis(&["attach", "--name", name]);
        cmd.stdin(Stdio::piped());
        let mut node = TestNode::start(cmd, self.log_path(name));
        let line = node.line();
        assert!(line.starts_with("attached: "), "a frontend says so: {line:?}");
        node
    }

    /// Starts a module program by hand, loading itself into the mesh
    /// (`Module::attach`, given the mesh directory as `args` require).
    pub fn start_module(&self, mut cmd: Command) -> TestNode {
        cmd.env("POLIS_MESH_DIR", &self.dir).stdin(Stdio::null());
        TestNode::start(cmd, self.log_path("module"))
    }

    fn spawn(&self, args: &[&str]) -> TestNode {
        TestNode::start(self.polis(args), self.log_path(args[0]))
    }

    fn log_path(&self, what: &str) -> PathBuf {
        let n = std::fs::read_dir(self.root()).map_or(0, Iterator::count);
        self.root().join(format!("{what}-{n}.log"))
    }

    /// The live router's record.
    pub fn router(&self) -> Option<NodeRecord> {
        MeshDir::open(&self.dir).ok()?.current_router().ok()?
    }

    /// Polls `check` until it gives a value, or panics after 20 s.
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} in {}", self.dir.display());
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// How many live processes hold `router.lock` now: never more than one.
    pub fn routers_in_office(&self) -> usize {
        routers_in_office(&self.dir)
    }

    /// Checks that every record published by a live process has its lock held.
    pub fn check_records(&self) -> Result<(), String> {
        let mesh = MeshDir::open(&self.dir).map_err(|e| e.to_string())?;
        let entries = std::fs::read_dir(mesh.nodes_dir()).map_err(|e| e.to_string())?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(record) = NodeRecord::parse(&std::fs::read(&path).unwrap_or_default()) else { continue };
            if is_running(record.pid) && !mesh.is_live(&record.id).map_err(|e| e.to_string())? {
                return Err(format!("{} (pid {} is running) has no lock held", path.display(), record.pid));
            }
        }
        Ok(())
    }

    /// Pids of every running process of this mesh: `polis` processes named
    /// with its directory, and modules given it in `POLIS_MESH_DIR`.
    pub fn processes(&self) -> Vec<u32> {
        mesh_processes(&self.dir)
    }

    /// Stops the router (if any) and checks that no process of the mesh is
    /// left within `timeout`. Leftovers are killed, and named in the error.
    pub fn teardown(&self, timeout: Duration) -> Result<(), String> {
        if self.router().is_some() {
            let _ = self.polis(&["stop"]).output();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.processes().is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let orphans = self.processes();
        for pid in &orphans {
            kill(*pid);
        }
        Err(format!("orphan processes of the mesh at teardown: {orphans:?}"))
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for pid in self.processes() {
            kill(pid);
        }
    }
}

/// A process started by a [`TestMesh`]: killed and reaped on drop.
#[derive(Debug)]
pub struct TestNode {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl TestNode {
    fn start(mut cmd: Command, log: PathBuf) -> Self {
        let stderr = std::fs::File::create(&log).expect("create a log file");
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("start a process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child: Some(child), stdin, lines, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The next line on its stdout, within 20 s.
    pub fn line(&mut self) -> String {
        self.lines.recv_timeout(STEP).unwrap_or_else(|e| panic!("no output ({e}); stderr: {}", self.stderr()))
    }

    /// For a frontend: sends `SERVICE METHOD [JSON]`, returns the answer line.
    pub fn call(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("a frontend's stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write a call");
        self.line()
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Closes its stdin (a frontend says goodbye) and waits for it to exit.
    pub fn quit(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.take().expect("running").wait().expect("wait")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many live processes hold the `router.lock` of the mesh at `dir`, from
/// the kernel's lock table, taken in one `read` (several reads could tear
/// across a change and show a holder and its successor together). Blocked
/// waiters (`->`) and processes that have exited do not count.
pub fn routers_in_office(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
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

/// Pids of the running processes of the mesh at `dir`.
pub fn mesh_processes(dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    let env_line = format!("POLIS_MESH_DIR={dir}");
    let has = |bytes: &[u8], needle: &str| bytes.split(|b| *b == 0).any(|part| part == needle.as_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_running(*pid))
        .filter(|pid| {
            let read = |f: &str| std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
            has(&read("cmdline"), &dir) || has(&read("environ"), &env_line)
        })
        .collect()
}

/// Whether `pid` is a running process (not gone, not a zombie).
pub fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
