//! `polis-relay`: a module that calls other modules, the example of
//! `Call::call` and `Call::call_stream`, and the one the tests of calls
//! between modules drive.
//!
//! Its manifest must list whom it may call (`calls = ["echo"]`, or
//! `calls = "*"` for anyone); the router refuses anything else.
//!
//! Try it: `polis call relay relay '{"service":"echo","method":"ping"}'`.

use std::process::ExitCode;

use polis_sdk::{Call, Items, Module, ModuleError};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Answers to any name the router starts it as, so that tests can run
    // it as several modules.
    let name = std::env::var("POLIS_SERVICE").unwrap_or_else(|_| "relay".into());
    let module = Module::new(name, env!("CARGO_PKG_VERSION"))
        .method("ping", |_call: Call| async { Ok("pong") })
        // Who called: a module's service name, or a frontend's.
        .method("whoami", |call: Call| async move { Ok(call.caller().to_owned()) })
        // {service, method, params}: calls it and answers what it answered.
        .method("relay", |call: Call| async move {
            let (service, method, params) = target(&call)?;
            call.call(&service, &method, params).await
        })
        // {service, method, params, n}: makes the call n times, one after
        // another, and answers each one's duration in µs as this module saw
        // it (`polis-bench --module-calls` compares them with a frontend's).
        .method("time", |call: Call| async move {
            let (service, method, params) = target(&call)?;
            let n: usize = call.param("n")?;
            let mut us = Vec::with_capacity(n);
            for _ in 0..n {
                let start = std::time::Instant::now();
                call.call(&service, &method, params.clone()).await?;
                us.push(start.elapsed().as_micros() as u64);
            }
            Ok(us)
        })
        // The same for a streaming method: its items, one by one.
        .stream("relay_stream", relay_stream)
        // Calls itself without end: the router's chain limit stops it.
        .method("loop", |call: Call| async move {
            let me = std::env::var("POLIS_SERVICE").unwrap_or_else(|_| "relay".into());
            call.call(&me, "loop", Value::Null).await
        });
    module.run().await
}

async fn relay_stream(call: Call, items: Items) -> Result<(), ModuleError> {
    let (service, method, params) = target(&call)?;
    let mut stream = call.call_stream(&service, &method, params).await?;
    while let Some(item) = stream.next().await {
        items.send(item?).await?;
    }
    Ok(())
}

fn target(call: &Call) -> Result<(String, String, Value), ModuleError> {
    Ok((call.param("service")?, call.param("method")?, call.param_or("params", Value::Null)?))
}
