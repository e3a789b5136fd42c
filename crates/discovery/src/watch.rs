//! Waking on changes to a mesh directory: inotify (or the platform's
//! equivalent) through `notify`, with polling as the fallback where that is
//! not available, such as when the inotify watch limit is reached.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{PollWatcher, RecursiveMode, Watcher};
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
            move |_: notify::Result<notify::Event>| changed.notify_one()
        };
        let watcher: Box<dyn Watcher + Send + Sync> =
            match notify::recommended_watcher(handler.clone()).and_then(|w| watch_all(w, dirs)) {
                Ok(w) => Box::new(w),
                Err(native) => {
                    tracing::debug!("native watch failed ({native}); polling every {POLL_INTERVAL:?}");
                    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
                    let poller = PollWatcher::new(handler, config).and_then(|w| watch_all(w, dirs));
                    Box::new(poller.map_err(|e| Error::Watch {
                        path: dirs.first().cloned().unwrap_or_default(),
                        reason: e.to_string(),
                    })?)
                }
            };
        Ok(Self { changed, _watcher: watcher })
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

fn watch_all<W: Watcher>(mut watcher: W, dirs: &[PathBuf]) -> notify::Result<W> {
    for dir in dirs {
        watcher.watch(Path::new(dir), RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
