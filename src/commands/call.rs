//! `polis call SERVICE METHOD [JSON]`: one call through the router, as a
//! script's one-shot call ([`polis_client::Caller`]): no session.

use std::{io::Write, process::ExitCode};

use polis_client::{CallOptions, Caller};
use polis_discovery::MeshDir;

use super::rpc;
use crate::{
    cli::CallArgs,
    exit::{Failure, USAGE},
};

pub(super) async fn run(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: CallArgs,
) -> anyhow::Result<ExitCode> {
    let payload = match &args.params {
        Some(text) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
                return Err(Failure::new(USAGE, format!("the params are not JSON ({e})")).into());
            }
            text.clone().into()
        }
        None => bytes::Bytes::new(),
    };
    let transport = args.transport.transport().map_err(|e| Failure::new(USAGE, e))?;
    let launcher = (!args.no_launch).then(|| super::launcher(modules_path));
    let name = format!("polis-cli/{}", std::process::id());
    let caller =
        Caller::connect_with(mesh, launcher.as_ref(), name, transport).await.map_err(rpc::failure)?;
    let timeout = args.timeout;

    let mut out = std::io::stdout().lock();
    if args.stream {
        let mut items =
            caller.call_stream(&args.service, &args.method, payload, timeout).await.map_err(rpc::failure)?;
        while let Some(item) = items.next_payload().await {
            print_payload(&mut out, &item.map_err(rpc::failure)?)?;
        }
    } else {
        let options = CallOptions { timeout, idempotent: false, unary_only: true };
        let reply = caller.call(&args.service, &args.method, payload, options).await.map_err(rpc::failure)?;
        print_payload(&mut out, &reply)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One value per line, flushed at once so that a reader sees streamed items as they come.
fn print_payload(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(if data.is_empty() { b"null" } else { data })?;
    out.write_all(b"\n")?;
    out.flush()
}
