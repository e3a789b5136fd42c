//! `polis ls`: the live nodes, read from the directory alone.

use std::process::ExitCode;

use polis_discovery::{Discovery, MeshDir};

pub(super) fn run(mesh: &MeshDir, json: bool) -> anyhow::Result<ExitCode> {
    let listing = mesh.list()?;
    super::warn_skipped(&listing);
    let router = mesh.current_router()?;
    if json {
        let out = serde_json::json!({
            "mesh_dir": mesh.root(),
            "router": router,
            "nodes": listing.nodes,
        });
        say!("{out}")?;
        return Ok(ExitCode::SUCCESS);
    }

    say!("mesh   {}", mesh.root().display())?;
    match &router {
        Some(r) => say!("router pid {}, epoch {}", r.pid, r.epoch.unwrap_or(0))?,
        None => say!("router none")?,
    }
    if listing.nodes.is_empty() {
        say!("no live nodes")?;
        return Ok(ExitCode::SUCCESS);
    }
    say!()?;
    say!("{:<9} {:<16} {:>8}  {:<20}  {:<36}  SERVICES", "ROLE", "NAME", "PID", "STARTED", "ID")?;
    for n in &listing.nodes {
        say!(
            "{:<9} {:<16} {:>8}  {:<20}  {:<36}  {}",
            n.role.to_string(),
            n.name,
            n.pid,
            n.started_at,
            n.id,
            n.services.join(",")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
