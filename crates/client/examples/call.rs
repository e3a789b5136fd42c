//! The smallest Rust frontend: `cargo run -p polis-client --example call --
//! SERVICE METHOD [JSON]` connects as `polis` would (the mesh from
//! `POLIS_MESH_DIR`, else the default; modules from `POLIS_MODULES_PATH`;
//! a router launched from `$POLIS_BIN` if none runs), makes one call,
//! prints the reply as JSON and closes its session.
//!
//! The integration tests run it to check that a Rust client finds the mesh
//! as the CLI does (`tests/it/locate.rs`).

use std::process::ExitCode;

use polis_client::{Client, ClientOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [service, method, rest @ ..] = args.as_slice() else {
        eprintln!("usage: call SERVICE METHOD [JSON]");
        return ExitCode::from(2);
    };
    let params = match rest.first().map(|json| serde_json::from_str(json)).transpose() {
        Ok(params) => params.unwrap_or(serde_json::Value::Null),
        Err(e) => {
            eprintln!("error: INVALID_ARGUMENT: the params are not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    // Nothing but the name: everything else as `polis` resolves it.
    let client = match Client::connect(ClientOptions::new("example-call")).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {}: {e}", polis_client::code_name(e.code()));
            return ExitCode::from(4);
        }
    };
    println!("mesh {}", client.mesh().root().display());
    let outcome = client.call_json(service, method, &params, None).await;
    client.close().await;
    match outcome {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
