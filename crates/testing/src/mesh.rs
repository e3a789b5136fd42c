//! The temp mesh: its directories, the hermetic environment of every
//! process it starts, its manifests, and the mesh's invariants.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use polis_discovery::{Discovery, MeshDir, NodeRecord};

use crate::{Process, Run, WAIT, procs, wait::wait_until};

/// How long one `polis` command may take to finish.
const RUN_WAIT: Duration = Duration::from_secs(60);

/// A fresh temp root holding a mesh directory (`m`), a modules directory
/// (`mods`), a home (`home`, with the XDG directories under it) and a
/// runtime directory (`run`). On drop, every process of the mesh and every
/// process started with its home is killed, then everything is removed.
#[derive(Debug)]
pub struct TestMesh {
    tmp: tempfile::TempDir,
    polis: PathBuf,
    /// The mesh directory (`--mesh-dir`).
    pub dir: PathBuf,
    /// The modules directory (`--modules-path`).
    pub modules: PathBuf,
    /// Numbers the log files of the processes started.
    started: AtomicUsize,
}

impl TestMesh {
    /// A fresh mesh run with the `polis` executable at `polis`. The temp
    /// root is under `/tmp` with a short name: socket paths must stay under
    /// 108 bytes.
    pub fn new(polis: impl Into<PathBuf>) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let tmp = tempfile::Builder::new().prefix("pt").tempdir_in("/tmp")?;
        let root = tmp.path();
        std::fs::create_dir(root.join("mods"))?;
        for xdg in [".config", ".local/share", ".local/state", ".cache"] {
            std::fs::create_dir_all(root.join("home").join(xdg))?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(root.join("run"))?;
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir: root.join("m"),
            modules: root.join("mods"),
            polis: polis.into(),
            tmp,
            started: AtomicUsize::new(0),
        })
    }

    /// The temp root holding the mesh, modules, home and runtime directories.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The `HOME` of every process started here.
    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    /// The `XDG_RUNTIME_DIR` of every process started here (mode 0700).
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("run")
    }

    /// A hermetic command for `program`: `HOME`, `XDG_CONFIG_HOME`,
    /// `XDG_DATA_HOME`, `XDG_STATE_HOME`, `XDG_CACHE_HOME` under
    /// [`TestMesh::home`], `XDG_RUNTIME_DIR` at [`TestMesh::runtime_dir`], no
    /// `POLIS_*` variable of the outer environment (set one on the command
    /// to give it), no stdin. Every process a test starts comes from here.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = crate::command(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("POLIS_") {
                cmd.env_remove(name);
            }
        }
        // Not a systemd unit's process, whatever runs the tests.
        cmd.env_remove("INVOCATION_ID");
        let home = self.home();
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// A hermetic `polis --mesh-dir <dir> --modules-path <modules> ARGS`.
    pub fn polis(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(&self.polis);
        cmd.arg("--mesh-dir").arg(&self.dir).arg("--modules-path").arg(&self.modules).args(args);
        cmd
    }

    /// Writes `<modules>/<name>/module.toml` with `body` after the name and
    /// version, and returns its path.
    pub fn manifest(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.modules.join(name);
        std::fs::create_dir_all(&dir).expect("create the module's directory");
        let path = dir.join("module.toml");
        std::fs::write(&path, format!("name = {name:?}\nversion = \"0.1.0\"\n{body}\n"))
            .expect("write the manifest");
        path
    }

    /// A `frames` module `name` run by the executable `exec`, with `extra`
    /// TOML lines.
    pub fn module(&self, name: &str, exec: impl AsRef<Path>, extra: &str) -> PathBuf {
        let exec = exec.as_ref().display().to_string();
        self.manifest(name, &format!("exec = {exec:?}\nprotocol = \"frames\"\n{extra}"))
    }

    /// A module `name` speaking `protocol`, run by an executable script
    /// `run` in its directory with the text `body`.
    pub fn script_module(&self, name: &str, protocol: &str, body: &str, extra: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.manifest(name, &format!("exec = \"run\"\nprotocol = {protocol:?}\n{extra}"));
        let exec = path.with_file_name("run");
        std::fs::write(&exec, body).expect("write the script");
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).expect("chmod the script");
        path
    }

    /// Runs `polis ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.polis(args))
    }

    /// Runs `cmd` (from [`TestMesh::command`]) to its end, within a minute.
    pub fn run_command(&self, cmd: Command) -> Run {
        Run::within(cmd, RUN_WAIT, Some(&self.dir))
    }

    /// Starts `cmd` (from [`TestMesh::command`]) in the background, its
    /// stderr in a log file of the temp root (shown in failure listings).
    pub fn start(&self, cmd: Command) -> Process {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let program = Path::new(cmd.get_program()).file_name().unwrap_or_default().to_string_lossy();
        let log = self.root().join(format!("{program}-{n}.log"));
        Process::start(cmd, log, self.dir.clone())
    }

    /// Starts `polis ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Process {
        self.start(self.polis(args))
    }

    /// Starts `polis router ARGS` and waits until it is published.
    pub fn start_router(&self, args: &[&str]) -> Process {
        let node = self.spawn(&[&["router"], args].concat());
        let pid = node.pid();
        self.wait_for("the router to take office", || self.router().filter(|r| r.pid == pid));
        node
    }

    /// Starts `polis router --standby ARGS` and waits until it stands by.
    pub fn start_standby(&self, args: &[&str]) -> Process {
        let mut node = self.spawn(&[&["router", "--standby"], args].concat());
        let line = node.line();
        assert!(line.starts_with("standing by"), "a standby says so: {line:?}\n{}", node.describe());
        node
    }

    /// Starts `polis watch PATTERN` (with a router already running) and
    /// waits until it has subscribed; read what it sees with
    /// [`Process::event`]. Events published before this returns are not
    /// seen.
    pub fn watch(&self, pattern: &str) -> Process {
        let watcher = self.spawn(&["watch", pattern, "--no-launch"]);
        self.wait_for("polis watch to subscribe", || watcher.stderr().contains("watching").then_some(()));
        watcher
    }

    /// Starts `polis attach --name NAME`, a frontend holding a session, and
    /// waits until it is attached; calls go through [`Process::call`].
    pub fn start_frontend(&self, name: &str) -> Process {
        self.frontend(self.polis(&["attach", "--name", name]))
    }

    /// Starts `cmd`, a `polis attach` with its own options, stdin piped, and
    /// waits until it is attached.
    pub fn frontend(&self, mut cmd: Command) -> Process {
        cmd.stdin(Stdio::piped());
        let mut node = self.start(cmd);
        // `attached: …` is a status line on stderr: stdout carries answers only.
        let deadline = Instant::now() + WAIT;
        while !node.stderr().lines().any(|l| l.starts_with("attached: ")) {
            if node.try_exit().is_some() || Instant::now() > deadline {
                panic!("a frontend says `attached: ` on stderr\n{}", node.describe());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        node
    }

    /// Starts a module program by hand, loading itself into the mesh
    /// (`Module::attach`): `cmd` gets the mesh directory in `POLIS_MESH_DIR`.
    pub fn start_module(&self, mut cmd: Command) -> Process {
        cmd.env("POLIS_MESH_DIR", &self.dir);
        self.start(cmd)
    }

    /// The mesh as a library reader sees it.
    pub fn open(&self) -> MeshDir {
        MeshDir::open(&self.dir)
            .unwrap_or_else(|e| panic!("cannot open the mesh: {e}\n{}", crate::listing(&self.dir)))
    }

    /// The live router's record, if one is published.
    pub fn router(&self) -> Option<NodeRecord> {
        MeshDir::open(&self.dir).ok()?.current_router().ok()?
    }

    /// Waits within [`WAIT`] until a router is published, and returns its record.
    pub fn wait_router(&self) -> NodeRecord {
        self.wait_for("a router to publish router.json", || self.router())
    }

    /// Polls `check` until it gives a value, or panics after [`WAIT`] with
    /// a listing of the mesh.
    pub fn wait_for<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_until(WAIT, &self.dir, what, check)
    }

    /// How many live processes hold `router.lock` now: never more than one.
    pub fn routers_in_office(&self) -> usize {
        procs::routers_in_office(&self.dir)
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
            if procs::is_running(record.pid) && !mesh.is_live(&record.id).map_err(|e| e.to_string())? {
                return Err(format!("{} (pid {} is running) has no lock held", path.display(), record.pid));
            }
        }
        Ok(())
    }

    /// Pids of every running process of this mesh: `polis` processes named
    /// with its directory, and modules given it in `POLIS_MESH_DIR`.
    pub fn processes(&self) -> Vec<u32> {
        procs::mesh_processes(&self.dir)
    }

    /// Waits within [`WAIT`] until no process of the mesh is left.
    pub fn wait_no_processes(&self) {
        self.wait_for("every process of the mesh to exit", || self.processes().is_empty().then_some(()));
    }

    /// Stops the router (if any) and checks that no process of the mesh is
    /// left within `timeout`. Leftovers are killed, and named in the error.
    pub fn teardown(&self, timeout: Duration) -> Result<(), String> {
        if self.router().is_some() {
            let _ = self.run_command(self.polis(&["stop"]));
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.processes().is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let orphans = self.processes();
        orphans.iter().copied().for_each(procs::kill);
        Err(format!("orphan processes of the mesh at teardown: {orphans:?}"))
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        // The mesh's own, and whatever else a test started with this home
        // (an editor, a script), children included.
        for pid in self.processes().into_iter().chain(procs::processes_with_env("HOME", &self.home())) {
            procs::kill(pid);
        }
    }
}
