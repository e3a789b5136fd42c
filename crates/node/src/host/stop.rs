//! Stopping: one module by hand (`unload`), or all of them as the router
//! leaves, released for a successor or shut down.

use std::sync::Arc;

use polis_mesh::pb;
use tonic::Status;

use super::Host;

impl Host {
    /// Stops a module and forgets its failures.
    pub(crate) async fn unload(self: &Arc<Self>, name: &str) -> Result<pb::ModuleInfo, Status> {
        crate::manifest::validate_name(name).map_err(Status::invalid_argument)?;
        let Some(entry) = self.existing_entry(name) else {
            return Err(Status::not_found(format!("module {name} is not loaded")));
        };
        let _loading = entry.load.lock().await;
        let instance = entry.state.lock().expect("state lock").instance.take();
        if let Some(instance) = instance {
            instance.stop(self.config.grace).await;
        }
        let mut state = entry.state.lock().expect("state lock");
        state.failed = None;
        state.crashes.clear();
        Ok(self.info(&entry, &state))
    }

    /// For a planned handover: lets every module go without stopping it.
    /// SDK modules re-attach to the next router; JSON-RPC modules exit when
    /// their input closes and are loaded again on demand.
    pub(crate) async fn release(&self) {
        self.closing.cancel();
        let mut releases = tokio::task::JoinSet::new();
        for instance in self.instances() {
            releases.spawn(async move { instance.release().await });
        }
        while releases.join_next().await.is_some() {}
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Stops every module: `Shutdown`, the grace period, then kill; reaps them all.
    pub(crate) async fn shutdown(&self) {
        self.closing.cancel();
        let instances = self.instances();
        // All at once: every module gets its Shutdown now and the same grace.
        let mut stops = tokio::task::JoinSet::new();
        for instance in instances {
            let grace = self.config.grace;
            stops.spawn(async move { instance.stop(grace).await });
        }
        while stops.join_next().await.is_some() {}
        self.tracker.close();
        self.tracker.wait().await;
    }
}
