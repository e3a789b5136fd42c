//! The router's own events about modules, as D-Bus's NameOwnerChanged:
//! `polis.module.started`, `polis.module.stopped` and `polis.module.crashed`,
//! each with the module's name, pid and the router's epoch.

use serde_json::json;

use super::{Host, Instance, instance::Exit};

/// A module instance came up (spawned, or attached over the socket).
pub(crate) const STARTED: &str = "polis.module.started";
/// A module instance ended at the router's request or by itself, cleanly.
pub(crate) const STOPPED: &str = "polis.module.stopped";
/// A module instance failed: its exit status or broken link is the reason.
pub(crate) const CRASHED: &str = "polis.module.crashed";

impl Host {
    pub(super) fn announce_started(&self, instance: &Instance) {
        self.bus.announce(
            STARTED,
            &json!({
                "module": instance.name,
                "version": instance.version,
                "pid": instance.pid,
                "epoch": self.router.epoch,
            }),
        );
    }

    pub(super) fn announce_exit(&self, instance: &Instance, exit: &Exit) {
        let topic = if exit.crashed { CRASHED } else { STOPPED };
        self.bus.announce(
            topic,
            &json!({
                "module": instance.name,
                "pid": instance.pid,
                "epoch": self.router.epoch,
                "reason": exit.reason,
            }),
        );
    }
}
