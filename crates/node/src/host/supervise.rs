//! Supervision: when an instance ends, its calls are counted, its end is
//! judged by the restart policy, and it is started again or marked failed.

use std::{sync::Arc, sync::atomic::Ordering, time::Instant};

use super::{Host, Instance, registry::Entry, restart::Verdict};
use crate::manifest::RestartPolicy;

/// How many node ids of reaped processes an entry remembers.
const REAPED_KEPT: usize = 8;

impl Host {
    /// Waits for an instance to end, then applies the restart policy.
    pub(super) async fn supervise(self: Arc<Self>, entry: Arc<Entry>, instance: Arc<Instance>) {
        let exit = instance.closed().await;
        self.announce_exit(&instance, &exit);
        let restart_now = {
            let mut state = entry.state.lock().expect("state lock");
            if state.instance.as_ref().is_some_and(|i| Arc::ptr_eq(i, &instance)) {
                state.instance = None;
            }
            state.past_calls += instance.calls.load(Ordering::Relaxed);
            if let Some(id) = instance.spawned_as {
                if state.reaped.len() >= REAPED_KEPT {
                    state.reaped.remove(0);
                }
                state.reaped.push(id);
            }
            if exit.crashed {
                state.last_error = Some(exit.reason.clone());
            }
            let policy = state.manifest.as_ref().map_or(RestartPolicy::OnFailure, |m| m.restart);
            let budget = self.config.budget();
            match state.crashes.judge(exit.crashed, policy, budget, Instant::now()) {
                Verdict::Clean => false,
                Verdict::Never => {
                    state.failed = Some(format!(
                        "{}; its restart policy is \"never\": run `polis module load {}` to start it again",
                        exit.reason, entry.name
                    ));
                    false
                }
                Verdict::Spent { crashes } => {
                    state.failed = Some(format!(
                        "module {} crashed {crashes} times within {:?}: its restart budget is spent; \
                         fix it, then run `polis module reload {}` (last: {})",
                        entry.name, budget.window, entry.name, exit.reason
                    ));
                    false
                }
                Verdict::Restart { eager } => {
                    state.restarts += 1;
                    eager
                }
            }
        };
        if restart_now
            && !self.closing.is_cancelled()
            && let Err(status) = self.instance(&entry.name).await
        {
            tracing::warn!("restart of {} failed: {}", entry.name, status.message());
        }
    }
}
