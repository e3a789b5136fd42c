use std::{io, path::PathBuf};

/// What can go wrong with a mesh directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory (or its parent) may be written by other users.
    #[error(
        "mesh directory {} has mode {mode:03o}: other users may write to it; \
         run `chmod 700 {}` or choose another directory with --mesh-dir",
        path.display(), path.display()
    )]
    Insecure {
        /// The directory refused.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory belongs to another user.
    #[error(
        "mesh directory {} is owned by uid {owner}, not by you (uid {me}); \
         remove it or choose another directory with --mesh-dir",
        path.display()
    )]
    NotOwner {
        /// The directory refused.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// The path exists but is not a directory.
    #[error("mesh directory {} is not a directory; remove it or choose another with --mesh-dir", path.display())]
    NotADirectory {
        /// The path refused.
        path: PathBuf,
    },
    /// A node id is already published by a live process.
    #[error("node {id} is already published by a live process")]
    IdInUse {
        /// The id.
        id: uuid::Uuid,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, such as "create" or "read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Watching the directory failed, with inotify and polling alike.
    #[error("cannot watch {}: {reason}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
