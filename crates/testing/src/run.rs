//! A command run to its end: its exit status and output, shown in full
//! (with the mesh directory's listing) by every assertion that fails.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::wait::listing;

/// A finished command.
#[derive(Debug)]
pub struct Run {
    cmd: String,
    /// What it exited with and wrote.
    pub output: Output,
    mesh: Option<PathBuf>,
}

impl Run {
    /// Runs `cmd` to its end with no stdin, its stdout and stderr captured.
    /// If it is not done within `timeout` it is killed and the test fails,
    /// showing what it wrote; `mesh`, when given, is listed on failure.
    pub fn within(mut cmd: Command, timeout: Duration, mesh: Option<&Path>) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(timeout) {
            Ok(output) => output.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}")),
            Err(_) => {
                crate::procs::kill(pid);
                // Reaped by the thread, with what it wrote until then.
                let output = rx.recv().ok().and_then(Result::ok);
                let run = output.map(|output| Self { cmd: what.clone(), output, mesh: mesh.map(Into::into) });
                let shown = run.map_or_else(|| "(no output)".to_owned(), |r| r.to_string());
                panic!("{what} did not finish within {timeout:?}; killed\n{shown}");
            }
        };
        Self { cmd: what, output, mesh: mesh.map(Into::into) }
    }

    /// Its exit status.
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }

    /// What it wrote on stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// What it wrote on stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, and returns self for more checks.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(self.output.status.code(), Some(want), "unexpected exit status\n{self}");
        self
    }

    /// Its stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }

    /// The one line it wrote on stderr.
    #[track_caller]
    pub fn error_line(&self) -> String {
        let stderr = self.stderr();
        let mut lines = stderr.lines();
        let line = lines.next().unwrap_or_else(|| panic!("nothing on stderr\n{self}")).to_owned();
        assert_eq!(lines.next(), None, "more than one line on stderr\n{self}");
        line
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
            self.mesh.as_deref().map(listing).unwrap_or_default()
        )
    }
}
