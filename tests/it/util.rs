//! Helpers for tests that run the real `polis` binary against a temp mesh.
//!
//! Every wait has a deadline; on failure a helper panics with the command,
//! its exit status, stdout, stderr, and a listing of the mesh directory.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use polis_discovery::{Discovery, MeshDir, NodeRecord};

pub(crate) const POLIS: &str = env!("CARGO_BIN_EXE_polis");

static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) const ECHO: &str = env!("CARGO_BIN_EXE_polis-echo");
pub(crate) const COUNTER: &str = env!("CARGO_BIN_EXE_polis-counter");

/// A temp mesh directory and a modules directory beside it. On drop, every
/// process of the mesh still running is killed (and the test fails if the
/// router was left running), then everything is removed.
pub(crate) struct Mesh {
    // Short: socket paths must stay under 108 bytes.
    tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) modules: PathBuf,
}

impl Mesh {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::Builder::new().prefix("pt").tempdir_in("/tmp").expect("temp dir");
        let dir = tmp.path().join("m");
        let modules = tmp.path().join("mods");
        std::fs::create_dir(&modules).expect("modules dir");
        Self { tmp, dir, modules }
    }

    /// The temp root holding the mesh and modules directories.
    pub(crate) fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A `polis` command aimed at this mesh and its modules.
    pub(crate) fn polis(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(POLIS);
        cmd.arg("--mesh-dir").arg(&self.dir).arg("--modules-path").arg(&self.modules).args(args);
        cmd.env_remove("POLIS_MESH_DIR").env_remove("POLIS_MODULES_PATH");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Writes `<modules>/<name>/module.toml` with `body` after the name and version.
    pub(crate) fn manifest(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.modules.join(name);
        std::fs::create_dir_all(&dir).expect("module dir");
        let path = dir.join("module.toml");
        std::fs::write(&path, format!("name = \"{name}\"\nversion = \"0.1.0\"\n{body}\n")).expect("manifest");
        path
    }

    /// A module `name` served by a binary of this package (`ECHO`, `COUNTER`).
    pub(crate) fn module(&self, name: &str, exec: &str, extra: &str) {
        self.manifest(name, &format!("exec = {exec:?}\nprotocol = \"frames\"\n{extra}"));
    }

    /// A module `name` run by an executable script with `body`.
    pub(crate) fn script_module(&self, name: &str, protocol: &str, body: &str, extra: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.manifest(name, &format!("exec = \"run\"\nprotocol = {protocol:?}\n{extra}"));
        let exec = path.with_file_name("run");
        std::fs::write(&exec, body).expect("script");
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Pids of every process of this mesh: routers (named by `--mesh-dir`)
    /// and modules (given `POLIS_MESH_DIR`).
    pub(crate) fn processes(&self) -> Vec<u32> {
        polis_node::testing::mesh_processes(&self.dir)
    }

    /// Waits until no process of the mesh is left.
    pub(crate) fn wait_no_processes(&self, timeout: Duration) {
        wait_until(timeout, &self.dir, "every process of the mesh to exit", || {
            self.processes().is_empty().then_some(())
        });
    }

    /// Runs `polis ARGS` to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.polis(args);
        let output = output_within(&mut cmd, RUN_WAIT);
        Run { cmd: format!("{cmd:?}"), output, mesh: self.dir.clone() }
    }

    /// Starts `polis ARGS` in the background, killed on drop. Its stderr
    /// goes to a file under the temp root (a pipe nobody reads could fill up
    /// and block it), shown in failure listings.
    pub(crate) fn spawn(&self, args: &[&str]) -> Proc {
        let mut cmd = self.polis(args);
        let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path = self.tmp.path().join(format!("spawn-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn polis");
        let lines = forward_lines(child.stdout.take().expect("piped stdout"));
        Proc {
            cmd: format!("{cmd:?}"),
            child: Some(child),
            lines,
            mesh: self.dir.clone(),
            stderr: stderr_path,
        }
    }

    /// The mesh as a library reader sees it.
    pub(crate) fn open(&self) -> MeshDir {
        MeshDir::open(&self.dir).expect("open mesh")
    }

    /// The live router's record.
    pub(crate) fn router(&self) -> Option<NodeRecord> {
        self.open().current_router().expect("read router")
    }

    /// Waits until a router is published, and returns its record.
    pub(crate) fn wait_router(&self, timeout: Duration) -> NodeRecord {
        wait_until(timeout, &self.dir, "a router to publish router.json", || self.router())
    }
}

/// Polls `check` until it gives a value (every 200 µs: fine-grained enough
/// to time a failover), or panics with a listing after `timeout`.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    mesh: &Path,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", listing(mesh));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for pid in self.processes() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// How long one `polis` command may take.
const RUN_WAIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to its end with no stdin, collecting its output; kills it and
/// fails the test, showing what it wrote, if it is not done by `timeout`.
pub(crate) fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.expect("wait for the command"),
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let partial = rx.recv().ok().and_then(Result::ok);
            let text = |f: fn(&Output) -> &Vec<u8>| {
                partial.as_ref().map(|o| String::from_utf8_lossy(f(o)).into_owned())
            };
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                text(|o| &o.stdout).unwrap_or_default(),
                text(|o| &o.stderr).unwrap_or_default()
            );
        }
    }
}

/// A finished command.
pub(crate) struct Run {
    cmd: String,
    pub(crate) output: Output,
    mesh: PathBuf,
}

impl Run {
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, and returns self for more checks.
    pub(crate) fn code(&self, want: i32) -> &Self {
        assert_eq!(self.output.status.code(), Some(want), "unexpected exit status\n{self}");
        self
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}\n{}",
            self.cmd,
            self.output.status,
            self.stdout(),
            self.stderr(),
            listing(&self.mesh)
        )
    }
}

/// A background process; killed and reaped on drop.
pub(crate) struct Proc {
    cmd: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    mesh: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The next stdout line, within `timeout`.
    pub(crate) fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(e) => {
                panic!("no stdout line within {timeout:?} ({e}) from {}\n{}", self.cmd, listing(&self.mesh))
            }
        }
    }

    /// Sends SIGKILL and reaps.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Sends a signal without waiting.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("signal");
    }

    /// Whether it has exited, without waiting.
    pub(crate) fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().expect("running").try_wait().expect("try_wait")
    }

    /// Waits for exit within `timeout`, and returns the status and stderr.
    pub(crate) fn wait(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mesh = self.mesh.clone();
        let what = format!("{} to exit", self.cmd);
        let status = wait_until(timeout, &mesh, &what, || self.try_exit());
        // try_exit has reaped it.
        self.child = None;
        (status, std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn forward_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A listing of the mesh directory, for failure messages.
pub(crate) fn listing(mesh: &Path) -> String {
    let mut out = format!("mesh directory {}:\n", mesh.display());
    let root = mesh.parent().map(Path::to_owned).unwrap_or_default();
    for sub in [mesh.to_owned(), mesh.join("nodes"), mesh.join("logs"), root] {
        let Ok(entries) = std::fs::read_dir(&sub) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let content = if path.extension().is_some_and(|x| x == "json" || x == "lock") {
                std::fs::read_to_string(&path).unwrap_or_default()
            } else if path.extension().is_some_and(|x| x == "log") {
                // The tail of each log: what the router or module said last.
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("\n    | {}", lines[lines.len().saturating_sub(15)..].join("\n    | "))
            } else {
                String::new()
            };
            out += &format!("  {} {}\n", path.display(), content.trim());
        }
    }
    out
}
