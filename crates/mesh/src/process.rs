//! The one way a polis process starts another: a [`Command`] with an
//! explicit working directory and nothing inherited by accident.
//!
//! This is mechanism, not policy: which program, which arguments, which
//! environment, where stdout and stderr go, and whether the child is killed
//! are the caller's decisions. What every child has in common is decided
//! here, once: a working directory the caller names (so a long-lived child
//! never pins whatever directory its parent happened to run in), and stdin
//! from `/dev/null` unless the caller pipes it (so no child ever reads its
//! parent's terminal).
//!
//! `clippy.toml` forbids `Command::new` everywhere else in the workspace, so
//! a second spawn site fails the lint instead of slipping in.

use std::{ffi::OsStr, path::Path, process::Stdio};

use tokio::process::Command;

/// Which process group a child runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Group {
    /// A group of its own (`process_group(0)`), so that a Ctrl-C meant for
    /// the parent's terminal does not reach the child: modules hear about
    /// shutdown from their router, as `Shutdown`.
    Own,
    /// The parent's group, for a program that leaves it by itself: a
    /// `polis router --detach` calls `setsid`, which a group leader may not.
    Parent,
}

/// A command for `program`, run in `cwd`, with stdin from `/dev/null`, in
/// the process group `group` (on Unix).
///
/// Callers choose stdin (to pipe it), stdout, stderr, the arguments and the
/// environment (inherited unless they say otherwise). The handle does not
/// kill the child when it drops (tokio's default), because some children
/// outlive their parent by design; callers that must reap set
/// `kill_on_drop` or wait for the child.
///
/// `program` is used as given: pass an absolute path or a bare name looked
/// up in `PATH`. A relative path with a slash is ambiguous once `cwd` is
/// not the parent's working directory.
///
/// ```
/// use polis_mesh::process::{self, Group};
/// let mut cmd = process::command("true", std::path::Path::new("/"), Group::Own);
/// cmd.arg("--ignored");
/// ```
pub fn command(program: impl AsRef<OsStr>, cwd: &Path, group: Group) -> Command {
    // The one allowed site: see this module's documentation.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    #[cfg(unix)]
    if group == Group::Own {
        cmd.process_group(0);
    }
    #[cfg(not(unix))]
    let _ = group;
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_child_runs_in_the_given_directory_with_null_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let out = command("sh", &dir, Group::Own)
            .args(["-c", "pwd; cat; echo end"])
            .stdout(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        // `cat` ends at once: its stdin is /dev/null, not the test's.
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\nend\n", dir.display()));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn own_group_leads_its_group_and_parent_does_not() {
        let pgid_of = |group| async move {
            // `ps -o pgid= -p $$` prints the shell's group; compare with its pid.
            let out = command("sh", Path::new("/"), group)
                .args(["-c", "echo $$ $(ps -o pgid= -p $$)"])
                .stdout(Stdio::piped())
                .output()
                .await
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let mut words = text.split_whitespace();
            (words.next().unwrap().to_owned(), words.next().unwrap().to_owned())
        };
        let (pid, pgid) = pgid_of(Group::Own).await;
        assert_eq!(pid, pgid);
        let (pid, pgid) = pgid_of(Group::Parent).await;
        assert_ne!(pid, pgid);
    }
}
