//! Which mesh, and which module directories, a frontend means: one order
//! for every frontend (the CLI, Rust clients, the Lua module), so that they
//! all find the same router (DESIGN.md §4 and §6).
//!
//! - The mesh directory: the one given (`--mesh-dir`, `mesh_dir`), else
//!   `POLIS_MESH_DIR`, else [`default_mesh_dir`] (which reads `POLIS_MESH`).
//! - The modules path: the one given (`--modules-path`, `modules_path`),
//!   else `POLIS_MODULES_PATH`, else none (the router still searches the
//!   user's data dir after it). Its entries are made absolute here, where
//!   they were meant, since a router runs in `/`.
//!
//! An empty value, given or in the environment, counts as unset.

use std::{ffi::OsString, path::PathBuf};

use crate::default_mesh_dir;

/// The environment variable naming the mesh directory.
pub const MESH_DIR_ENV: &str = "POLIS_MESH_DIR";

/// The environment variable holding the `:`-separated modules path.
pub const MODULES_PATH_ENV: &str = "POLIS_MODULES_PATH";

/// The mesh directory: `given`, else `$POLIS_MESH_DIR`, else the default.
pub fn mesh_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| env(MESH_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(default_mesh_dir)
}

/// The modules path a frontend brings: `given`, else
/// `$POLIS_MODULES_PATH`, else `None`; each entry made absolute.
pub fn modules_path(given: Option<&str>) -> Option<String> {
    let paths = given.filter(|p| !p.is_empty()).map(OsString::from).or_else(|| env(MODULES_PATH_ENV))?;
    Some(absolute_paths(&paths).to_string_lossy().into_owned())
}

/// A `:`-separated search path with each entry made absolute (against
/// this process's working directory); empty entries are dropped.
pub fn absolute_paths(paths: impl AsRef<std::ffi::OsStr>) -> OsString {
    let dirs = std::env::split_paths(paths.as_ref())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    std::env::join_paths(dirs).unwrap_or_else(|_| paths.as_ref().to_owned())
}

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The environment is the process's: these tests only read what no
    // other test of this crate sets, and pass `given` to cover the order.

    #[test]
    fn a_given_mesh_dir_wins_and_an_empty_one_is_unset() {
        assert_eq!(mesh_dir(Some("/tmp/given".into())), PathBuf::from("/tmp/given"));
        let fallback = env(MESH_DIR_ENV).map_or_else(default_mesh_dir, PathBuf::from);
        assert_eq!(mesh_dir(Some(PathBuf::new())), fallback);
        assert_eq!(mesh_dir(None), fallback);
    }

    #[test]
    fn modules_paths_are_made_absolute_and_empty_entries_dropped() {
        let cwd = std::env::current_dir().unwrap();
        let got = modules_path(Some("mods::/abs/dir")).unwrap();
        let want = format!("{}:/abs/dir", cwd.join("mods").display());
        assert_eq!(got, want);
        assert_eq!(
            modules_path(Some("")),
            env(MODULES_PATH_ENV).map(|p| absolute_paths(p).to_string_lossy().into_owned())
        );
    }
}
