//! Where a manifest's `exec` points: the first of its candidates that
//! exists, relative to the manifest's directory, and a bare name (no `/`)
//! looked up on `PATH` when the directory has no such file, as systemd's
//! `ExecStart` does. Resolved once, when the manifest is loaded.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// `exec = "bin/x"` or `exec = ["../../target/debug/x", "../../target/release/x"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawExec {
    One(String),
    Candidates(Vec<String>),
}

impl RawExec {
    fn candidates(&self) -> &[String] {
        match self {
            RawExec::One(one) => std::slice::from_ref(one),
            RawExec::Candidates(many) => many,
        }
    }
}

/// The executable `exec` names, absolute. The first candidate that exists
/// wins and is checked (`check` says whether it may be run); if none
/// exists, the error names each one and where it was looked for.
pub(super) fn resolve(
    dir: &Path,
    exec: &RawExec,
    path_var: Option<&OsStr>,
    check: impl Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let candidates = exec.candidates();
    if candidates.is_empty() {
        return Err("exec is an empty list; name the program to run".into());
    }
    let mut tried = Vec::new();
    for candidate in candidates {
        if candidate.is_empty() {
            return Err("exec names an empty path".into());
        }
        let local = dir.join(candidate);
        if local.exists() {
            check(&local)?;
            return Ok(local);
        }
        if !candidate.contains('/') {
            if let Some(found) = on_path(candidate, path_var) {
                check(&found)?;
                return Ok(found);
            }
            tried.push(format!("{} (nor {candidate} on PATH)", local.display()));
        } else {
            tried.push(local.display().to_string());
        }
    }
    Err(format!(
        "exec {} cannot be used (No such file or directory); build it or fix the path",
        tried.join(", ")
    ))
}

/// The first executable file called `name` in the directories of `PATH`.
fn on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|file| is_executable_file(file))
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    meta.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Path) -> Result<(), String> {
        Ok(())
    }

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let file = dir.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        file
    }

    #[test]
    fn a_bare_name_is_found_in_the_module_dir_first_then_on_path() {
        let (module, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let on_path = executable(bin.path(), "tool");
        let path_var = std::env::join_paths([bin.path()]).unwrap();
        let one = RawExec::One("tool".into());
        assert_eq!(resolve(module.path(), &one, Some(&path_var), ok).unwrap(), on_path);
        let local = executable(module.path(), "tool");
        assert_eq!(resolve(module.path(), &one, Some(&path_var), ok).unwrap(), local);
    }

    #[test]
    fn a_path_with_a_slash_is_never_looked_up_on_path() {
        let (module, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(bin.path().join("sub")).unwrap();
        executable(&bin.path().join("sub"), "tool");
        let path_var = std::env::join_paths([bin.path()]).unwrap();
        let err = resolve(module.path(), &RawExec::One("sub/tool".into()), Some(&path_var), ok).unwrap_err();
        assert!(err.contains("cannot be used") && err.contains("sub/tool"), "{err}");
    }

    #[test]
    fn the_first_candidate_that_exists_wins() {
        let module = tempfile::tempdir().unwrap();
        let release = executable(module.path(), "release");
        let exec = RawExec::Candidates(vec!["debug".into(), "release".into()]);
        assert_eq!(resolve(module.path(), &exec, None, ok).unwrap(), release);
        let debug = executable(module.path(), "debug");
        assert_eq!(resolve(module.path(), &exec, None, ok).unwrap(), debug);
        let none = RawExec::Candidates(vec!["a/x".into(), "b/y".into()]);
        let err = resolve(module.path(), &none, None, ok).unwrap_err();
        assert!(err.contains("a/x") && err.contains("b/y"), "{err}");
        let err = resolve(module.path(), &RawExec::Candidates(vec![]), None, ok).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
