//! The mesh on etcd: a [`polis_discovery::AsyncDiscovery`] backend for a
//! mesh that spans machines.
//!
//! Under the mesh's prefix (`--discovery etcd://…/PREFIX`):
//! - `PREFIX/nodes/<id>`: a node's record (the same JSON as a directory's
//!   `nodes/<id>.json`), put with the node's lease, so that it vanishes
//!   when the lease is revoked (the node leaves) or expires (it died, or
//!   lost etcd).
//! - `PREFIX/router`: the router election (etcd's election API). The
//!   leader key's value is the router's record; its create revision is the
//!   router's epoch, the fencing token: a later term always has a greater one.
//!
//! This crate knows etcd and records; like `polis-discovery` it must not
//! speak polis's gRPC or start processes.

mod address;
mod lease;

use std::{future::Future, sync::Arc};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, LeaderKey, ResignOptions, WatchOptions};
use polis_discovery::{AsyncDiscovery, Error, Listing, NodeRecord, Office, Result, Skipped};
use tokio::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use address::{Address, DEFAULT_TTL};
use lease::Lease;

/// A connection to the etcd cluster of one mesh.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    address: Address,
    // This node's lease, granted at the first publish or campaign, and
    // granted anew once lost.
    lease: Arc<Mutex<Option<Lease>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects to the members of `address`; an unreachable cluster is an
    /// `UNAVAILABLE` error here.
    pub async fn connect(address: Address) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(address.ttl)
            .with_keep_alive(address.ttl / 2, address.ttl / 2)
            .with_require_leader(true);
        let client =
            Client::connect(&address.endpoints, Some(options)).await.map_err(unavailable(&address))?;
        Ok(Self { client, address, lease: Arc::new(Mutex::new(None)) })
    }

    /// The address this connection was made with.
    pub fn address(&self) -> &Address {
        &self.address
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.address.prefix)
    }

    fn fail(&self) -> impl Fn(etcd_client::Error) -> Error + '_ {
        unavailable(&self.address)
    }

    /// One request, tried again while members fail to answer (a member
    /// that died stays in the client's list, and a try may pick it), all
    /// within the TTL: etcd without quorum, or no member answering, is
    /// `UNAVAILABLE` then, not a hang. There is no client-wide timeout: a
    /// campaign waits as long as another holds the office.
    async fn timed<T, F, Fut>(&self, mut request: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.address.ttl;
        loop {
            match tokio::time::timeout_at(deadline, request(self.client.clone())).await {
                Err(_) => return Err(self.no_answer()),
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!("etcd: {e}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return Err(self.fail()(e)),
            }
        }
    }

    fn no_answer(&self) -> Error {
        Error::Unavailable {
            backend: "etcd",
            at: self.address.members(),
            reason: format!("no answer within {:?} (is a quorum of members up?)", self.address.ttl),
        }
    }

    /// This node's lease, granting one if it has none or lost it.
    async fn lease(&self) -> Result<Lease> {
        let mut held = self.lease.lock().await;
        if let Some(lease) = held.as_ref().filter(|l| !l.lost.is_cancelled()) {
            return Ok(lease.clone());
        }
        let ttl = self.address.ttl;
        let lease = self.timed(|client| async move { Lease::grant(&client, ttl).await }).await?;
        *held = Some(lease.clone());
        Ok(lease)
    }

    /// The router's record, with its epoch; `None` while nobody is elected.
    pub async fn current_router(&self) -> Result<Option<NodeRecord>> {
        let name = self.key("router");
        let leader = self
            .timed(|mut client| {
                let name = name.clone();
                async move {
                    match client.leader(name).await {
                        Ok(reply) => Ok(Some(reply)),
                        // The election's own "nobody is elected", not the
                        // server's "etcdserver: no leader" of a lost quorum.
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.message().contains("election: no leader") =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        let Some(reply) = leader else { return Ok(None) };
        Ok(reply.kv().and_then(|kv| {
            let mut record = NodeRecord::parse(kv.value()).ok()?;
            record.epoch = Some(kv.create_revision() as u64);
            Some(record)
        }))
    }

    /// Puts `record` in place of the one `guard` keeps (the same node: its
    /// id names the key), under the same lease.
    pub async fn update(&self, guard: &EtcdGuard, record: &NodeRecord) -> Result<()> {
        let json = serde_json::to_vec(record)
            .map_err(|e| self.fail()(etcd_client::Error::InvalidArgs(e.to_string())))?;
        let (key, lease) = (guard.key.clone(), guard.lease.id);
        self.timed(|mut client| {
            let (key, json) = (key.clone(), json.clone());
            async move { client.put(key, json, Some(etcd_client::PutOptions::new().with_lease(lease))).await }
        })
        .await?;
        Ok(())
    }

    /// Lets this node's lease go: its records vanish now, not at expiry.
    pub async fn close(&self) {
        if let Some(lease) = self.lease.lock().await.take() {
            lease.lost.cancel();
            let mut client = self.client.clone();
            let _ = tokio::time::timeout(self.address.ttl, client.lease_revoke(lease.id)).await;
        }
    }
}

/// Whether `error` says a member could not be reached (or had no leader
/// for a moment), so that another try may succeed.
fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        }
        _ => false,
    }
}

fn unavailable(address: &Address) -> impl Fn(etcd_client::Error) -> Error + '_ {
    move |e| Error::Unavailable { backend: "etcd", at: address.members(), reason: e.to_string() }
}

/// A record published in etcd; dropping it deletes the key (the lease would
/// take it anyway, at expiry).
pub struct EtcdGuard {
    client: Client,
    key: String,
    /// The lease the record is put with, and its token, cancelled once the
    /// lease is lost (the record is gone, or going, with it).
    lease: Lease,
}

impl EtcdGuard {
    /// Cancelled once the lease the record lives on is lost (not renewed in
    /// time, or let go): the record vanishes with it, and must be published
    /// again, under a new lease, to be seen.
    pub fn lost(&self) -> CancellationToken {
        self.lease.lost.clone()
    }

    /// Lets go without deleting the key, which is left to its lease: for a
    /// record whose lease is lost, about to be published again under a new
    /// one (a delete sent now could land after that put).
    pub fn leave_to_lease(mut self) {
        self.key.clear();
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let (mut client, key) = (self.client.clone(), std::mem::take(&mut self.key));
        if key.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client.delete(key, None).await });
        }
    }
}

impl std::fmt::Debug for EtcdGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdGuard").field("key", &self.key).finish_non_exhaustive()
    }
}

/// The router office in etcd: the election's leader key.
pub struct EtcdTerm {
    client: Client,
    ttl: std::time::Duration,
    leader: Option<LeaderKey>,
    epoch: u64,
    lost: CancellationToken,
}

impl std::fmt::Debug for EtcdTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTerm").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl EtcdTerm {
    /// Resigns now, so that a candidate standing by takes office at once
    /// rather than at lease expiry. Bounded by the TTL: without quorum
    /// there is nothing to resign from, and the lease lapses anyway.
    pub async fn resign(mut self) {
        self.lost.cancel();
        if let Some(leader) = self.leader.take() {
            let resign = self.client.resign(Some(ResignOptions::new().with_leader(leader)));
            let _ = tokio::time::timeout(self.ttl, resign).await;
        }
    }
}

impl Office for EtcdTerm {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Drop for EtcdTerm {
    fn drop(&mut self) {
        self.lost.cancel();
        if let (Some(leader), Ok(runtime)) = (self.leader.take(), tokio::runtime::Handle::try_current()) {
            let mut client = self.client.clone();
            runtime.spawn(async move { client.resign(Some(ResignOptions::new().with_leader(leader))).await });
        }
    }
}

impl AsyncDiscovery for Etcd {
    type Guard = EtcdGuard;
    type Term = EtcdTerm;
    type Watch = ReceiverStream<()>;

    async fn publish(&self, record: &NodeRecord) -> Result<EtcdGuard> {
        let lease = self.lease().await?;
        let key = self.key(&format!("nodes/{}", record.id));
        let json = serde_json::to_vec(record)
            .map_err(|e| self.fail()(etcd_client::Error::InvalidArgs(e.to_string())))?;
        let client = self.client.clone();
        self.timed(|mut client| {
            let (key, json) = (key.clone(), json.clone());
            async move { client.put(key, json, Some(etcd_client::PutOptions::new().with_lease(lease.id))).await }
        })
        .await?;
        Ok(EtcdGuard { client, key, lease })
    }

    async fn list(&self) -> Result<Listing> {
        let key = self.key("nodes/");
        let reply = self
            .timed(|mut client| {
                let key = key.clone();
                async move { client.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut listing = Listing::default();
        // Oldest first, as the directory lists them: etcd returns keys in
        // key order, and the create revision is the order of publication.
        let mut kvs: Vec<_> = reply.kvs().iter().collect();
        kvs.sort_by_key(|kv| kv.create_revision());
        for kv in kvs {
            match NodeRecord::parse(kv.value()) {
                Ok(record) => listing.nodes.push(record),
                Err(reason) => listing
                    .skipped
                    .push(Skipped { path: String::from_utf8_lossy(kv.key()).into_owned().into(), reason }),
            }
        }
        Ok(listing)
    }

    async fn resolve(&self, name: &str) -> Result<Option<NodeRecord>> {
        if name == "router" {
            return self.current_router().await;
        }
        let nodes = self.list().await?.nodes;
        Ok(nodes.into_iter().rev().find(|n| n.services.iter().any(|s| s == name)))
    }

    async fn campaign(&self, record: &NodeRecord) -> Result<EtcdTerm> {
        let lease = self.lease().await?;
        let json = serde_json::to_vec(record)
            .map_err(|e| self.fail()(etcd_client::Error::InvalidArgs(e.to_string())))?;
        let mut client = self.client.clone();
        let campaign = client.campaign(self.key("router"), json, lease.id);
        let won = tokio::select! {
            won = campaign => won.map_err(self.fail())?,
            () = lease.lost.cancelled() => {
                return Err(Error::Unavailable {
                    backend: "etcd",
                    at: self.address.members(),
                    reason: "the lease was lost while campaigning".into(),
                })
            }
        };
        let leader = won.leader().cloned().ok_or_else(|| {
            self.fail()(etcd_client::Error::ElectError("campaign answered without a leader key".into()))
        })?;
        let lost = lease.lost.child_token();
        // The office is lost with the lease, and also if the leader key is
        // deleted under us (by an operator, or a compaction of the election).
        tokio::spawn(watch_key(client.clone(), leader.key().to_vec(), lost.clone()));
        tracing::info!(epoch = leader.rev(), "elected through etcd");
        Ok(EtcdTerm { client, ttl: self.address.ttl, epoch: leader.rev() as u64, leader: Some(leader), lost })
    }

    /// Returns once etcd has created the watch, so that every change after
    /// this returns is reported: "watch, then look" misses nothing. The
    /// stream ends when the watch does (etcd cancelled it, or the stream
    /// broke): a caller that still waits must look by other means.
    async fn watch(&self) -> Result<ReceiverStream<()>> {
        let mut events = self
            .timed(|mut client| {
                let prefix = self.address.prefix.clone() + "/";
                async move {
                    let mut events = client.watch(prefix, Some(WatchOptions::new().with_prefix())).await?;
                    // The stream is open before the server has read the
                    // create request; its first answer says it is in place.
                    match events.message().await? {
                        Some(reply) if reply.created() && !reply.canceled() => Ok(events),
                        _ => Err(etcd_client::Error::WatchError("the watch was not created".into())),
                    }
                }
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Ok(Some(reply)) = events.message().await {
                if reply.canceled() {
                    break;
                }
                if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                    break;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Cancels `lost` once `key` is deleted.
async fn watch_key(mut client: Client, key: Vec<u8>, lost: CancellationToken) {
    let Ok(mut events) = client.watch(key, None).await else { return };
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            message = events.message() => match message {
                Ok(Some(reply)) if reply.events().iter().any(|e| e.event_type() == EventType::Delete) => {
                    tracing::warn!("the router's leader key was deleted; leaving office");
                    lost.cancel();
                    return;
                }
                Ok(Some(_)) => {}
                // The watch broke: the lease's own keep-alive judges the rest.
                Ok(None) | Err(_) => return,
            },
        }
    }
}
