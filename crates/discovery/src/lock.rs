//! Advisory whole-file locks (flock on Unix, through std), and the probes
//! that turn them into liveness.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io,
    path::Path,
};

use crate::file;

/// Opens (creating if needed) a lock file, readable and writable by us only.
///
/// Anything at `path` that is not a regular file (a FIFO, a symbolic link,
/// a directory) is refused with an error that [`file::is_not_regular`]
/// recognizes, without blocking.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    file::open_regular(path, &mut options)
}

/// Takes an exclusive lock without waiting: `Ok(false)` when another holds it.
pub(crate) fn try_exclusive(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a live process holds the lock at `path` exclusively.
///
/// A missing file is not held. The probe takes a shared lock for an instant,
/// so it never blocks and never conflicts with other probes. A path that is
/// not a regular file is an error ([`file::is_not_regular`]), found without
/// blocking: no polis process can hold it.
pub(crate) fn is_held(path: &Path) -> io::Result<bool> {
    let file = match file::open_regular(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!is_held(&path).unwrap(), "missing file");
        let holder = open(&path).unwrap();
        assert!(!is_held(&path).unwrap(), "created, not locked");
        assert!(try_exclusive(&holder).unwrap());
        assert!(is_held(&path).unwrap());
        let rival = open(&path).unwrap();
        assert!(!try_exclusive(&rival).unwrap(), "a second exclusive lock fails");
        drop(holder);
        assert!(!is_held(&path).unwrap(), "dropping the file releases the lock");
    }
}
