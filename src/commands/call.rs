//! `polis call SERVICE METHOD [JSON]`: one call through the router.

use std::{io::Write, process::ExitCode, time::Duration};

use polis_discovery::MeshDir;
use polis_mesh::pb;

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
    let data = match &args.params {
        Some(text) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
                return Err(Failure::new(USAGE, format!("the params are not JSON ({e})")).into());
            }
            text.clone().into_bytes()
        }
        None => Vec::new(),
    };
    let launcher = (!args.no_launch).then(|| super::launcher(modules_path));
    let mut router = rpc::router(mesh, launcher.as_ref()).await?;

    let request = pb::CallRequest {
        service: args.service,
        method: args.method,
        payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data: data.into() }),
        timeout_ms: args.timeout.unwrap_or(0),
        caller: format!("polis-cli/{}", std::process::id()),
    };
    let mut request = tonic::Request::new(request);
    if let Some(ms) = args.timeout {
        // The router enforces the deadline; this one only guards against a router that hangs.
        request.set_timeout(Duration::from_millis(ms) + Duration::from_secs(1));
    }

    let mut out = std::io::stdout().lock();
    if args.stream {
        let mut items = router.call_stream(request).await.map_err(|s| rpc::failure(&s))?.into_inner();
        while let Some(item) = items.message().await.map_err(|s| rpc::failure(&s))? {
            print_payload(&mut out, item.payload.as_ref())?;
        }
    } else {
        let reply = router.call(request).await.map_err(|s| rpc::failure(&s))?.into_inner();
        print_payload(&mut out, reply.payload.as_ref())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One value per line, flushed at once so that a reader sees streamed items as they come.
fn print_payload(out: &mut impl Write, payload: Option<&pb::Payload>) -> std::io::Result<()> {
    let data = payload.map(|p| &p.data[..]).filter(|d| !d.is_empty()).unwrap_or(b"null");
    out.write_all(data)?;
    out.write_all(b"\n")?;
    out.flush()
}
