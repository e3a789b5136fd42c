//! Bounded logs: the router keeps every `*.log` in its mesh's `logs/` (its
//! own, and each module's stderr) under a size cap, with one older file.
//!
//! The writers are other processes holding the file open in append mode
//! (a launched router's stdout and stderr, each module's stderr), and a
//! module may outlive this router (handover), so the file is never
//! replaced under them: past the cap its last `max` bytes are copied to
//! `NAME.log.1` (written beside it and renamed, atomically) and the log is
//! truncated to nothing, where the next append lands (logrotate's
//! `copytruncate`). A line written between the copy and the truncation is
//! lost; between two looks a log may outgrow the cap by what was written
//! in that second.

use std::{
    fs::OpenOptions,
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// The cap a log is held to by default: 1 MiB.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// How often the router looks at its logs.
const EVERY: Duration = Duration::from_secs(1);

/// Holds every log in `dir` to `max` bytes until `shutdown`.
pub(crate) async fn keep_bounded(dir: PathBuf, max: u64, shutdown: CancellationToken) {
    loop {
        if let Err(e) = rotate_all(&dir, max) {
            tracing::warn!("cannot rotate the logs in {}: {e}", dir.display());
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Rotates each `*.log` in `dir` that is over `max` bytes.
pub(crate) fn rotate_all(dir: &Path, max: u64) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") && entry.metadata().is_ok_and(|m| m.len() > max) {
            rotate(&path, max)?;
        }
    }
    Ok(())
}

/// `NAME.log.1`: the older file of `log`.
pub(crate) fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Moves the last `max` bytes of `log` (from a line's start) to
/// `log.1`, and empties `log`.
fn rotate(log: &Path, max: u64) -> io::Result<()> {
    let mut file = std::fs::File::open(log)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut tail = Vec::new();
    file.take(max).read_to_end(&mut tail)?;
    // Start at a line: a cut line at the top helps nobody.
    let start = if len > max { tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1) } else { 0 };
    let old = rotated(log);
    let mut staging = old.clone().into_os_string();
    staging.push(".tmp");
    let staging = PathBuf::from(staging);
    let mut out = std::fs::File::create(&staging)?;
    out.write_all(&tail[start..])?;
    out.sync_data()?;
    std::fs::rename(&staging, &old)?;
    OpenOptions::new().write(true).open(log)?.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_over_its_cap_keeps_its_last_lines_in_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("echo.log");
        let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, &lines).unwrap();
        std::fs::write(dir.path().join("small.log"), "a\n").unwrap();
        rotate_all(dir.path(), 100).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let old = std::fs::read_to_string(rotated(&log)).unwrap();
        assert!(old.len() <= 100 && old.ends_with("line 999\n") && old.starts_with("line "), "{old:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join("small.log")).unwrap(), "a\n");
        assert!(!dir.path().join("small.log.1").exists());
        // An append-mode writer carries on at the start of the emptied file.
        let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
        writer.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
    }
}
