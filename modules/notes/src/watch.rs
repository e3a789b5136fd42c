//! The watcher: a file written re-indexed, a file deleted removed, a
//! directory moved rescanned, debounced, each change announced.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::notes::Notes;

/// However busy the disk, changes are flushed at least this often.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The filesystem watcher; dropping it stops watching (and the debounce
/// thread, whose channel closes).
pub(crate) struct Watcher {
    inner: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts the watcher and its debounce thread; it watches nothing yet.
    pub(crate) fn start(notes: Arc<Notes>) -> notify::Result<Self> {
        let (send, receive) = mpsc::channel();
        let inner = notify::recommended_watcher(send)?;
        let debounce = notes.config.debounce;
        std::thread::Builder::new()
            .name("notes-watch".into())
            .spawn(move || debounce_loop(&notes, &receive, debounce))
            .map_err(|e| notify::Error::generic(&format!("cannot start the watcher thread: {e}")))?;
        Ok(Watcher { inner })
    }

    /// Watches `root` and everything under it.
    pub(crate) fn watch(&mut self, root: &Path) -> notify::Result<()> {
        self.inner.watch(root, RecursiveMode::Recursive)
    }
}

/// Collects changed paths until the disk has been quiet for `debounce` (or
/// [`MAX_DELAY`] passed), then re-indexes them.
fn debounce_loop(notes: &Notes, events: &mpsc::Receiver<notify::Result<notify::Event>>, debounce: Duration) {
    let mut pending = BTreeSet::new();
    let mut since: Option<Instant> = None;
    loop {
        let event = match since {
            None => events.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(first) => {
                let wait = debounce.min(MAX_DELAY.saturating_sub(first.elapsed()));
                events.recv_timeout(wait)
            }
        };
        match event {
            Ok(Ok(event)) => {
                if matches!(event.kind, EventKind::Access(_)) {
                    continue;
                }
                pending.extend(event.paths);
                since.get_or_insert_with(Instant::now);
            }
            Ok(Err(e)) => eprintln!("notes: watcher: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                flush(notes, std::mem::take(&mut pending));
                since = None;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn flush(notes: &Notes, paths: BTreeSet<PathBuf>) {
    let all = notes.workspaces();
    let mut rescan = BTreeSet::new();
    for path in paths {
        let Some(ws) = all
            .iter()
            .filter(|w| w.error.is_none() && path.starts_with(&w.root))
            .max_by_key(|w| w.root.as_os_str().len())
        else {
            continue;
        };
        let Some(rel) = ws.relative(&path) else { continue };
        if rel.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        if rel.ends_with(".norg") && !path.is_dir() {
            match notes.file_changed(ws, &rel) {
                Ok(Some(kind)) => announce_change(notes, &ws.name, &rel, kind),
                Ok(None) => {}
                Err(e) => eprintln!("notes: {}:{rel}: {e}", ws.name),
            }
        } else if path.is_dir() || (!path.exists() && path.extension().is_none()) {
            // A directory made, moved or removed: a pass finds what it held.
            rescan.insert(ws.name.clone());
        }
    }
    for ws in all.iter().filter(|w| rescan.contains(&w.name)) {
        match notes.index(ws, &mut |_| {}) {
            Ok(summary) => {
                for (rel, kind) in summary.changed {
                    announce_change(notes, &ws.name, &rel, kind);
                }
            }
            Err(e) => eprintln!("notes: rescanning {}: {e}", ws.name),
        }
    }
}

/// The one place a change to the index is announced: `kind` is "created",
/// "modified" or "deleted". It is published as `notes.changed` with
/// `{workspace, path, kind}`, without waiting: an editor that misses one
/// (the link full, no router for a moment) refreshes on the next.
pub(crate) fn announce_change(notes: &Notes, workspace: &str, path: &str, kind: &str) {
    eprintln!("notes: changed: {kind} {workspace}:{path}");
    if let Some(publisher) = &notes.publisher {
        let event = serde_json::json!({"workspace": workspace, "path": path, "kind": kind});
        if let Err(e) = publisher.try_publish("notes.changed", &event) {
            eprintln!("notes: cannot publish notes.changed: {}", e.message());
        }
    }
}
