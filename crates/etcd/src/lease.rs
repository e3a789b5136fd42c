//! A node's lease: granted once, kept alive while the node lives, and
//! judged lost *before* etcd could expire it.
//!
//! Every renewal is timed from the moment it was sent: etcd extends the
//! lease by its TTL from when it *received* the renewal, later, so
//! `sent + TTL` never passes the server's own expiry. The holder is told
//! the lease is lost at [`SAFETY`] of that, so a router stops taking calls
//! while its lease (and with it its leader key) still stands, and no other
//! candidate can have been elected yet.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The part of a renewal's TTL the holder relies on.
const SAFETY: f64 = 0.8;

/// A granted lease and the token cancelled when it is lost.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) id: i64,
    pub(crate) lost: CancellationToken,
}

impl Lease {
    /// Grants a lease of `ttl` and keeps it alive on a task of its own
    /// until `lost` is cancelled (by this task, or by the holder to let it go).
    pub(crate) async fn grant(client: &Client, ttl: Duration) -> Result<Self, etcd_client::Error> {
        let mut client = client.clone();
        let sent = Instant::now();
        let granted = client.lease_grant(ttl.as_secs().max(1) as i64, None).await?;
        let lease = Self { id: granted.id(), lost: CancellationToken::new() };
        let deadline = sent + ttl.mul_f64(SAFETY);
        tokio::spawn(keep_alive(client, lease.clone(), ttl, deadline));
        Ok(lease)
    }
}

async fn keep_alive(mut client: Client, lease: Lease, ttl: Duration, mut deadline: Instant) {
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl / 4) => {}
            () = lease.lost.cancelled() => break,
        }
        loop {
            let sent = Instant::now();
            match tokio::time::timeout_at(deadline, renew(&mut client, lease.id, &mut stream)).await {
                Err(_) => {
                    tracing::warn!(lease = lease.id, "lease not renewed in time; giving up the office");
                    lease.lost.cancel();
                    return;
                }
                Ok(Ok(granted)) if granted > 0 => {
                    deadline = sent + Duration::from_secs(granted as u64).mul_f64(SAFETY);
                    break;
                }
                Ok(Ok(_)) => {
                    tracing::warn!(lease = lease.id, "lease expired at etcd");
                    lease.lost.cancel();
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(lease = lease.id, "lease renewal failed ({e}); retrying");
                    stream = None;
                    tokio::time::sleep(Duration::from_millis(100).min(ttl / 10)).await;
                }
            }
        }
    }
    // Let go on purpose: revoke, so that the records go at once.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease.id)).await;
}

/// One renewal; the TTL etcd granted (0: the lease is gone).
async fn renew(
    client: &mut Client,
    id: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<i64, etcd_client::Error> {
    if stream.is_none() {
        *stream = Some(client.lease_keep_alive(id).await?);
    }
    let Some((keeper, replies)) = stream.as_mut() else { unreachable!("set above") };
    keeper.keep_alive().await?;
    match replies.message().await? {
        Some(reply) => Ok(reply.ttl()),
        None => Err(etcd_client::Error::LeaseKeepAliveError("the keep-alive stream ended".into())),
    }
}
