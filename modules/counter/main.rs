//! `polis-counter`: a module with state. The count lives in memory for as
//! long as the process does; a restarted counter starts again at 0.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
};

use polis_node::sdk::{Call, Module};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Handlers run concurrently and must be `Send + Sync`, so shared state
    // goes behind an `Arc`. A std `Mutex` is right: it is never held across
    // an `.await`.
    let count = Arc::new(Mutex::new(0_i64));
    let for_incr = count.clone();
    Module::new("counter", env!("CARGO_PKG_VERSION"))
        // `incr {by?}`: adds `by` (1 when absent) and answers the new count.
        .method("incr", move |call: Call| {
            let count = for_incr.clone();
            async move {
                let by: i64 = call.param_or("by", 1)?;
                let mut count = count.lock().expect("counter lock poisoned");
                *count = count.saturating_add(by);
                Ok(*count)
            }
        })
        // `get`: the count.
        .method("get", move |_call: Call| {
            let count = count.clone();
            async move { Ok(*count.lock().expect("counter lock poisoned")) }
        })
        .run()
        .await
}
