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
    /// A directory above the mesh directory may be written by other users
    /// without the sticky bit: they could rename the mesh directory away and
    /// put their own in its place.
    #[error(
        "directory {} above the mesh directory has mode {mode:04o}: other users may replace \
         what is in it; run `chmod go-w {}` or `chmod +t {}`, or choose another directory \
         with --mesh-dir",
        path.display(), path.display(), path.display()
    )]
    InsecureAncestor {
        /// The ancestor refused.
        path: PathBuf,
        /// Its permission bits, with the sticky bit.
        mode: u32,
    },
    /// A symbolic link on the way to the mesh directory leads nowhere.
    #[error(
        "{} is a symbolic link to {}, which does not exist; create it (mode 700) \
         or remove the link",
        link.display(), target.display()
    )]
    DanglingLink {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A symbolic link on the way to the mesh directory leads to a place
    /// that is refused.
    #[error("{} is a symbolic link to {}: {refusal}", link.display(), target.display())]
    Link {
        /// The first link followed.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
        /// Why the place it leads to is refused; always a refusal
        /// ([`Error::is_refusal`]).
        refusal: Box<Error>,
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
    /// A remote backend (etcd) could not be reached or refused the request:
    /// no quorum, no member answering, a lease that expired.
    #[error("UNAVAILABLE: the mesh's {backend} at {at} cannot be reached: {reason}")]
    Unavailable {
        /// Which backend, such as "etcd".
        backend: &'static str,
        /// Its endpoints, as given.
        at: String,
        /// The cause.
        reason: String,
    },
    /// A discovery address (`--discovery`, `POLIS_DISCOVERY`) that does not parse.
    #[error("INVALID_ARGUMENT: discovery {given:?}: {reason}")]
    BadAddress {
        /// The address given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether the local mesh directory or setup was refused as unsafe or
    /// unusable (its permissions, its owner or an ancestor's, a path that is
    /// not a directory, a dangling link, a lock that is not a regular file),
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
            | Error::InsecureAncestor { .. }
            | Error::NotOwner { .. }
            | Error::NotADirectory { .. }
            | Error::DanglingLink { .. }
            | Error::Link { .. }
            | Error::NotAFile { .. } => true,
            Error::IdInUse { .. }
            | Error::Io { .. }
            | Error::Watch { .. }
            | Error::Unavailable { .. }
            | Error::BadAddress { .. } => false,
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
