//! Router election: holding `router.lock` is being the router.
//!
//! Only candidates touch `router.lock`; readers judge the router's liveness
//! by its node lock instead. So a failed try is always a real loss, never a
//! collision with someone merely looking. The lock file's content is the
//! last epoch, so each new holder can count one up, across any number of
//! crashes.

use std::{
    fs::{self, File},
    io::{Seek, SeekFrom, Write},
    path::PathBuf,
};

use crate::{Error, MeshDir, NodeRecord, Result, Skipped, file, lock, record};

/// The outcome of a non-blocking try for the router office.
#[derive(Debug)]
pub enum Campaign<T> {
    /// This process is the router now.
    Won(T),
    /// Another live process holds the office.
    Lost,
}

/// Holding the router office. Dropping it resigns: `router.json` and
/// `router.sock` are removed while the lock is still held, then the lock is
/// released, last.
#[derive(Debug)]
pub struct Term {
    mesh: MeshDir,
    epoch: u64,
    // Released when this field drops, after Drop::drop has cleaned up.
    lock: File,
}

impl Term {
    /// This term's epoch: one more than the previous router's.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The mesh this term governs.
    pub fn mesh(&self) -> &MeshDir {
        &self.mesh
    }

    /// Removes a socket file left by a dead router, so that a new one can bind.
    pub fn remove_stale_socket(&self) -> Result<()> {
        let path = self.mesh.router_socket();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Writes `router.json`: `record` with this term's epoch. Call it only
    /// once the socket listens, and with the router's node lock held (see
    /// [`crate::Discovery::publish`]): readers judge liveness by that lock.
    pub fn publish_router(&self, record: &NodeRecord) -> Result<()> {
        let mut record = record.clone();
        record.epoch = Some(self.epoch);
        record::write_atomic(&self.mesh.router_record(), &record)
    }
}

impl Term {
    /// Removes `router.json`, the first step of leaving office: from now on
    /// no frontend finds this router, while it winds down its modules.
    pub fn withdraw_record(&self) {
        let _ = fs::remove_file(self.mesh.router_record());
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.mesh.router_record());
        let _ = fs::remove_file(self.mesh.router_socket());
        let _ = &self.lock;
    }
}

impl MeshDir {
    pub(crate) fn try_take_office(&self) -> Result<Campaign<Term>> {
        let path = self.router_lock();
        let file = lock::open(&path).map_err(Error::lock("open", &path))?;
        if !lock::try_exclusive(&file).map_err(Error::io("lock", &path))? {
            return Ok(Campaign::Lost);
        }
        self.take_office(file).map(Campaign::Won)
    }

    pub(crate) fn wait_for_office(&self) -> Result<Term> {
        let path = self.router_lock();
        let file = lock::open(&path).map_err(Error::lock("open", &path))?;
        file.lock().map_err(Error::io("lock", &path))?;
        self.take_office(file)
    }

    /// With the lock held: counts the epoch one up and records it.
    fn take_office(&self, mut file: File) -> Result<Term> {
        let path = self.router_lock();
        let unreadable = |why: &dyn std::fmt::Display| {
            tracing::warn!("{} held no epoch number ({why}); counting from 0", path.display());
            0
        };
        let previous =
            match file::read_bounded(&file, file::MAX_LOCK_CONTENT).map_err(Error::io("read", &path))? {
                file::Record::Bytes(bytes) => match String::from_utf8_lossy(&bytes).trim() {
                    "" => 0,
                    t => t.parse::<u64>().unwrap_or_else(|_| unreadable(&format_args!("{t:?}"))),
                },
                file::Record::Unusable(reason) => unreadable(&reason),
                file::Record::Missing => 0,
            };
        let epoch = previous + 1;
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{epoch}")
        };
        write(&mut file).map_err(Error::io("write", &path))?;
        Ok(Term { mesh: self.clone(), epoch, lock: file })
    }

    /// The live router's record: `router.json`, if its node lock is held.
    pub(crate) fn live_router(&self) -> Result<Option<NodeRecord>> {
        Ok(self.read_router()?.unwrap_or_else(|skipped| {
            // Listings report it as a warning; here it is only no router.
            tracing::debug!("{skipped}");
            None
        }))
    }

    /// `router.json` if its node lock is held, `None` if it is missing or
    /// dead, and why it was skipped if it cannot be used.
    pub(crate) fn read_router(&self) -> Result<std::result::Result<Option<NodeRecord>, Skipped>> {
        let path = self.router_record();
        let skip = |path: PathBuf, reason: String| Ok(Err(Skipped { path, reason }));
        let record = match file::read_record(&path).map_err(Error::io("read", &path))? {
            file::Record::Missing => return Ok(Ok(None)),
            file::Record::Unusable(reason) => return skip(path, reason),
            file::Record::Bytes(bytes) => match NodeRecord::parse(&bytes) {
                Ok(r) => r,
                Err(reason) => return skip(path, reason),
            },
        };
        let node_lock = self.node_lock(&record.id);
        match lock::is_held(&node_lock) {
            Ok(held) => Ok(Ok(held.then_some(record))),
            Err(e) if file::is_not_regular(&e) => skip(node_lock, e.to_string()),
            Err(e) => Err(Error::io("inspect", &node_lock)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Discovery, Role};

    #[test]
    fn one_winner_and_the_epoch_counts_up_across_terms() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();

        let Campaign::Won(first) = mesh.campaign().unwrap() else { panic!("an empty mesh is won") };
        assert_eq!(first.epoch(), 1);
        assert!(matches!(mesh.campaign().unwrap(), Campaign::Lost));

        let record = NodeRecord::new(Role::Router, "router");
        let guard = mesh.publish(&record).unwrap();
        first.publish_router(&record).unwrap();
        let live = mesh.current_router().unwrap().unwrap();
        assert_eq!((live.id, live.epoch), (record.id, Some(1)));
        assert_eq!(mesh.resolve("router").unwrap(), Some(live));

        drop(guard);
        assert_eq!(mesh.current_router().unwrap(), None, "a router whose node lock is free is dead");
        drop(first);
        assert!(!mesh.router_record().exists());

        let Campaign::Won(second) = mesh.campaign().unwrap() else { panic!("a free office is won") };
        assert_eq!(second.epoch(), 2);
    }

    #[test]
    fn a_standby_takes_office_when_the_router_resigns() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();
        let Campaign::Won(first) = mesh.campaign().unwrap() else { panic!("an empty mesh is won") };
        let standby = {
            let mesh = mesh.clone();
            std::thread::spawn(move || mesh.standby().unwrap().epoch())
        };
        drop(first);
        assert_eq!(standby.join().unwrap(), 2);
    }

    #[test]
    fn a_planted_router_record_is_skipped_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();
        file::testing::mkfifo(&mesh.router_record());

        let router = {
            let mesh = mesh.clone();
            file::testing::finishes("reading router.json", move || mesh.current_router().unwrap())
        };
        assert_eq!(router, None);
        let resolved = {
            let mesh = mesh.clone();
            file::testing::finishes("resolving the router", move || mesh.resolve("router").unwrap())
        };
        assert_eq!(resolved, None);
        let listing = {
            let mesh = mesh.clone();
            file::testing::finishes("listing", move || mesh.list().unwrap())
        };
        let skipped: Vec<_> = listing.skipped.iter().map(ToString::to_string).collect();
        let want = format!("skipping {}: not a regular file but a FIFO", mesh.router_record().display());
        assert_eq!(skipped, [want]);
    }

    #[test]
    fn a_planted_router_lock_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("m")).unwrap();
        file::testing::mkfifo(&mesh.router_lock());
        let err = {
            let mesh = mesh.clone();
            file::testing::finishes("campaigning", move || mesh.campaign().unwrap_err())
        };
        assert!(matches!(err, Error::NotAFile { what: "a FIFO", .. }) && err.is_refusal(), "{err}");
        let err = file::testing::finishes("standing by", move || mesh.standby().unwrap_err());
        assert!(matches!(err, Error::NotAFile { what: "a FIFO", .. }), "{err}");
    }
}
