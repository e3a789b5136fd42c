//! `polis-counter`: a module with state. The count lives in memory for as
//! long as the process does: it survives its router going away (the SDK
//! re-attaches to the next one), but a restarted counter starts again at 0.

use std::{
    collections::{HashMap, VecDeque},
    process::ExitCode,
    sync::{Arc, Mutex},
};

use polis_sdk::{Call, Module};

/// How many idempotency keys are remembered.
const KEYS_KEPT: usize = 100_000;

/// The count, and the answers already given to keyed increments.
#[derive(Default)]
struct Counter {
    count: i64,
    answered: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl Counter {
    /// Adds `by`, once per `key`: a retried increment (its answer was lost
    /// with a router, say) gets the first answer again instead of counting twice.
    fn incr(&mut self, by: i64, key: Option<String>) -> i64 {
        if let Some(answer) = key.as_ref().and_then(|k| self.answered.get(k)) {
            return *answer;
        }
        self.count = self.count.saturating_add(by);
        if let Some(key) = key {
            self.answered.insert(key.clone(), self.count);
            self.order.push_back(key);
            if self.order.len() > KEYS_KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.answered.remove(&old);
            }
        }
        self.count
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Handlers run concurrently and must be `Send + Sync`, so shared state
    // goes behind an `Arc`. A std `Mutex` is right: it is never held across
    // an `.await`.
    let counter = Arc::new(Mutex::new(Counter::default()));
    let for_incr = counter.clone();
    Module::new("counter", env!("CARGO_PKG_VERSION"))
        // `incr {by?, key?}`: adds `by` (1 when absent) and answers the new
        // count. With a `key`, the call is idempotent: safe to retry.
        .method("incr", move |call: Call| {
            let counter = for_incr.clone();
            async move {
                let by: i64 = call.param_or("by", 1)?;
                let key: Option<String> = call.param_or("key", None)?;
                Ok(counter.lock().expect("counter lock poisoned").incr(by, key))
            }
        })
        // `get`: the count.
        .method("get", move |_call: Call| {
            let counter = counter.clone();
            async move { Ok(counter.lock().expect("counter lock poisoned").count) }
        })
        .run()
        .await
}
