//! A router hosted inside the frontend's own process (feature `host`): when
//! no router is in office and this process wins the election, it serves the
//! mesh itself, and hands over when the frontend leaves. The only part of
//! this crate that links the router.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use polis_discovery::{Campaign, Discovery, MeshDir, NodeRecord};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::ClientError;

/// The router this process hosts, if any.
#[derive(Debug, Default)]
pub(crate) struct Hosting {
    // std Mutex: set or taken, never held across an await.
    router: Mutex<Option<Hosted>>,
    /// Set (under `router`'s lock) once the client is dropped or closed: a
    /// re-attach racing that must not host a router nobody would stop.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Hosted {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Hosting {
    /// The router in office, or one hosted here when this process wins the
    /// election.
    pub(crate) async fn connect(
        &self,
        mesh: &MeshDir,
        config: &polis_node::router::RouterConfig,
    ) -> Result<NodeRecord, ClientError> {
        let watch = mesh.watch()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(router) = mesh.current_router()? {
                return Ok(router);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Status::unavailable("the client is closed; it hosts no router any more").into());
            }
            if let Campaign::Won(term) = mesh.campaign()? {
                let stop = CancellationToken::new();
                let task = tokio::spawn({
                    let (config, stop) = (config.clone(), stop.clone());
                    async move {
                        if let Err(e) = polis_node::router::serve(term, config, stop).await {
                            tracing::error!("the hosted router failed: {e}");
                        }
                    }
                });
                {
                    let mut hosted = self.router.lock().expect("hosting lock");
                    if self.closed.load(Ordering::SeqCst) {
                        // Closed while this won the office: it leaves at once.
                        stop.cancel();
                    } else {
                        *hosted = Some(Hosted { stop, task });
                    }
                }
                let router = watch.wait_for(Duration::from_secs(10), || mesh.current_router()).await?;
                return Ok(router.ok_or_else(|| Status::unavailable("the hosted router did not start"))?);
            }
            // Another holds the office: it publishes soon, or it is leaving
            // and the office comes free. Either way, look again.
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable("no router took office within 10 s").into());
            }
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Whether a router hosted here is serving.
    pub(crate) fn is_serving(&self) -> bool {
        self.router.lock().expect("hosting lock").as_ref().is_some_and(|h| !h.task.is_finished())
    }

    /// Tells the hosted router to hand over and leave, without waiting: what
    /// a dropped client can still do. It leaves while the runtime runs on; if
    /// the process exits first, the kernel releases its locks and a standby
    /// takes office at once.
    pub(crate) fn cancel(&self) {
        let hosted = self.router.lock().expect("hosting lock");
        self.closed.store(true, Ordering::SeqCst);
        if let Some(hosted) = hosted.as_ref() {
            hosted.stop.cancel();
        }
    }

    /// Hands over and waits until the hosted router has left office.
    pub(crate) async fn stop(&self) {
        let hosted = {
            let mut hosted = self.router.lock().expect("hosting lock");
            self.closed.store(true, Ordering::SeqCst);
            hosted.take()
        };
        if let Some(hosted) = hosted {
            hosted.stop.cancel();
            let _ = hosted.task.await;
        }
    }
}
