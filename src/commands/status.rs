//! `polis status`, `polis module …` and `polis stop`: the Admin service.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use polis_discovery::{Discovery, MeshDir};
use polis_mesh::pb::{self, admin_client::AdminClient};
use serde_json::json;
use tonic::transport::Channel;

use super::rpc;
use crate::cli::ModuleCommand;

pub(super) async fn status(mesh: &MeshDir, json: bool) -> anyhow::Result<ExitCode> {
    status_of(rpc::admin(mesh).await?, json).await
}

/// `polis status` of the router behind `admin`, wherever it was found.
pub(super) async fn status_of(mut admin: AdminClient<Channel>, json: bool) -> anyhow::Result<ExitCode> {
    let status = admin.status(pb::StatusRequest {}).await.map_err(rpc::status)?.into_inner();
    if json {
        say!("{}", status_json(&status))?;
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "router   pid {}, epoch {}, up {}, id {}",
        status.pid,
        status.epoch,
        humantime::format_duration(Duration::from_secs(status.uptime_ms / 1000)),
        status.router_id
    )?;
    say!("mesh     {}", status.mesh_dir)?;
    say!("{}", versions_text(&status))?;
    if status.sessions.is_empty() {
        say!("sessions none")?;
    } else {
        say!("sessions")?;
        for s in &status.sessions {
            say!("  {:<16} pid {:<8} since {}  {}", s.name, s.pid, s.since, s.node_id)?;
            if !s.client_version.is_empty() {
                say!("  {:<16} polis {}, protocol {}", "", s.client_version, s.protocol_version)?;
            }
        }
    }
    say!()?;
    print_modules(&status.modules)?;
    Ok(ExitCode::SUCCESS)
}

fn print_modules(modules: &[pb::ModuleInfo]) -> std::io::Result<()> {
    if modules.is_empty() {
        return say!("modules  none found on the search path");
    }
    say!(
        "{:<16} {:<10} {:>8} {:<9} {:<8} {:>8} {:>8}",
        "MODULE",
        "STATE",
        "PID",
        "VERSION",
        "PROTOCOL",
        "RESTARTS",
        "CALLS"
    )?;
    for m in modules {
        let pid = if m.pid == 0 { "-".to_owned() } else { m.pid.to_string() };
        say!(
            "{:<16} {:<10} {:>8} {:<9} {:<8} {:>8} {:>8}",
            m.name,
            m.state,
            pid,
            m.version,
            m.protocol,
            m.restarts,
            m.calls
        )?;
        if !m.sandbox.is_empty() {
            say!("  sandbox: {}", m.sandbox)?;
        }
        if !m.last_error.is_empty() {
            say!("  last error: {}", m.last_error)?;
        }
    }
    Ok(())
}

fn module_json(m: &pb::ModuleInfo) -> serde_json::Value {
    json!({
        "name": m.name, "version": m.version, "state": m.state,
        "pid": (m.pid != 0).then_some(m.pid), "restarts": m.restarts, "calls": m.calls,
        "protocol": m.protocol, "manifest": m.manifest,
        "last_error": (!m.last_error.is_empty()).then_some(&m.last_error),
        "sandbox": (!m.sandbox.is_empty()).then_some(&m.sandbox),
    })
}

/// The versions on each side: the router's, and this client's.
fn versions_text(s: &pb::StatusReply) -> String {
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let features = if s.features.is_empty() { "none".to_owned() } else { s.features.join(", ") };
    format!(
        "versions router polis {}, protocol {}, features {features}; this client polis {}, protocol {}",
        s.version,
        if s.protocol_versions.is_empty() { "1".to_owned() } else { list(&s.protocol_versions) },
        env!("CARGO_PKG_VERSION"),
        list(polis_mesh::versions::SESSION_PROTOCOLS),
    )
}

fn status_json(s: &pb::StatusReply) -> serde_json::Value {
    json!({
        "router": {"id": s.router_id, "epoch": s.epoch, "pid": s.pid, "version": s.version, "uptime_ms": s.uptime_ms,
            "protocol_versions": s.protocol_versions, "features": s.features},
        "client": {"version": env!("CARGO_PKG_VERSION"), "protocol_versions": polis_mesh::versions::SESSION_PROTOCOLS},
        "mesh_dir": s.mesh_dir,
        "sessions": s.sessions.iter().map(|x| json!({"node_id": x.node_id, "name": x.name, "pid": x.pid, "since": x.since, "client_version": x.client_version, "protocol_version": x.protocol_version, "features": x.features})).collect::<Vec<_>>(),
        "modules": s.modules.iter().map(module_json).collect::<Vec<_>>(),
    })
}

pub(super) async fn module(mesh: &MeshDir, command: ModuleCommand) -> anyhow::Result<ExitCode> {
    module_of(rpc::admin(mesh).await?, command).await
}

/// `polis module list|load|unload|reload` on the router behind `admin`.
pub(super) async fn module_of(
    mut admin: AdminClient<Channel>,
    command: ModuleCommand,
) -> anyhow::Result<ExitCode> {
    let info = match command {
        ModuleCommand::List(args) => {
            let list = admin.list_modules(pb::ListModulesRequest {}).await.map_err(rpc::status)?;
            let modules = list.into_inner().modules;
            if args.json {
                say!("{}", serde_json::Value::Array(modules.iter().map(module_json).collect()))?;
            } else {
                print_modules(&modules)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ModuleCommand::Load { name } => admin.load_module(pb::ModuleRequest { name }).await,
        ModuleCommand::Unload { name } => admin.unload_module(pb::ModuleRequest { name }).await,
        ModuleCommand::Reload { name } => admin.reload_module(pb::ModuleRequest { name }).await,
        ModuleCommand::Install(_) | ModuleCommand::Remove { .. } | ModuleCommand::New(_) => {
            unreachable!("dispatched by commands::run")
        }
    };
    let m = info.map_err(rpc::status)?.into_inner();
    let pid = if m.pid == 0 { String::new() } else { format!(", pid {}", m.pid) };
    say!("{} {}{pid}", m.name, m.state)?;
    Ok(ExitCode::SUCCESS)
}

/// Asks the router to stop, and waits until it has left office.
pub(super) async fn stop(mesh: &MeshDir) -> anyhow::Result<ExitCode> {
    let router = mesh.current_router()?;
    let mut admin = rpc::admin(mesh).await?;
    admin.stop(pb::StopRequest {}).await.map_err(rpc::status)?;
    let Some(router) = router else { return Ok(ExitCode::SUCCESS) };
    // Modules get their grace period first; a minute covers any sane one.
    let watch = mesh.watch()?;
    let gone =
        watch.wait_for(Duration::from_secs(60), || Ok(mesh.is_live(&router.id)?.then_some(()).xor(Some(()))));
    gone.await?.context("the router did not leave office within 60 s")?;
    say!("router pid {} stopped", router.pid)?;
    Ok(ExitCode::SUCCESS)
}
