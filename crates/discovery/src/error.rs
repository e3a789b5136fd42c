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
    /// A file of the mesh that polis locks or reads is something else, such
    /// as a FIFO or a symbolic link.
    #[error("{} is {what}, not a regular file; remove it", path.display())]
    NotAFile {
        /// The path refused.
        path: PathBuf,
        /// What it is instead, such as "a FIFO".
        what: &'static str,
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
    /// Whether the local mesh directory or setup was refused as unsafe or
    /// unusable (its permissions, its owner, a path that is not a directory,
    /// a lock that is not a regular file),
    /// rather than an operation failing. The `polis` command exits 5 for
    /// these; nothing but fixing the setup makes them go away.
    ///
    /// ```
    /// let tmp = std::env::temp_dir().join(format!("polis-doc-{}", std::process::id()));
    /// std::fs::write(&tmp, b"")?;
    /// let err = polis_discovery::MeshDir::open(&tmp).unwrap_err();
    /// assert!(err.is_refusal(), "{err}");
    /// # std::fs::remove_file(&tmp)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Insecure { .. }
            | Error::NotOwner { .. }
            | Error::NotADirectory { .. }
            | Error::NotAFile { .. } => true,
            Error::IdInUse { .. } | Error::Io { .. } | Error::Watch { .. } => false,
        }
    }

    /// A failure to open a lock file, as [`Error::NotAFile`] when something
    /// else stands in its place.
    pub(crate) fn lock(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| match crate::file::not_regular_what(&source) {
            Some(what) => Error::NotAFile { path, what },
            None => Error::Io { action, path, source },
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
