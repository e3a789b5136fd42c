//! `polis-echo`: the example module, and the one the tests drive.
//!
//! Copy this file to start a module of your own. A module is an ordinary
//! program: the router starts it when a call for its service arrives and
//! talks to it over stdin and stdout. The SDK (`polis_sdk`) speaks
//! that protocol; all a module does is name its methods and write one async
//! function per method.
//!
//! Two rules to keep in mind:
//! - stdout belongs to the SDK: never `println!`. Log with `eprintln!`; the
//!   router keeps each module's stderr in its log.
//! - Handlers run concurrently, each call in its own task, so they must be
//!   `Send` and should not block the thread (use `tokio::time::sleep`, not
//!   `std::thread::sleep`).
//!
//! Try it through the router: `polis call echo ping`.

use std::{process::ExitCode, time::Duration};

use polis_sdk::{Call, Items, Module, ModuleError, Notice};
use serde_json::{Value, json};

// A current-thread runtime is plenty: handlers wait, they do not compute.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The service name must match `name` in module.toml; the version is the
    // crate's, so it cannot drift from what was built. The router says which
    // service it started in POLIS_SERVICE: echo answers to any name, so tests
    // can run it as several modules. A module of your own just names itself.
    let name = std::env::var("POLIS_SERVICE").unwrap_or_else(|_| "echo".into());
    let module = Module::new(name, env!("CARGO_PKG_VERSION"))
        // A unary method answers once. Whatever it returns is sent as JSON.
        .method("ping", |_call: Call| async { Ok("pong") })
        // Every method is declared to the router in Hello, so that `polis
        // introspect echo` lists it and a call to a method echo lacks fails
        // at the router. A doc (one line) and JSON Schemas are optional.
        .doc("ping", "answers \"pong\"")
        // `call.params()` is the caller's JSON, `null` when it sent none.
        .method("echo", |call: Call| async move { Ok(call.params().clone()) })
        .doc("echo", "answers its params")
        // A stream sends any number of items, then returns.
        .stream("stream", stream)
        .doc("stream", "the numbers 0..count, one every interval_ms")
        .schema(
            "stream",
            Some(json!({"type": "object", "properties": {
                "count": {"type": "integer"}, "interval_ms": {"type": "integer"}}})),
            Some(json!({"type": "integer"})),
        )
        .method("fail", fail)
        .doc("fail", "fails with the gRPC status code and message given")
        .method("sleep", sleep)
        .doc("sleep", "answers after ms milliseconds")
        // Events: `publish {topic, value}` publishes one; the stream `watch
        // {pattern, count}` subscribes, says "subscribed", then forwards
        // `count` events as they come.
        .method("publish", |call: Call| async move {
            let topic: String = call.param("topic")?;
            let value: Value = call.param_or("value", Value::Null)?;
            call.publish(&topic, &value).await?;
            Ok(Value::Null)
        })
        .stream("watch", watch)
        .method("crash", |_call: Call| async {
            eprintln!("echo: crashing on request");
            // Leaves mid-call without answering: the router reports the
            // exit status to the caller and restarts the module if its
            // manifest says so.
            std::process::exit(3);
            #[allow(unreachable_code)]
            Ok(())
        })
        .doc("crash", "exits with status 3 mid-call, to show what callers see");
    // Started by a router, a module serves it on stdin and stdout until it
    // says Shutdown. Started by hand with `--attach MESH_DIR`, it loads
    // itself into that mesh over the router's socket instead, and serves
    // calls by name until it exits. Either way errors are printed on stderr
    // and make the exit status non-zero.
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("--attach"), Some(mesh_dir)) => module.attach(mesh_dir).await,
        _ => module.run().await,
    }
}

/// `stream {count, interval_ms}`: the numbers `0..count`, one every
/// `interval_ms`, the first at once.
async fn stream(call: Call, items: Items) -> Result<(), ModuleError> {
    // `param_or` reads an optional named parameter; a wrong type is an
    // INVALID_ARGUMENT error for the caller, and `?` sends it.
    let count: u64 = call.param_or("count", 3)?;
    let interval = Duration::from_millis(call.param_or("interval_ms", 0)?);
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        // Each item is written to the router at once, as a frame of its own,
        // so the caller sees it now, not when the stream ends.
        items.send(json!(i)).await?;
    }
    // Returning ends the stream. An `Err` here would end it with that error.
    Ok(())
}

/// `watch {pattern, count}`: "subscribed", then `count` notices as
/// `{"topic", "value"}` or `{"lagged": n}`.
async fn watch(call: Call, items: Items) -> Result<(), ModuleError> {
    let pattern: String = call.param("pattern")?;
    let count: u64 = call.param_or("count", 1)?;
    // The subscription lasts as long as `events` does: here, the call.
    let mut events = call.subscribe(&pattern).await?;
    items.send("subscribed").await?;
    for _ in 0..count {
        match events.next().await {
            Some(Notice::Event { topic, value, .. }) => {
                items.send(json!({"topic": topic, "value": value})).await?
            }
            Some(Notice::Lagged { count }) => items.send(json!({ "lagged": count })).await?,
            Some(_) | None => break,
        }
    }
    Ok(())
}

/// `fail {code, message}`: fails with that gRPC status code and message.
async fn fail(call: Call) -> Result<Value, ModuleError> {
    // `param` reads a required parameter: missing, it is an error too.
    let code: i32 = call.param("code")?;
    let message: String = call.param_or("message", "failed on request".to_owned())?;
    // Any gRPC code works; `ModuleError::invalid_argument(..)` and friends
    // name the common ones. The caller gets exactly this code and message.
    Err(ModuleError::new(code, message))
}

/// `sleep {ms}`: waits `ms` milliseconds, then says so; stops early when
/// the call is cancelled or its deadline passes.
async fn sleep(call: Call) -> Result<Value, ModuleError> {
    let ms: u64 = call.param("ms")?;
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({ "slept_ms": ms })),
        // When the router sends Cancel the SDK drops this future anyway;
        // `cancelled()` also fires at the caller's deadline, which is when
        // an answer would be too late to matter.
        () = call.cancelled() => Err(ModuleError::deadline_exceeded(format!("woken after less than {ms} ms"))),
    }
}
