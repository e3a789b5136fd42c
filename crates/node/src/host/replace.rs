//! Replacing a running module with what is now on disk, without failing a
//! call: a module-level drain (`polis module install` over a running
//! module, through `Admin.ReplaceModule`).
//!
//! Under the entry's load lock, the old instance is taken out of the entry,
//! so every new call waits on that lock (as during any load) rather than
//! reaching it. The old instance answers the calls it has in flight; once
//! it has none (or after [`DRAIN_WAIT`], when the rest fail as with
//! `unload`) it is stopped, the lock is let go, and the module is loaded
//! again from its manifest as it now is: the waiting calls go to the new
//! version. The router does not restart, and no other module is touched.

use std::{sync::Arc, time::Duration};

use polis_mesh::pb;
use tonic::Status;

use super::Host;

/// How long the old instance may take to finish its calls in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// How often the drain looks at the old instance's calls in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);

impl Host {
    /// Stops `name` once its calls in flight are answered (new ones wait),
    /// then starts it again from its manifest: the new version.
    pub(crate) async fn replace(self: &Arc<Self>, name: &str) -> Result<pb::ModuleInfo, Status> {
        crate::manifest::validate_name(name).map_err(Status::invalid_argument)?;
        if let Some(entry) = self.existing_entry(name) {
            let _loading = entry.load.lock().await;
            let old = {
                let mut state = entry.state.lock().expect("state lock");
                let old = state.instance.take();
                state.draining = old.clone();
                old
            };
            if let Some(old) = old {
                let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
                while old.in_flight() > 0 && !old.is_closed() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                let left = old.in_flight();
                if left > 0 {
                    tracing::warn!(
                        "module {name} still had {left} calls in flight after {DRAIN_WAIT:?}; stopping it"
                    );
                }
                tracing::info!("replacing module {name} {} (pid {})", old.version, old.pid.unwrap_or(0));
                old.stop(self.config.grace).await;
            }
            let mut state = entry.state.lock().expect("state lock");
            state.draining = None;
            state.failed = None;
            state.crashes.clear();
        }
        self.load(name).await
    }
}
