//! `polis-NAME`: a polis module built on the SDK.
//!
//! stdout belongs to the SDK: log with `eprintln!`, which the router keeps
//! in <mesh>/logs/NAME.log (`polis log NAME`). Try it with
//! `polis call NAME hello '{"name": "you"}'`.

use std::process::ExitCode;

use polis_sdk::{Call, Module};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    Module::new("NAME", env!("CARGO_PKG_VERSION"))
        .method("ping", |_call: Call| async { Ok("pong") })
        .method("hello", |call: Call| async move {
            let who: String = call.param_or("name", "world".to_owned())?;
            let greeting = call.config()["greeting"].as_str().unwrap_or("hello").to_owned();
            Ok(greet(&greeting, &who))
        })
        .run()
        .await
}

/// What `hello` answers.
fn greet(greeting: &str, who: &str) -> String {
    format!("{greeting}, {who}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_greets_by_name() {
        assert_eq!(greet("hi", "polis"), "hi, polis");
    }
}
