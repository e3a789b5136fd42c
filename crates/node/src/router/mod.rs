//! The router: the node holding the election, serving the mesh's gRPC
//! endpoint on `router.sock`.
//!
//! Start-up order is the directory contract's: office (the lock) first, then
//! the socket, then the router's node record (its lock is what readers test
//! for liveness), then `router.json`. Exit runs it backwards, releasing
//! `router.lock` last.

use polis_discovery::{Discovery, MeshDir, NodeRecord, Role, Term};
use polis_mesh::transport;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Serves as the router for the term held, until `shutdown` is cancelled.
///
/// Dead node records are collected on taking office. On return the router's
/// files are gone and the office is free for the next candidate.
pub async fn serve(term: Term, shutdown: CancellationToken) -> Result<()> {
    let mesh: MeshDir = term.mesh().clone();
    let collected = mesh.collect_dead()?;
    if !collected.is_empty() {
        tracing::info!("collected {} dead node records", collected.len());
    }

    term.remove_stale_socket()?;
    let socket = mesh.router_socket();
    let listener = transport::bind(&socket).map_err(|source| Error::Bind { path: socket.clone(), source })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    health.set_service_status("polis.v1.Router", tonic_health::ServingStatus::Serving).await;

    let mut record = NodeRecord::new(Role::Router, "router");
    record.version = env!("CARGO_PKG_VERSION").to_owned();
    record.endpoint = Some(format!("unix:{}", socket.display()));
    let node = mesh.publish(&record)?;
    term.publish_router(&record)?;
    tracing::info!(epoch = term.epoch(), id = %record.id, "router in office at {}", socket.display());

    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(listener.incoming(), shutdown.cancelled());
    let served = server.await;

    tracing::info!(epoch = term.epoch(), "router leaving office");
    drop(node);
    drop(term);
    served.map_err(Error::from)
}
