//! Publishing node records, and listing the live ones.

use std::{
    fs::{self, File},
    io,
    path::PathBuf,
};

use uuid::Uuid;

use crate::{Error, MeshDir, NodeRecord, Result, lock, record};

/// Keeps a node's record published: it holds `nodes/<id>.lock`.
///
/// Dropping the guard removes the record and its lock file, then releases
/// the lock. If the process dies instead, the kernel releases the lock and
/// the record is dead at once; [`MeshDir::collect_dead`] removes it later.
#[derive(Debug)]
pub struct NodeGuard {
    record_path: PathBuf,
    lock_path: PathBuf,
    // Held for the node's life; released when this field drops, last.
    lock: File,
}

impl NodeGuard {
    /// Rewrites the published record, for example after re-attaching to a new router.
    pub fn update(&self, record: &NodeRecord) -> Result<()> {
        record::write_atomic(&self.record_path, record)
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        // Unlinking while the lock is still held: nobody else may own these paths.
        let _ = fs::remove_file(&self.record_path);
        let _ = fs::remove_file(&self.lock_path);
        let _ = &self.lock;
    }
}

/// The live records of a mesh, and the files that could not be read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Live records, oldest first.
    pub nodes: Vec<NodeRecord>,
    /// Records skipped as unreadable; dead records are not listed here.
    pub skipped: Vec<Skipped>,
}

/// A record file that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why, in words.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipping {}: {}", self.path.display(), self.reason)
    }
}

impl MeshDir {
    pub(crate) fn publish_node(&self, record: &NodeRecord) -> Result<NodeGuard> {
        let lock_path = self.node_lock(&record.id);
        let lock = lock::open(&lock_path).map_err(Error::io("create", &lock_path))?;
        if !lock::try_exclusive(&lock).map_err(Error::io("lock", &lock_path))? {
            return Err(Error::IdInUse { id: record.id });
        }
        // The lock is held before the record exists, so a reader never sees
        // a record of a live node as dead.
        let guard = NodeGuard { record_path: self.node_record(&record.id), lock_path, lock };
        guard.update(record)?;
        Ok(guard)
    }

    /// Reads every record under `nodes/`, keeping the live ones.
    pub(crate) fn list_nodes(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        for (id, path) in self.record_files()? {
            let record = match fs::read(&path) {
                Ok(bytes) => NodeRecord::parse(&bytes),
                // Removed since the directory was read: its node just left.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("cannot read ({e})")),
            };
            let record = match record {
                Ok(r) if r.id == id => r,
                Ok(r) => {
                    let reason = format!("its id {} does not match its file name", r.id);
                    listing.skipped.push(Skipped { path, reason });
                    continue;
                }
                Err(reason) => {
                    listing.skipped.push(Skipped { path, reason });
                    continue;
                }
            };
            let lock_path = self.node_lock(&id);
            if lock::is_held(&lock_path).map_err(Error::io("inspect", &lock_path))? {
                listing.nodes.push(record);
            }
        }
        listing.nodes.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(listing)
    }

    /// Removes the records and lock files of dead nodes, returning their ids.
    ///
    /// Each is removed only while holding its lock, so a live node's files
    /// are never touched, whatever the timing.
    pub fn collect_dead(&self) -> Result<Vec<Uuid>> {
        let mut collected = Vec::new();
        for (id, record_path) in self.record_files()? {
            let lock_path = self.node_lock(&id);
            let lock = match lock::open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open", &lock_path)(e)),
            };
            if lock::try_exclusive(&lock).map_err(Error::io("lock", &lock_path))? {
                let _ = fs::remove_file(&record_path);
                let _ = fs::remove_file(&lock_path);
                collected.push(id);
            }
        }
        Ok(collected)
    }

    /// `(id, path)` of every `nodes/<uuid>.json`; temp files and strays are ignored.
    fn record_files(&self) -> Result<Vec<(Uuid, PathBuf)>> {
        let dir = self.nodes_dir();
        let entries = fs::read_dir(&dir).map_err(Error::io("read", &dir))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("read", &dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if let Ok(id) = stem.parse::<Uuid>() {
                files.push((id, entry.path()));
            }
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Discovery, Role};

    fn mesh() -> (tempfile::TempDir, MeshDir) {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();
        (tmp, mesh)
    }

    #[test]
    fn a_published_record_lives_as_long_as_its_guard() {
        let (_tmp, mesh) = mesh();
        let mut record = NodeRecord::new(Role::Module, "echo");
        record.services = vec!["echo".into()];
        let guard = mesh.publish(&record).unwrap();
        assert_eq!(mesh.list().unwrap().nodes, [record.clone()]);
        assert_eq!(mesh.resolve("echo").unwrap(), Some(record.clone()));
        assert!(matches!(mesh.publish(&record), Err(Error::IdInUse { .. })));
        drop(guard);
        assert!(mesh.list().unwrap().nodes.is_empty());
        assert_eq!(fs::read_dir(mesh.nodes_dir()).unwrap().count(), 0, "no files left");
    }

    #[test]
    fn dead_records_are_ignored_then_collected() {
        let (_tmp, mesh) = mesh();
        let record = NodeRecord::new(Role::Frontend, "nvim");
        // A record whose lock nobody holds: its writer died.
        record::write_atomic(&mesh.node_record(&record.id), &record).unwrap();
        lock::open(&mesh.node_lock(&record.id)).unwrap();
        let live = NodeRecord::new(Role::Frontend, "live");
        let _guard = mesh.publish(&live).unwrap();

        assert_eq!(mesh.list().unwrap().nodes, std::slice::from_ref(&live));
        assert_eq!(mesh.collect_dead().unwrap(), [record.id]);
        assert!(!mesh.node_record(&record.id).exists());
        assert!(!mesh.node_lock(&record.id).exists());
        assert!(mesh.node_record(&live.id).exists(), "a live record is never collected");
    }

    #[test]
    fn unreadable_records_are_skipped_and_the_rest_listed() {
        let (_tmp, mesh) = mesh();
        let live = NodeRecord::new(Role::Module, "echo");
        let _guard = mesh.publish(&live).unwrap();
        let bad = Uuid::new_v4();
        fs::write(mesh.node_record(&bad), b"{\"format\":1,").unwrap();
        let listing = mesh.list().unwrap();
        assert_eq!(listing.nodes, [live]);
        assert_eq!(listing.skipped.len(), 1);
        assert!(listing.skipped[0].to_string().contains("truncated JSON"), "{}", listing.skipped[0]);
    }
}
