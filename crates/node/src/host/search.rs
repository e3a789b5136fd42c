//! The modules path at run time: the router's own, plus the directories
//! frontends bring (`Admin.AddModulePath`). Additions go after everything
//! the router searches already, so they add modules and never change which
//! manifest an existing name resolves to.

use std::path::PathBuf;

use tonic::Status;

use super::Host;
use crate::manifest::ModulePath;

/// How many directories frontends may add in one router's life: the path
/// is scanned on every `polis status`, so it stays bounded.
pub(crate) const MAX_ADDED_DIRS: usize = 64;

impl Host {
    /// The search path as it stands (a snapshot).
    pub(crate) fn modules_path(&self) -> ModulePath {
        self.search.read().expect("search path lock").clone()
    }

    /// Appends each of `dirs` not searched yet; gives the ones added. Each
    /// must be absolute (the router runs in `/`); the whole request is
    /// refused if one is not, or if it would pass [`MAX_ADDED_DIRS`].
    pub(crate) fn add_module_dirs(&self, dirs: &[String]) -> Result<Vec<PathBuf>, Status> {
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        if let Some(bad) = dirs.iter().find(|d| !d.is_absolute()) {
            return Err(Status::invalid_argument(format!(
                "modules path entry {:?} is not an absolute directory",
                bad.display().to_string()
            )));
        }
        let mut search = self.search.write().expect("search path lock");
        let base = self.config.modules_path.dirs().len();
        let mut next = search.clone();
        let added: Vec<PathBuf> = dirs.into_iter().filter(|d| next.add(d.clone())).collect();
        if next.dirs().len() - base > MAX_ADDED_DIRS {
            return Err(Status::resource_exhausted(format!(
                "the router's modules path takes at most {MAX_ADDED_DIRS} added directories; restart the \
                 router (`polis router restart`) to start afresh"
            )));
        }
        *search = next;
        Ok(added)
    }
}
