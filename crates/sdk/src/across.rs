//! Re-attaching across machines: on a mesh whose directory is etcd, the
//! next router may run on any machine. The router that spawned the module
//! told it where to look and how to prove itself (`POLIS_DISCOVERY`,
//! `POLIS_TOKEN_FILE`, `POLIS_TLS_CA`); with the `etcd` feature the module
//! waits for a router in office in etcd other than the lost one, dials its
//! `tcp:`/`tls:` endpoint with the mesh's token, and attaches over
//! `Router.AttachModule`, keeping its state and subscriptions exactly as on
//! its own machine. Without the feature it says once that it cannot, and
//! looks only in this machine's mesh directory, as a module always did.
//!
//! With the feature, such a module also publishes its node record in etcd
//! ([`Published`]), under a lease of its own kept alive while it runs and
//! revoked when it exits: a router on any machine then sees that a module
//! serving the name is alive, and on its way back after its router died,
//! and waits for it instead of starting another (polis-node's
//! `HostConfig::sightings`).

use std::path::PathBuf;

#[cfg(not(feature = "etcd"))]
use crate::{Module, links::AfterLinkLoss};

/// Where a module on a mesh across machines finds the next router, as the
/// router that spawned it said.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// `POLIS_DISCOVERY`: `etcd://HOST:PORT[,…]/PREFIX[?ttl=SECONDS]`.
    url: String,
    /// `POLIS_TOKEN_FILE`: the mesh's token, read when it is needed (so
    /// that a token replaced meanwhile is the one sent).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    token_file: Option<PathBuf>,
    /// `POLIS_TLS_CA`: the mesh CA, when routers serve TLS.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    tls_ca: Option<PathBuf>,
}

impl Remote {
    /// From the environment: `Some` when `POLIS_DISCOVERY` is an etcd
    /// address (unset, empty or `dir` is the mesh directory alone).
    pub(crate) fn from_env() -> Option<Self> {
        let url = std::env::var("POLIS_DISCOVERY").ok().filter(|u| u.starts_with("etcd://"))?;
        let path = |var| std::env::var_os(var).filter(|p| !p.is_empty()).map(PathBuf::from);
        Some(Self { url, token_file: path("POLIS_TOKEN_FILE"), tls_ca: path("POLIS_TLS_CA") })
    }
}

#[cfg(not(feature = "etcd"))]
impl Module {
    /// Without the `etcd` feature: says (once) that this module cannot
    /// follow a router to another machine, and looks for the next one in
    /// this machine's mesh directory only.
    pub(crate) async fn after_link_loss_remote(&self, remote: &Remote, old_router: &str) -> AfterLinkLoss {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "{}: cannot re-attach across machines: built without polis-sdk's `etcd` feature \
                 (POLIS_DISCOVERY is {}); looking for a router on this machine only",
                self.name, remote.url
            );
        });
        self.after_link_loss_local(old_router).await
    }
}

#[cfg(feature = "etcd")]
pub(crate) use etcd::Published;

#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use polis_discovery::{AsyncDiscovery, NodeRecord};
    use polis_etcd::{Address, Etcd};
    use polis_mesh::{
        dial::{self, DialError},
        tcp::Token,
        tls::ClientTls,
    };
    use tokio::time::Instant;
    use tokio_stream::StreamExt;

    use super::Remote;
    use crate::{Module, bridge::Bridge, links::AfterLinkLoss};

    /// How often the module looks again at a router it could not reach
    /// (not listening yet, or dead with its lease not lapsed).
    const RETRY: Duration = Duration::from_millis(50);
    /// How long it waits for a change in etcd before looking anyway.
    const LOOK_AGAIN: Duration = Duration::from_millis(250);

    /// How long a module waits before it tries etcd again, after it could
    /// not publish its record (etcd out of reach, or the lease lost).
    const PUBLISH_RETRY: Duration = Duration::from_secs(1);
    /// How long a module that exits gives etcd to revoke its lease. Beyond
    /// that the lease lapses by itself within its TTL.
    const REVOKE_WAIT: Duration = Duration::from_secs(1);

    /// This module's node record in etcd, kept by a task of its own: put
    /// under the module's own lease (so that it lives exactly as long as the
    /// process: revoked on a clean exit, lapsed within the TTL after a
    /// SIGKILL), updated when the module re-attaches to another router, and
    /// published again if the lease is lost. The module never waits for it:
    /// the first put happens in the background after the handshake, and
    /// etcd out of reach is said once on stderr, never fatal.
    pub(crate) struct Published {
        record: tokio::sync::watch::Sender<NodeRecord>,
        done: tokio_util::sync::CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Published {
        /// Starts publishing `record` in the etcd of `remote`.
        pub(crate) fn start(name: &str, remote: &Remote, record: NodeRecord) -> Self {
            let (tx, rx) = tokio::sync::watch::channel(record);
            let done = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(keep_published(name.to_owned(), remote.url.clone(), rx, done.clone()));
            Self { record: tx, done, task }
        }

        /// Puts `record` (the same node, attached to another router) in
        /// place of the published one.
        pub(crate) fn update(&self, record: NodeRecord) {
            self.record.send_replace(record);
        }

        /// Unpublishes now: the lease is revoked (bounded by [`REVOKE_WAIT`]),
        /// so the record is gone before the process is.
        pub(crate) async fn close(mut self) {
            self.done.cancel();
            if tokio::time::timeout(REVOKE_WAIT, &mut self.task).await.is_err() {
                self.task.abort();
            }
        }
    }

    impl Drop for Published {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// The task behind [`Published`]: connect, put, keep; on a lost lease
    /// put again; on `done`, revoke the lease and return.
    async fn keep_published(
        name: String,
        url: String,
        mut record: tokio::sync::watch::Receiver<NodeRecord>,
        done: tokio_util::sync::CancellationToken,
    ) {
        let mut said = false;
        let mut say = |why: String| {
            if !std::mem::replace(&mut said, true) {
                eprintln!(
                    "{name}: warning: not published in etcd ({why}); routers on other machines do not \
                     see this module until it is"
                );
            }
        };
        let address: Address = match url.parse() {
            Ok(address) => address,
            Err(e) => {
                let e: polis_discovery::Error = e;
                say(format!("POLIS_DISCOVERY: {e}"));
                return;
            }
        };
        let etcd = loop {
            match Etcd::connect(address.clone()).await {
                Ok(etcd) => break etcd,
                Err(e) => say(e.to_string()),
            }
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep(PUBLISH_RETRY) => {}
            }
        };
        'publish: while !done.is_cancelled() {
            let current = record.borrow_and_update().clone();
            let guard = tokio::select! {
                published = etcd.publish(&current) => published,
                () = done.cancelled() => break,
            };
            let guard = match guard {
                Ok(guard) => guard,
                Err(e) => {
                    say(e.to_string());
                    tokio::select! {
                        () = done.cancelled() => break,
                        () = tokio::time::sleep(PUBLISH_RETRY) => continue,
                    }
                }
            };
            let lost = guard.lost();
            loop {
                tokio::select! {
                    () = done.cancelled() => break 'publish,
                    () = lost.cancelled() => {
                        say("its lease was lost".into());
                        guard.leave_to_lease();
                        continue 'publish;
                    }
                    changed = record.changed() => {
                        if changed.is_err() {
                            break 'publish;
                        }
                        let current = record.borrow_and_update().clone();
                        if let Err(e) = etcd.update(&guard, &current).await {
                            say(e.to_string());
                        }
                    }
                }
            }
        }
        // The lease goes, and every record on it at once.
        etcd.close().await;
    }

    /// Why no bridge to a next router was made.
    enum NoRouter {
        /// None came within this long.
        Within(Duration),
        /// Refused, or impossible to ask: final.
        Refused(String),
    }

    impl Module {
        /// With the `etcd` feature: the next router in office in etcd, on
        /// whatever machine, attached over TCP (or TLS) with the token.
        pub(crate) async fn after_link_loss_remote(
            &self,
            remote: &Remote,
            old_router: &str,
        ) -> AfterLinkLoss {
            match self.next_router(remote, old_router).await {
                Ok(bridge) => AfterLinkLoss::Reattach(bridge),
                Err(NoRouter::Within(wait)) => {
                    eprintln!("{}: no router came within {wait:?}; exiting", self.name);
                    AfterLinkLoss::Exit
                }
                Err(NoRouter::Refused(why)) => AfterLinkLoss::Fail(why),
            }
        }

        /// Waits for a router in office other than `old_router` and
        /// dials it. The wait is [`Module::reattach_wait`] plus the lease
        /// TTL: a router that died keeps its office until its lease lapses.
        async fn next_router(&self, remote: &Remote, old_router: &str) -> Result<Bridge, NoRouter> {
            let address: Address = remote
                .url
                .parse()
                .map_err(|e: polis_discovery::Error| NoRouter::Refused(format!("POLIS_DISCOVERY: {e}")))?;
            let Some(token_file) = &remote.token_file else {
                return Err(NoRouter::Refused(
                    "UNAUTHENTICATED: POLIS_TOKEN_FILE is not set: a module re-attaches to a router on \
                     etcd over TCP with the mesh's token"
                        .into(),
                ));
            };
            // Read now, not at start: a token replaced meanwhile is the one
            // the routers take.
            let token =
                Token::read(token_file).map_err(|e| NoRouter::Refused(format!("UNAUTHENTICATED: {e}")))?;
            let tls = remote
                .tls_ca
                .as_deref()
                .map(ClientTls::from_ca_file)
                .transpose()
                .map_err(|e| NoRouter::Refused(format!("POLIS_TLS_CA: {e}")))?;
            let wait = self.reattach_wait + address.ttl;
            let deadline = Instant::now() + wait;

            let etcd = loop {
                match tokio::time::timeout_at(deadline, Etcd::connect(address.clone())).await {
                    Ok(Ok(etcd)) => break etcd,
                    Ok(Err(e)) if Instant::now() < deadline => {
                        eprintln!("{}: {e}; trying again", self.name);
                        tokio::time::sleep(RETRY).await;
                    }
                    _ => return Err(NoRouter::Within(wait)),
                }
            };
            // A watch on the mesh's prefix wakes the wait when the office
            // changes hands; without one, the module looks now and then.
            let mut changes = etcd.watch().await.ok();
            loop {
                let trouble = match etcd.current_router().await {
                    Ok(Some(router)) if router.id.to_string() != old_router => {
                        let endpoint = router.endpoint.clone().unwrap_or_default();
                        match dial::endpoint(&endpoint, &token, tls.as_ref()).await {
                            Ok(channel) => return Ok(Bridge::over(channel, self.name.clone())),
                            Err(DialError::Refused(why)) => return Err(NoRouter::Refused(why)),
                            Err(e) => Some(e.to_string()),
                        }
                    }
                    // Nobody in office, or still the lost router (its lease
                    // has not lapsed yet).
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                if Instant::now() >= deadline {
                    return Err(NoRouter::Within(wait));
                }
                if let Some(why) = trouble {
                    eprintln!("{}: {why}; looking again", self.name);
                    tokio::time::sleep(RETRY).await;
                } else if let Some(stream) = changes.as_mut() {
                    let until = deadline.min(Instant::now() + LOOK_AGAIN);
                    if let Ok(None) = tokio::time::timeout_at(until, stream.next()).await {
                        changes = None;
                    }
                } else {
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
