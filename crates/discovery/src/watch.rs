//! Waking on changes to a mesh directory: inotify (or the platform's
//! equivalent) through `notify`, with polling as the fallback where that is
//! not available, such as when the inotify watch limit is reached.
//!
//! A change is a record or lock file created, written, renamed or removed,
//! and a lock file closed after being opened for writing: every holder
//! opens its lock read-write ([`crate::lock::open`]), so a holder that dies
//! (its descriptors closed by the kernel, its files left behind) is a
//! change too, on inotify. Opening or reading a file is not: every check
//! of the directory opens its records and probes their locks (read-only),
//! and a watch that woke on those would wake its own waiter again and
//! again.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{
    EventKind, PollWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
use tokio::{sync::Notify, time::Instant};

use crate::{Error, Result};

const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A watch on a mesh directory and its `nodes/`.
///
/// Changes are coalesced: one wake-up may stand for many changes, and a
/// change that comes while nobody waits is kept for the next wait. So the
/// pattern "check, then wait" never misses a change made between the two.
pub struct DirWatch {
    changed: Arc<Notify>,
    /// Whether the platform's own notification is in use (not polling).
    native: bool,
    // Kept alive for its side effect: it feeds `changed`.
    _watcher: Box<dyn Watcher + Send + Sync>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch").finish_non_exhaustive()
    }
}

impl DirWatch {
    pub(crate) fn new(dirs: &[PathBuf]) -> Result<Self> {
        let changed = Arc::new(Notify::new());
        let handler = {
            let changed = changed.clone();
            move |event: notify::Result<notify::Event>| {
                // An error may hide a change: wake, and let the waiter look.
                if event.map_or(true, |e| is_change(&e.kind)) {
                    changed.notify_one();
                }
            }
        };
        let mut native = true;
        let watcher: Box<dyn Watcher + Send + Sync> =
            match notify::recommended_watcher(handler.clone()).and_then(|w| watch_all(w, dirs)) {
                Ok(w) => Box::new(w),
                Err(why) => {
                    native = false;
                    tracing::debug!("native watch failed ({why}); polling every {POLL_INTERVAL:?}");
                    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
                    let poller = PollWatcher::new(handler, config).and_then(|w| watch_all(w, dirs));
                    Box::new(poller.map_err(|e| Error::Watch {
                        path: dirs.first().cloned().unwrap_or_default(),
                        reason: e.to_string(),
                    })?)
                }
            };
        Ok(Self { changed, native, _watcher: watcher })
    }

    /// Whether a lock let go is a change this watch wakes on, so that the
    /// death of a node (whose record stays until collected) is seen without
    /// looking again: true on Linux's inotify, which reports the close of
    /// a lock file its holder opened for writing. The polling fallback
    /// compares files' times and sizes, which a lock does not change, and
    /// other platforms' native notifications say nothing of closes.
    pub fn sees_lock_release(&self) -> bool {
        self.native && cfg!(any(target_os = "linux", target_os = "android"))
    }

    /// Waits for the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Calls `check` now and after every change until it returns a value, or
    /// until `timeout` has passed (then `Ok(None)`).
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check()? {
                return Ok(Some(value));
            }
            tokio::select! {
                () = self.changed() => {}
                () = tokio::time::sleep_until(deadline) => return check(),
            }
        }
    }
}

/// Whether an event of this kind may change what a check of the directory
/// finds: not an open, a read or a read-only close.
fn is_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

fn watch_all<W: Watcher>(mut watcher: W, dirs: &[PathBuf]) -> notify::Result<W> {
    for dir in dirs {
        watcher.watch(Path::new(dir), RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    fn soon<F: std::future::Future>(future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), future).await.expect("in time") })
    }

    /// What a check of the directory does itself (open a record, probe a
    /// lock read-only) is no change; what another node does is.
    #[test]
    fn opens_and_reads_are_not_changes() {
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!is_change(&quiet), "{quiet:?}");
        }
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(is_change(&change), "{change:?}");
        }
    }

    /// A lock's holder goes without removing anything (as a killed process
    /// does: the kernel closes its descriptors): the watch wakes.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_let_go_wakes_the_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let holder = crate::lock::open(&path).unwrap();
        assert!(crate::lock::try_exclusive(&holder).unwrap());
        assert!(crate::lock::is_held(&path).unwrap());
        // Watching from here: the close of the holder's descriptor is the
        // only event to come.
        let watch = DirWatch::new(&[tmp.path().to_owned()]).unwrap();
        assert!(watch.sees_lock_release(), "inotify is in use (is the watch limit reached?)");
        drop(holder);
        soon(watch.changed());
        assert!(!crate::lock::is_held(&path).unwrap());
        assert!(path.exists(), "nothing was removed");
    }
}
