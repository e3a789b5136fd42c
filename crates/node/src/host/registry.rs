//! The registry: one entry per module the router knows, and what
//! `polis status` shows of each.

use std::{
    path::Path,
    sync::{Arc, Mutex, atomic::Ordering},
};

use polis_mesh::pb;

use super::{Host, Instance, restart::Crashes};
use crate::manifest::Manifest;

pub(crate) struct Entry {
    pub(super) name: String,
    /// Woken when a module attaches under this name.
    pub(super) attached: tokio::sync::Notify,
    // Held across the await of a load: one load of a module at a time.
    pub(super) load: tokio::sync::Mutex<()>,
    // std Mutex: never held across an await.
    pub(super) state: Mutex<EntryState>,
}

#[derive(Default)]
pub(super) struct EntryState {
    pub(super) instance: Option<Arc<Instance>>,
    pub(super) manifest: Option<Manifest>,
    pub(super) crashes: Crashes,
    pub(super) restarts: u32,
    /// Set when the module may not be started again without a hand load.
    pub(super) failed: Option<String>,
    pub(super) last_error: Option<String>,
    /// Calls served by earlier instances.
    pub(super) past_calls: u64,
    /// An instance being replaced (`replace`): out of `instance`, so that
    /// no new call reaches it, while it answers the calls it has.
    pub(super) draining: Option<Arc<Instance>>,
    /// A process of this module is being started (spawned, not yet
    /// handshaken): a module attaching meanwhile is refused, or the two
    /// would both be taken and one of them never stopped.
    pub(super) starting: bool,
    /// Node ids of processes of this module that this router spawned and
    /// reaped (the last few): their records elsewhere (in etcd, until their
    /// lease lapses) are not of a module on its way back.
    pub(super) reaped: Vec<uuid::Uuid>,
}

/// A module as `polis status` shows it.
pub(super) fn module_info(name: &str, state: &str) -> pb::ModuleInfo {
    pb::ModuleInfo { name: name.to_owned(), state: state.to_owned(), ..Default::default() }
}

impl Host {
    /// The entry of `name`, made if there is none.
    pub(super) fn entry(&self, name: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("entries lock");
        entries
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    name: name.to_owned(),
                    attached: tokio::sync::Notify::new(),
                    load: tokio::sync::Mutex::new(()),
                    state: Mutex::new(EntryState::default()),
                })
            })
            .clone()
    }

    pub(super) fn existing_entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.lock().expect("entries lock").get(name).cloned()
    }

    pub(super) fn live(&self, name: &str) -> Option<Arc<Instance>> {
        let entry = self.existing_entry(name)?;
        let state = entry.state.lock().expect("state lock");
        state.instance.clone().filter(|i| !i.is_closed())
    }

    pub(super) fn instances(&self) -> Vec<Arc<Instance>> {
        let entries: Vec<Arc<Entry>> = self.entries.lock().expect("entries lock").values().cloned().collect();
        // A draining instance too: the router's end stops it like the rest.
        entries
            .iter()
            .flat_map(|e| {
                let state = e.state.lock().expect("state lock");
                [state.instance.clone(), state.draining.clone()]
            })
            .flatten()
            .collect()
    }

    /// Every module known: loaded ones, and those available on the search path.
    pub(crate) fn modules(&self) -> Vec<pb::ModuleInfo> {
        let entries: Vec<Arc<Entry>> = self.entries.lock().expect("entries lock").values().cloned().collect();
        let mut infos: Vec<pb::ModuleInfo> = entries
            .iter()
            .map(|e| self.info(e, &e.state.lock().expect("state lock")))
            // A module removed from disk (`polis module remove`) is no
            // longer available, though the router remembers it.
            .filter(|i| i.state != "available" || i.manifest.is_empty() || Path::new(&i.manifest).exists())
            .collect();
        for manifest in self.modules_path().scan() {
            match manifest {
                Ok(m) if !infos.iter().any(|i| i.name == m.name) => infos.push(pb::ModuleInfo {
                    name: m.name.clone(),
                    version: m.version.to_string(),
                    state: "available".into(),
                    protocol: m.protocol.to_string(),
                    manifest: m.path.display().to_string(),
                    sandbox: m.sandbox.as_ref().map(|s| s.summary()).unwrap_or_default(),
                    ..Default::default()
                }),
                Ok(_) => {}
                // A broken manifest is shown with its error, so that
                // `polis status` says why a module cannot be called.
                Err(e) => {
                    let path = e.path();
                    let name = path.parent().and_then(|d| d.file_name()).unwrap_or_default();
                    let name = name.to_string_lossy().into_owned();
                    if !infos.iter().any(|i| i.name == name) {
                        infos.push(pb::ModuleInfo {
                            name,
                            state: "broken".into(),
                            manifest: path.display().to_string(),
                            last_error: e.to_string(),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    pub(super) fn info(&self, entry: &Entry, state: &EntryState) -> pb::ModuleInfo {
        let draining = state.draining.as_ref().filter(|i| !i.is_closed());
        let live = state.instance.as_ref().filter(|i| !i.is_closed());
        let state_name = match (live, draining, &state.failed) {
            (Some(_), _, _) => "running",
            (None, Some(_), _) => "stopping",
            (None, None, Some(_)) => "failed",
            (None, None, None) => "available",
        };
        let live = live.or(draining);
        let calls = state.past_calls + live.map_or(0, |i| i.calls.load(Ordering::Relaxed));
        let mut info = module_info(&entry.name, state_name);
        info.version = live
            .map(|i| i.version.clone())
            .or_else(|| state.manifest.as_ref().map(|m| m.version.to_string()))
            .unwrap_or_default();
        info.pid = live.and_then(|i| i.pid).unwrap_or(0);
        info.restarts = state.restarts;
        info.calls = calls;
        info.protocol = state.manifest.as_ref().map(|m| m.protocol.to_string()).unwrap_or_default();
        info.manifest = state.manifest.as_ref().map(|m| m.path.display().to_string()).unwrap_or_default();
        info.sandbox =
            state.manifest.as_ref().and_then(|m| m.sandbox.as_ref()).map(|s| s.summary()).unwrap_or_default();
        info.last_error = state.failed.clone().or_else(|| state.last_error.clone()).unwrap_or_default();
        info
    }
}
