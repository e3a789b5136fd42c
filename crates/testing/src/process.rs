//! A process running in the background: its stdout as lines, its stdin for
//! calls, its stderr in a log file; killed and reaped on drop.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::{WAIT, wait::listing};

/// A background process: killed with SIGKILL and reaped on drop. Every wait
/// on it that fails panics with its command, status, stdout, stderr and the
/// mesh's listing.
#[derive(Debug)]
pub struct Process {
    cmd: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The lines taken so far, for failure messages.
    seen: Vec<String>,
    stderr: PathBuf,
    mesh: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout piped (read on a thread, line by line) and
    /// stderr into the file `stderr` (a pipe nobody reads could fill up and
    /// block it). Its stdin is what `cmd` says: pipe it for [`Process::call`].
    pub(crate) fn start(mut cmd: Command, stderr: PathBuf, mesh: PathBuf) -> Self {
        let log =
            std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("create {}: {e}", stderr.display()));
        cmd.stdout(Stdio::piped()).stderr(log);
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
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
        Self { cmd: what, pid: child.id(), child: Some(child), stdin, lines, seen: Vec::new(), stderr, mesh }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line on its stdout, within [`WAIT`].
    #[track_caller]
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => panic!("no stdout line within {WAIT:?} ({e})\n{}", self.describe()),
        }
    }

    /// Writes `line` on its stdin.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("no stdin to write to: {}", self.cmd));
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!("cannot write {line:?} ({e})\n{}", self.describe());
        }
    }

    /// For a frontend (`polis attach`): sends `SERVICE METHOD [JSON]` and
    /// returns the answer line.
    #[track_caller]
    pub fn call(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// For a watcher ([`TestMesh::watch`](crate::TestMesh::watch)): the
    /// next event it printed, as its topic and value.
    #[track_caller]
    pub fn event(&mut self) -> (String, serde_json::Value) {
        let line = self.line();
        let mut event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("an event line is JSON ({e}): {line:?}\n{}", self.describe()));
        match (event["topic"].take(), event["value"].take()) {
            (serde_json::Value::String(topic), value) => (topic, value),
            _ => panic!("an event line has a topic: {line:?}\n{}", self.describe()),
        }
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` without waiting (never to a pid that may be reused:
    /// it must not have been seen to exit).
    #[track_caller]
    pub fn signal(&mut self, signal: rustix::process::Signal) {
        assert!(self.child.is_some() && self.try_exit().is_none(), "{} has exited already", self.cmd);
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).unwrap_or_else(|e| panic!("signal {}: {e}", self.cmd));
    }

    /// Kills it with SIGKILL and reaps it; nothing if it is reaped already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it has exited (and is now reaped), without waiting; once it
    /// has, its status every time. `None` once killed.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap_or_else(|e| panic!("try_wait {}: {e}", self.cmd))
    }

    /// Waits within `timeout` for it to exit by itself, and returns its
    /// status and stderr.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        assert!(self.child.is_some(), "{} has been killed already", self.cmd);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return (status, self.stderr());
            }
            if std::time::Instant::now() > deadline {
                let (cmd, describe) = (self.cmd.clone(), self.describe());
                panic!("{cmd} did not exit within {timeout:?}\n{describe}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Closes its stdin (a frontend says goodbye), and waits within [`WAIT`]
    /// for it to exit.
    #[track_caller]
    pub fn quit(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.wait(WAIT).0
    }

    /// Everything there is to know when something went wrong: the command,
    /// its status, its stdout (taken and pending), its stderr and the mesh.
    pub fn describe(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        let status = match self.child.as_mut().map(Child::try_wait) {
            None => "killed".to_owned(),
            Some(Ok(None)) => "running".to_owned(),
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("unknown ({e})"),
        };
        format!(
            "command: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}\n{}",
            self.cmd,
            self.seen.join("\n"),
            self.stderr(),
            listing(&self.mesh)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
