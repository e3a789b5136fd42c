//! Opening files that anyone with access to the mesh directory may have
//! planted: a FIFO, a device, a directory or a huge file in place of a
//! record or a lock must not hang or exhaust a reader.
//!
//! Every open here is non-blocking (a FIFO without a writer would otherwise
//! block `open(2)` forever), does not follow a final symbolic link (a link
//! would lead a lock's `O_CREAT` outside the directory), and is checked to be
//! a regular file before anything is read. Reads are bounded.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Read},
    path::Path,
};

/// The most a record (`nodes/<id>.json`, `router.json`) may weigh. A real
/// one is a few hundred bytes; anything bigger is skipped unread.
pub(crate) const MAX_RECORD: u64 = 64 * 1024;

/// The most a lock file's content (the epoch in `router.lock`) may weigh.
pub(crate) const MAX_LOCK_CONTENT: u64 = 64;

/// A path that exists but is not a regular file, so it is not used.
///
/// It travels inside an [`io::Error`] (see [`is_not_regular`]), so that
/// callers can tell it apart from a failed system call.
#[derive(Debug)]
pub(crate) struct NotRegular {
    /// What the path is instead, in words: "a FIFO", "a directory", …
    pub(crate) what: &'static str,
}

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a regular file but {}", self.what)
    }
}

impl std::error::Error for NotRegular {}

/// Whether `error` says the path is not a regular file.
pub(crate) fn is_not_regular(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<NotRegular>())
}

/// What `error`'s path is instead of a regular file, if that is the error.
pub(crate) fn not_regular_what(error: &io::Error) -> Option<&'static str> {
    error.get_ref().and_then(|e| e.downcast_ref::<NotRegular>()).map(|n| n.what)
}

fn not_regular(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular { what })
}

/// Opens `path` with `options`, never blocking and never following a final
/// symbolic link, and returns it only if it is a regular file. The returned
/// file is back in blocking mode, so that it behaves like any other.
pub(crate) fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW).bits() as i32);
        let file = match options.open(path) {
            Ok(f) => f,
            // O_NOFOLLOW's answer to a symbolic link.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(not_regular("a symbolic link"));
            }
            // A directory opened for writing.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => return Err(not_regular("a directory")),
            // A socket, which open(2) refuses.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                return Err(not_regular(kind_of(path)));
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(not_regular(describe(&meta.file_type())));
        }
        let flags = rustix::fs::fcntl_getfl(&file)?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let file = options.open(path)?;
        if !file.metadata()?.file_type().is_file() {
            return Err(not_regular("something else"));
        }
        Ok(file)
    }
}

/// A record file, read with care.
#[derive(Debug)]
pub(crate) enum Record {
    /// There is none.
    Missing,
    /// Its bytes, at most [`MAX_RECORD`] of them.
    Bytes(Vec<u8>),
    /// Something is there that cannot be a record: why, in words.
    Unusable(String),
}

/// Reads the record at `path`, refusing without blocking anything that is
/// not a regular file or weighs more than [`MAX_RECORD`]. The error is a
/// failed system call.
pub(crate) fn read_record(path: &Path) -> io::Result<Record> {
    let file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::Missing),
        Err(e) if is_not_regular(&e) => return Ok(Record::Unusable(e.to_string())),
        Err(e) => return Err(e),
    };
    read_bounded(&file, MAX_RECORD)
}

/// Reads at most `limit` bytes from `file`; more than that is refused as
/// too large rather than read.
pub(crate) fn read_bounded(file: &File, limit: u64) -> io::Result<Record> {
    let too_large =
        |size: u64| Record::Unusable(format!("too large ({size} bytes; at most {limit} are read)"));
    let size = file.metadata()?.len();
    if size > limit {
        return Ok(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the limit tells a file that grew since the check.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(too_large(bytes.len() as u64));
    }
    Ok(Record::Bytes(bytes))
}

#[cfg(unix)]
fn describe(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

#[cfg(unix)]
fn kind_of(path: &Path) -> &'static str {
    std::fs::symlink_metadata(path).map_or("something else", |m| describe(&m.file_type()))
}

#[cfg(test)]
pub(crate) mod testing {
    use std::{path::Path, sync::mpsc, time::Duration};

    /// Makes a FIFO at `path`, as someone planting one would.
    pub(crate) fn mkfifo(path: &Path) {
        rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    }

    /// Runs `f` on a thread of its own and returns its result, failing the
    /// test if it has not finished within a deadline far beyond any real
    /// run: what it checks is that `f` does not block for ever.
    pub(crate) fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(value) => value,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} blocked for more than 10 s"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn a_fifo_is_refused_without_blocking_for_reading_or_locking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("x.json");
        mkfifo(&fifo);
        let path = fifo.clone();
        let record = finishes("reading a FIFO", move || read_record(&path).unwrap());
        assert!(matches!(&record, Record::Unusable(r) if r == "not a regular file but a FIFO"), "{record:?}");
        let path = fifo.clone();
        let err = finishes("opening a FIFO as a lock", move || crate::lock::open(&path).unwrap_err());
        assert_eq!(not_regular_what(&err), Some("a FIFO"), "{err}");
        let err = finishes("probing a FIFO as a lock", move || crate::lock::is_held(&fifo).unwrap_err());
        assert_eq!(not_regular_what(&err), Some("a FIFO"), "{err}");
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("x.lock");
        // A lock created through it would land outside the mesh directory.
        let outside = tmp.path().join("outside");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let err = crate::lock::open(&link).unwrap_err();
        assert_eq!(not_regular_what(&err), Some("a symbolic link"), "{err}");
        assert!(!outside.exists(), "nothing was created through the link");
    }

    #[test]
    fn a_record_over_the_limit_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big.json");
        std::fs::write(&path, vec![b' '; 10 << 20]).unwrap();
        let record = read_record(&path).unwrap();
        assert!(
            matches!(&record, Record::Unusable(r) if r.starts_with("too large (10485760 bytes")),
            "{record:?}"
        );
        std::fs::write(&path, vec![b' '; MAX_RECORD as usize]).unwrap();
        assert!(matches!(read_record(&path).unwrap(), Record::Bytes(b) if b.len() as u64 == MAX_RECORD));
    }
}
