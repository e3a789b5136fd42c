//! The mesh directory: where every node of a mesh publishes itself, where
//! the router is elected, and where names are resolved.
//!
//! The directory format is a contract (DESIGN.md §4): `router.lock`,
//! `router.json`, `router.sock`, `spawn.lock`, `nodes/<id>.json` with
//! `nodes/<id>.lock`, and `logs/`. Liveness is a held lock, never a heartbeat
//! or a pid: the kernel releases a lock the moment its holder dies.
//!
//! This crate knows files and locks. It must not speak gRPC or start
//! processes; it depends on no other polis crate.
//!
//! The directory is reached through the [`Discovery`] trait (blocking, the
//! directory's own view), and every backend through [`AsyncDiscovery`],
//! which the etcd backend (`polis-etcd`) implements too.

mod backend;
mod dir;
mod election;
mod error;
mod file;
pub mod locate;
mod lock;
mod nodes;
mod record;
mod watch;

pub use backend::{AsyncDiscovery, Office};
pub use dir::{MeshDir, default_mesh_dir};
pub use election::{Campaign, Term};
pub use error::Error;
pub use nodes::{Listing, NodeGuard, Skipped};
pub use record::{NodeRecord, RECORD_FORMAT, Role};
pub use watch::DirWatch;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Discovery of the nodes of one mesh, and election of its router.
///
/// The mesh directory ([`MeshDir`]) is the first implementation. The trait is
/// kept narrow: publishing with a liveness guard, listing, resolving,
/// watching, and campaigning for the router.
pub trait Discovery {
    /// Keeps a published record alive; dropping it unpublishes the record.
    type Guard;
    /// Proof of holding the router office; dropping it resigns.
    type Term;

    /// Publishes `record`, live for as long as the guard is kept.
    fn publish(&self, record: &NodeRecord) -> Result<Self::Guard>;
    /// Every live record, and the records skipped as unreadable.
    fn list(&self) -> Result<Listing>;
    /// The live record serving `name`: the router's for `"router"`.
    fn resolve(&self, name: &str) -> Result<Option<NodeRecord>>;
    /// The record of the router in office, if it is live and published.
    fn current_router(&self) -> Result<Option<NodeRecord>>;
    /// Tries to take the router office without waiting.
    fn campaign(&self) -> Result<Campaign<Self::Term>>;
    /// Waits (blocking the thread) until the router office is free, and takes it.
    fn standby(&self) -> Result<Self::Term>;
    /// Wakes on changes to the published records.
    fn watch(&self) -> Result<DirWatch>;
    /// Whether the node with this id is alive.
    fn is_live(&self, id: &uuid::Uuid) -> Result<bool>;
}

impl Discovery for MeshDir {
    type Guard = NodeGuard;
    type Term = Term;

    fn publish(&self, record: &NodeRecord) -> Result<NodeGuard> {
        self.publish_node(record)
    }

    fn list(&self) -> Result<Listing> {
        self.list_nodes()
    }

    fn resolve(&self, name: &str) -> Result<Option<NodeRecord>> {
        if name == "router" {
            return self.live_router();
        }
        // The newest live node serving the name, should there be several.
        let nodes = self.list_nodes()?.nodes;
        Ok(nodes.into_iter().rev().find(|n| n.services.iter().any(|s| s == name)))
    }

    fn current_router(&self) -> Result<Option<NodeRecord>> {
        self.live_router()
    }

    fn campaign(&self) -> Result<Campaign<Term>> {
        self.try_take_office()
    }

    fn standby(&self) -> Result<Term> {
        self.wait_for_office()
    }

    fn watch(&self) -> Result<DirWatch> {
        DirWatch::new(&[self.root().to_owned(), self.nodes_dir()])
    }

    fn is_live(&self, id: &uuid::Uuid) -> Result<bool> {
        let path = self.node_lock(id);
        lock::is_held(&path).map_err(Error::lock("inspect", &path))
    }
}
