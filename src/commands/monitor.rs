//! `polis monitor [PATTERN] [--json] [--payloads]`: the calls (and events)
//! crossing the router as they end, one line each (`Admin.Monitor`).
//!
//! The first line says what is watched, once the router is watching: a
//! script may wait for it. Lines the router could not send in time (this
//! process read too slowly) are lost, and said so in a `dropped N` line.

use std::process::ExitCode;

use polis_discovery::MeshDir;
use polis_mesh::pb::{self, admin_client::AdminClient, monitor_line::Kind};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::rpc;
use crate::cli::MonitorArgs;

pub(super) async fn run(mesh: &MeshDir, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    run_on(rpc::admin(mesh).await?, args).await
}

/// `polis monitor` of the router behind `admin`, wherever it was found.
pub(super) async fn run_on(mut admin: AdminClient<Channel>, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let pattern = args.pattern.unwrap_or_default();
    let request = pb::MonitorRequest { pattern: pattern.clone(), payloads: args.payloads };
    let mut lines = admin.monitor(request).await.map_err(rpc::status)?.into_inner();
    let what = if pattern.is_empty() { "*".to_owned() } else { pattern };
    if args.json {
        say!("{}", json!({"type": "watching", "pattern": what}))?;
    } else {
        say!("watching {what}")?;
    }
    while let Some(line) = lines.message().await.map_err(rpc::status)? {
        let Some(kind) = line.kind else { continue };
        if args.json {
            say!("{}", line_json(&kind))?;
        } else {
            say!("{}", line_text(&kind))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A payload as JSON when it is, else as a string of its bytes.
fn payload(p: Option<&pb::Payload>) -> Value {
    let Some(p) = p else { return Value::Null };
    serde_json::from_slice(&p.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.data).into()))
}

fn line_json(kind: &Kind) -> Value {
    match kind {
        Kind::Call(c) => {
            let mut line = json!({
                "type": "call", "at": c.at, "caller": c.caller, "service": c.service, "method": c.method,
                "stream": c.stream, "duration_us": c.duration_us, "code": c.code, "message": c.message,
                "request_bytes": c.request_bytes, "reply_bytes": c.reply_bytes, "items": c.items,
            });
            if c.request.is_some() || c.reply.is_some() {
                line["request"] = payload(c.request.as_ref());
                line["reply"] = payload(c.reply.as_ref());
            }
            line
        }
        Kind::Dropped(d) => json!({"type": "dropped", "count": d.count}),
        Kind::Event(e) => {
            let mut line = json!({"type": "event", "at": e.at, "publisher": e.publisher, "topic": e.topic, "bytes": e.bytes});
            if e.payload.is_some() {
                line["payload"] = payload(e.payload.as_ref());
            }
            line
        }
    }
}

fn line_text(kind: &Kind) -> String {
    match kind {
        Kind::Call(c) => {
            let caller = if c.caller.is_empty() { "-" } else { &c.caller };
            let items = if c.stream { format!(" {} items", c.items) } else { String::new() };
            let message = if c.message.is_empty() { String::new() } else { format!(": {}", c.message) };
            let mut text = format!(
                "{} {caller} → {}.{} {:.3} ms {}{message} {} B → {} B{items}",
                c.at,
                c.service,
                c.method,
                c.duration_us as f64 / 1000.0,
                c.code,
                c.request_bytes,
                c.reply_bytes,
            );
            if c.request.is_some() || c.reply.is_some() {
                text +=
                    &format!("\n    > {}\n    < {}", payload(c.request.as_ref()), payload(c.reply.as_ref()));
            }
            text
        }
        Kind::Dropped(d) => format!("dropped {} lines: this monitor read too slowly", d.count),
        Kind::Event(e) => {
            let mut text = format!("{} {} event {} {} B", e.at, e.publisher, e.topic, e.bytes);
            if e.payload.is_some() {
                text += &format!("\n    {}", payload(e.payload.as_ref()));
            }
            text
        }
    }
}
