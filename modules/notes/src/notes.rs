//! The module's state: its workspaces, the index, and the one writer.
//!
//! All of it is blocking (SQLite, the filesystem): the handlers in `main`
//! call it on tokio's blocking threads. Locks are std mutexes, never held
//! across an `.await`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use polis_sdk::ModuleError;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::{
    db,
    index::{self, Limits, Progress, Summary},
    queries,
    rank::{self, Ranker},
    watch::Watcher,
    workspace::Workspace,
};

/// What the manifest's `[config]` says, with defaults.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workspaces: Vec<(String, String)>,
    pub(crate) max_file_bytes: u64,
    pub(crate) debounce: Duration,
    pub(crate) query_timeout: Duration,
    pub(crate) index_on_start: bool,
}

impl Config {
    /// Reads `[config]`: `workspaces = { name = "path" }`, `max_file_bytes`,
    /// `debounce_ms`, `query_timeout_ms`, `index_on_start`.
    pub(crate) fn from_value(config: &Value) -> Result<Self, String> {
        let mut out = Config {
            workspaces: Vec::new(),
            max_file_bytes: 16 * 1024 * 1024,
            debounce: Duration::from_millis(50),
            query_timeout: Duration::from_secs(2),
            index_on_start: true,
        };
        let Some(table) = config.as_object() else { return Ok(out) };
        if let Some(ws) = table.get("workspaces") {
            let ws = ws.as_object().ok_or("config: `workspaces` must be a table of name = \"path\"")?;
            for (name, path) in ws {
                let path = path
                    .as_str()
                    .ok_or_else(|| format!("config: workspace {name:?} must be a path string"))?;
                out.workspaces.push((name.clone(), path.to_owned()));
            }
        }
        let number = |key: &str| -> Result<Option<u64>, String> {
            table
                .get(key)
                .map(|v| v.as_u64().ok_or(format!("config: `{key}` must be a non-negative integer")))
                .transpose()
        };
        if let Some(n) = number("max_file_bytes")? {
            out.max_file_bytes = n;
        }
        if let Some(n) = number("debounce_ms")? {
            out.debounce = Duration::from_millis(n);
        }
        if let Some(n) = number("query_timeout_ms")? {
            out.query_timeout = Duration::from_millis(n);
        }
        if let Some(v) = table.get("index_on_start") {
            out.index_on_start = v.as_bool().ok_or("config: `index_on_start` must be true or false")?;
        }
        Ok(out)
    }
}

/// The module's state, shared by every handler and the watcher.
#[derive(Debug)]
pub(crate) struct Notes {
    pub(crate) config: Config,
    pub(crate) index_path: PathBuf,
    /// The one writing connection: indexing and the watcher take turns.
    writer: Mutex<Connection>,
    /// The connection the read methods share (WAL: never blocked by the writer).
    reader: Mutex<Connection>,
    /// What `search` ranks with: the notes' lengths, read through `reader`
    /// (always locked after it).
    ranker: Mutex<Ranker>,
    workspaces: Mutex<BTreeMap<String, Workspace>>,
    /// Said once, kept for `workspaces`: an index rebuilt, a workspace missing.
    warnings: Mutex<Vec<String>>,
    /// Files parsed by this process: 0 after a restart that reused the index.
    parsed: AtomicU64,
    watcher: Mutex<Option<Watcher>>,
    /// Where `notes.changed` goes (`None` in unit tests).
    pub(crate) publisher: Option<polis_sdk::Publisher>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Notes {
    /// Opens (or rebuilds) the index and registers the configured workspaces.
    pub(crate) fn open(config: Config, publisher: Option<polis_sdk::Publisher>) -> Result<Arc<Self>, String> {
        let index_path = db::index_path()?;
        let mut warnings = Vec::new();
        let writer = db::open(&index_path, &mut warnings)?;
        let reader = db::open_read_only(&index_path).map_err(|e| format!("cannot open the index: {e}"))?;
        rank::register(&reader).map_err(|e| format!("cannot open the index: {e}"))?;
        let notes = Arc::new(Notes {
            config: config.clone(),
            index_path,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            ranker: Mutex::default(),
            workspaces: Mutex::new(BTreeMap::new()),
            warnings: Mutex::new(warnings),
            parsed: AtomicU64::new(0),
            watcher: Mutex::new(None),
            publisher,
        });
        match Watcher::start(notes.clone()) {
            Ok(w) => *lock(&notes.watcher) = Some(w),
            Err(e) => notes.warn(format!("no file watcher ({e}): changes are seen at the next `index` only")),
        }
        for (name, path) in &config.workspaces {
            let ws = Workspace::new(name, path)?;
            if let Some(error) = &ws.error {
                notes.warn(format!("workspace {name}: {error}"));
            }
            notes.register(ws)?;
        }
        Ok(notes)
    }

    fn warn(&self, warning: String) {
        eprintln!("notes: warning: {warning}");
        lock(&self.warnings).push(warning);
    }

    fn register(&self, ws: Workspace) -> Result<(), String> {
        if ws.error.is_none() {
            index::forget_workspace(&mut lock(&self.writer), &ws)?;
            if let Some(watcher) = lock(&self.watcher).as_mut()
                && let Err(e) = watcher.watch(&ws.root)
            {
                self.warn(format!("workspace {}: not watched ({e})", ws.name));
            }
        }
        lock(&self.workspaces).insert(ws.name.clone(), ws);
        Ok(())
    }

    /// Looks again at the configured workspaces whose directory was
    /// missing: one made since (a clone, a mounted disk) is indexed and
    /// watched from now on, without a restart of the module.
    pub(crate) fn look_again(&self) -> Result<(), String> {
        let missing: Vec<(String, String)> = {
            let all = lock(&self.workspaces);
            let missing = |name: &String| all.get(name).is_some_and(|w| w.error.is_some());
            self.config.workspaces.iter().filter(|(name, _)| missing(name)).cloned().collect()
        };
        for (name, path) in missing {
            let ws = Workspace::new(&name, &path)?;
            if ws.error.is_none() {
                self.register(ws)?;
            }
        }
        Ok(())
    }

    /// `add_workspace {name, path}`: a directory that must exist now.
    pub(crate) fn add_workspace(&self, name: &str, path: &str) -> Result<Value, ModuleError> {
        let ws = Workspace::new(name, path).map_err(ModuleError::invalid_argument)?;
        if let Some(error) = &ws.error {
            return Err(ModuleError::not_found(format!("workspace {name}: {error}")));
        }
        if let Some(old) = lock(&self.workspaces).get(name)
            && old.root != ws.root
        {
            return Err(ModuleError::failed_precondition(format!(
                "workspace {name} is already {}",
                old.root.display()
            )));
        }
        let root = ws.root.display().to_string();
        self.register(ws).map_err(ModuleError::internal)?;
        Ok(json!({ "name": name, "root": root }))
    }

    /// Every workspace, by name.
    pub(crate) fn workspaces(&self) -> Vec<Workspace> {
        lock(&self.workspaces).values().cloned().collect()
    }

    /// The workspace `name`, or a NOT_FOUND naming the known ones.
    pub(crate) fn workspace(&self, name: &str) -> Result<Workspace, ModuleError> {
        let all = lock(&self.workspaces);
        all.get(name).cloned().ok_or_else(|| {
            let names: Vec<_> = all.keys().map(String::as_str).collect();
            ModuleError::not_found(format!("no workspace {name:?} (there are: {})", names.join(", ")))
        })
    }

    /// `workspaces`: names, roots, file counts, and what went wrong.
    pub(crate) fn describe(&self) -> Result<Value, ModuleError> {
        let reader = self.reader();
        let mut list = Vec::new();
        for ws in self.workspaces() {
            let files: i64 = reader
                .query_row("SELECT count(*) FROM files WHERE workspace = ?1", [&ws.name], |r| r.get(0))
                .map_err(|e| ModuleError::internal(e.to_string()))?;
            list.push(json!({ "name": ws.name, "root": ws.root, "files": files, "error": ws.error }));
        }
        Ok(json!({
            "workspaces": list,
            "index": self.index_path,
            "parsed_since_start": self.parsed.load(Ordering::Relaxed),
            "warnings": *lock(&self.warnings),
        }))
    }

    pub(crate) fn limits(&self) -> Limits {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits { max_file_bytes: self.config.max_file_bytes, threads }
    }

    /// The shared read connection.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.reader)
    }

    /// `search`, on the shared reader and its ranker.
    pub(crate) fn search(
        &self,
        q: &str,
        workspace: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, ModuleError> {
        let reader = self.reader();
        queries::search(&reader, &mut lock(&self.ranker), q, workspace, limit)
    }

    /// One incremental pass over `ws`.
    pub(crate) fn index(
        &self,
        ws: &Workspace,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Summary, String> {
        let all = self.workspaces();
        let summary = index::index_workspace(&mut lock(&self.writer), ws, &all, self.limits(), progress)?;
        self.parsed.fetch_add(summary.parsed as u64, Ordering::Relaxed);
        Ok(summary)
    }

    /// A file changed on disk (from the watcher): re-index it, or remove it.
    pub(crate) fn file_changed(&self, ws: &Workspace, rel: &str) -> Result<Option<&'static str>, String> {
        let all = self.workspaces();
        let kind = index::reindex_one(&mut lock(&self.writer), ws, &all, rel, self.limits())?;
        if matches!(kind, Some("created" | "modified")) {
            self.parsed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(kind)
    }
}
