//! Publishing node records, and listing the live ones.

use std::{
    fs::{self, File},
    io,
    path::PathBuf,
};

use uuid::Uuid;

use crate::{
    Error, MeshDir, NodeRecord, Result,
    file::{self, Record},
    lock, record,
};

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
        let lock = lock::open(&lock_path).map_err(Error::lock("create", &lock_path))?;
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
            let record = match file::read_record(&path) {
                Ok(Record::Bytes(bytes)) => NodeRecord::parse(&bytes),
                // Removed since the directory was read: its node just left.
                Ok(Record::Missing) => continue,
                Ok(Record::Unusable(reason)) => Err(reason),
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
            match lock::is_held(&lock_path) {
                Ok(true) => listing.nodes.push(record),
                Ok(false) => {}
                // No polis process can hold it: its node is not alive.
                Err(e) if file::is_not_regular(&e) => {
                    listing.skipped.push(Skipped { path: lock_path, reason: e.to_string() });
                }
                Err(e) => return Err(Error::io("inspect", &lock_path)(e)),
            }
        }
        // `router.json` is a record too; its trouble is reported here, where
        // a listing says what it could not read.
        if let Err(skipped) = self.read_router()? {
            listing.skipped.push(skipped);
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
                // Not ours to lock, so not ours to remove: listings report it.
                Err(e) if file::is_not_regular(&e) => continue,
                Err(e) => return Err(Error::io("open", &lock_path)(e)),
            };
            if lock::try_exclusive(&lock).map_err(Error::io("lock", &lock_path))? {
                // A directory in a record's place stays, and is not counted.
                let removed = match fs::remove_file(&record_path) {
                    Err(e) => e.kind() == io::ErrorKind::NotFound,
                    Ok(()) => true,
                };
                let _ = fs::remove_file(&lock_path);
                if removed {
                    collected.push(id);
                }
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

    /// The reasons in a listing's skips, by file name.
    fn reasons(listing: &Listing) -> Vec<(String, String)> {
        let mut reasons: Vec<_> = listing
            .skipped
            .iter()
            .map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), s.reason.clone()))
            .collect();
        reasons.sort();
        reasons
    }

    #[test]
    fn planted_records_are_skipped_without_blocking() {
        let (_tmp, mesh) = mesh();
        let mut live = NodeRecord::new(Role::Module, "echo");
        live.services = vec!["echo".into()];
        let _guard = mesh.publish(&live).unwrap();
        let (fifo, dir, big) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        file::testing::mkfifo(&mesh.node_record(&fifo));
        fs::create_dir(mesh.node_record(&dir)).unwrap();
        fs::create_dir(mesh.nodes_dir().join("x.json")).unwrap();
        // A real record in front of 10 MiB of padding: it must not be read.
        let mut bytes = NodeRecord { id: big, ..live.clone() }.to_json().into_bytes();
        bytes.resize(10 << 20, b' ');
        fs::write(mesh.node_record(&big), bytes).unwrap();

        let listing = {
            let mesh = mesh.clone();
            file::testing::finishes("listing", move || mesh.list().unwrap())
        };
        assert_eq!(listing.nodes, std::slice::from_ref(&live));
        let mut want = vec![
            (format!("{fifo}.json"), "not a regular file but a FIFO".to_owned()),
            (format!("{dir}.json"), "not a regular file but a directory".to_owned()),
            (format!("{big}.json"), "too large (10485760 bytes; at most 65536 are read)".to_owned()),
        ];
        want.sort();
        assert_eq!(reasons(&listing), want, "x.json is no record name, so it is not listed");

        let found = {
            let mesh = mesh.clone();
            file::testing::finishes("resolving", move || mesh.resolve("echo").unwrap())
        };
        assert_eq!(found.as_ref(), Some(&live));
        let mut collected = {
            let mesh = mesh.clone();
            file::testing::finishes("collecting", move || mesh.collect_dead().unwrap())
        };
        collected.sort();
        let mut want = vec![fifo, big];
        want.sort();
        assert_eq!(collected, want, "dead records are collected, whatever they are, but a directory");
        assert!(mesh.node_record(&dir).is_dir() && mesh.node_record(&live.id).is_file());
    }

    #[test]
    fn a_planted_lock_is_skipped_without_blocking() {
        let (_tmp, mesh) = mesh();
        let record = NodeRecord::new(Role::Module, "echo");
        record::write_atomic(&mesh.node_record(&record.id), &record).unwrap();
        file::testing::mkfifo(&mesh.node_lock(&record.id));

        let listing = {
            let mesh = mesh.clone();
            file::testing::finishes("listing", move || mesh.list().unwrap())
        };
        assert!(listing.nodes.is_empty());
        let want = [(format!("{}.lock", record.id), "not a regular file but a FIFO".to_owned())];
        assert_eq!(reasons(&listing), want);

        let err = {
            let (mesh, id) = (mesh.clone(), record.id);
            file::testing::finishes("probing", move || mesh.is_live(&id).unwrap_err())
        };
        assert!(matches!(err, Error::NotAFile { what: "a FIFO", .. }) && err.is_refusal(), "{err}");
        let collected = {
            let mesh = mesh.clone();
            file::testing::finishes("collecting", move || mesh.collect_dead().unwrap())
        };
        assert!(collected.is_empty(), "a file that cannot be locked is not removed");
        let err = file::testing::finishes("publishing", move || mesh.publish(&record).unwrap_err());
        assert!(matches!(err, Error::NotAFile { what: "a FIFO", .. }), "{err}");
        assert!(err.to_string().ends_with(".lock is a FIFO, not a regular file; remove it"), "{err}");
    }
}
