//! `polis introspect SERVICE [--json]`: what a module serves, as it
//! declared in its handshake (`Admin.Describe`, which loads it if needed).

use std::process::ExitCode;

use polis_discovery::MeshDir;
use polis_mesh::pb::{self, admin_client::AdminClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::rpc;
use crate::cli::IntrospectArgs;

pub(super) async fn run(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: IntrospectArgs,
) -> anyhow::Result<ExitCode> {
    // Describing loads the module, as a call would: so a router is launched
    // as for a call.
    let launcher = super::launcher(modules_path);
    let channel = polis_client::connect(mesh, Some(&launcher)).await.map_err(|e| rpc::failure(e.into()))?;
    describe(AdminClient::new(channel), args).await
}

/// `polis introspect` on the router behind `admin`, wherever it was found.
pub(super) async fn describe(
    mut admin: AdminClient<Channel>,
    args: IntrospectArgs,
) -> anyhow::Result<ExitCode> {
    let request = pb::DescribeRequest { service: args.service };
    let reply = admin.describe(request).await.map_err(rpc::status)?.into_inner();
    if args.json {
        say!("{}", describe_json(&reply))?;
        return Ok(ExitCode::SUCCESS);
    }
    say!("{} {} ({})", reply.service, reply.version, reply.protocol)?;
    if !reply.declared {
        say!("undeclared: the module lists no methods; every call goes through to it")?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.methods.is_empty() {
        say!("declares no methods")?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = reply.methods.iter().map(|m| m.name.len()).max().unwrap_or(0).max("METHOD".len());
    say!("\n{:<width$}  {:<6}  DOC", "METHOD", "KIND")?;
    for m in &reply.methods {
        let kind = if m.stream { "stream" } else { "unary" };
        say!("{:<width$}  {kind:<6}  {}", m.name, m.doc)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A schema as JSON: its text parsed, `null` when none was given.
fn schema(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or(Value::String(text.into()))
    }
}

fn describe_json(d: &pb::DescribeReply) -> Value {
    json!({
        "service": d.service, "version": d.version, "protocol": d.protocol, "declared": d.declared,
        "methods": d.methods.iter().map(|m| json!({
            "name": m.name, "doc": m.doc, "stream": m.stream,
            "params": schema(&m.params_schema), "result": schema(&m.result_schema),
        })).collect::<Vec<_>>(),
    })
}
