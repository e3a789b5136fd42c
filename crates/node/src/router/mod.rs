//! The router: the node holding the election, serving the mesh's endpoint
//! `router.sock` (frame sessions and gRPC on one socket) and routing calls
//! to modules.
//!
//! Start-up follows the directory contract: office (the lock) first, then
//! the socket, then the router's node record (its lock is what readers test
//! for liveness), then `router.json`. Exit (DESIGN.md §7): stop accepting,
//! remove `router.json`, send `Shutdown` to every module, wait out the
//! grace, kill stragglers, reap every child, and release `router.lock` last.

mod accept;
mod admin;
mod authority;
pub(crate) mod calls;
mod conns;
mod events;
mod frames;
#[doc(hidden)]
pub mod fuzzing;
mod json;
mod limit;
mod monitor;
mod service;
mod sessions;
mod tcp;
mod versions;

pub use sessions::SessionConfig;
pub use tcp::Remote;

use std::time::Duration;

use polis_discovery::{Discovery, MeshDir, NodeRecord, Role, Term};
use polis_mesh::{
    pb::{self, admin_server::AdminServer, router_server::RouterServer},
    transport::{self, PeerInfo},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, service::interceptor::InterceptedService};

use crate::{
    Error, Result,
    host::{Host, HostConfig, RouterIdentity},
};
use sessions::{Leases, SessionHub, SessionTable};

/// How a router runs: its modules and its sessions.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The module host's settings.
    pub host: HostConfig,
    /// Linger and keepalives.
    pub sessions: SessionConfig,
    /// The command that starts a successor standing by, for `polis router
    /// restart`: a program and its arguments. `None` refuses restarts.
    pub successor: Option<(std::path::PathBuf, Vec<std::ffi::OsString>)>,
    /// Hand over on exit while other sessions remain: let the modules go
    /// instead of stopping them. For a router hosted inside a frontend,
    /// whose exit is not the mesh's.
    pub hand_over_on_exit: bool,
}

/// How long in-flight gRPC exchanges get to finish once the modules are down:
/// their calls have failed by then, so this only lets the answers flush, and
/// keeps a hung client from holding the exit up.
const DRAIN: Duration = Duration::from_millis(500);

/// Serves as the router for the term held, until `shutdown` is cancelled (by
/// the caller, by `polis stop`, or after lingering with no session and no
/// call).
///
/// Dead node records are collected once the router is published. On return every module
/// has been stopped and reaped, the router's files are gone, and the office
/// is free for the next candidate.
pub async fn serve(term: Term, config: RouterConfig, shutdown: CancellationToken) -> Result<()> {
    serve_remote(term, config, None, shutdown).await
}

/// [`serve`], for a router elected through a remote backend (etcd) as
/// well: it also serves `remote`'s TCP endpoint, takes its epoch and id
/// from the remote term, and stops taking calls the moment that term is lost.
pub async fn serve_remote(
    term: Term,
    config: RouterConfig,
    remote: Option<Remote>,
    shutdown: CancellationToken,
) -> Result<()> {
    let epoch = remote.as_ref().map_or(term.epoch(), |r| r.epoch);
    let lost = remote.as_ref().map_or_else(CancellationToken::new, |r| r.lost.clone());
    let RouterConfig { host: config, sessions: session_config, successor, hand_over_on_exit } = config;
    let mesh: MeshDir = term.mesh().clone();
    // Before the socket: every connection costs a descriptor.
    let nofile = conns::raise_nofile();
    term.remove_stale_socket()?;
    let socket = mesh.router_socket();
    let listener = transport::bind(&socket).map_err(|source| Error::Bind { path: socket.clone(), source })?;

    let mut record = NodeRecord::new(Role::Router, "router");
    if let Some(remote) = &remote {
        record.id = remote.id;
    }
    record.version = env!("CARGO_PKG_VERSION").to_owned();
    record.endpoint = Some(format!("unix:{}", socket.display()));
    // Published as soon as the socket listens, before the services are
    // built: a frontend that connects meanwhile waits in the listen backlog,
    // and a cold start waits on `router.json`. Should building fail, the
    // node record goes with `node`, and `router.json` and the office with
    // `term`.
    let node = mesh.publish(&record)?;
    term.publish_router(&record)?;
    tracing::info!(epoch, id = %record.id, "router in office at {}", socket.display());
    // After publishing: on a failover every millisecond before it counts.
    // And right after it, before building the services: the pass judges the
    // records there when this router took office, not those written once
    // frontends can see it.
    let collected = mesh.collect_dead()?;
    if !collected.is_empty() {
        tracing::info!("collected {} dead node records", collected.len());
    }

    // tonic's limits sit above the router's own (`limit.rs`), which
    // answers RESOURCE_EXHAUSTED naming it; replies are never larger, as
    // modules' frames are held to the frame limit.
    let limit = limit::MessageLimit { max_frame: config.max_frame_len };
    let max_message = limit.max_message().saturating_add(1);
    let host = Host::new(config, mesh.clone(), RouterIdentity { id: record.id, epoch });
    let identity = pb::StatusReply {
        router_id: record.id.to_string(),
        epoch,
        pid: record.pid,
        version: record.version.clone(),
        mesh_dir: mesh.root().display().to_string(),
        protocol_versions: polis_mesh::versions::SESSION_PROTOCOLS.to_vec(),
        features: versions::features(),
        ..Default::default()
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    health.set_serving::<RouterServer<service::RouterService>>().await;
    health.set_serving::<AdminServer<admin::AdminService>>().await;
    // Both versions of reflection: grpcurl before 1.8.8 and Python's
    // grpcio-reflection ask v1alpha, newer tools v1.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| Error::Reflection(e.to_string()))?;
    let reflection = reflection().build_v1().map_err(|e| Error::Reflection(e.to_string()))?;

    let handover = CancellationToken::new();
    let leases = Leases::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let leaving = CancellationToken::new();
    let hub = SessionHub {
        config: session_config,
        leases: leases.clone(),
        table: std::sync::Arc::new(SessionTable::default()),
        router_id: record.id.to_string(),
        epoch,
        tracker: tasks.clone(),
        leaving: leaving.clone(),
        handover: handover.clone(),
    };

    let uid = rustix::process::geteuid().as_raw();
    let check = same_user(uid);
    let stop_accepting = CancellationToken::new();
    let listener = match remote {
        Some(remote) => {
            let addr = remote.listener.local_addr().ok();
            let conns = tcp::door(remote.listener, remote.token, remote.tls, uid, stop_accepting.clone())
                .map_err(|source| Error::Bind { path: format!("tcp:{addr:?}").into(), source })?;
            tracing::info!("serving TCP at {addr:?} too");
            listener.with_others(conns)
        }
        None => listener,
    };
    let router_service = RouterServer::new(service::RouterService { host: host.clone(), hub: hub.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin_service = AdminServer::new(admin::AdminService {
        host: host.clone(),
        sessions: hub.table.clone(),
        identity,
        started: std::time::Instant::now(),
        shutdown: shutdown.clone(),
        handover: handover.clone(),
        successor,
        log: mesh.logs_dir().join("router.log"),
    });
    // One socket, two wires: frame sessions are served at the door, gRPC
    // connections go on to tonic.
    let door = std::sync::Arc::new(frames::FrameDoor { host: host.clone(), hub: hub.clone(), uid });
    let conn_limit = conns::ConnLimit::from_env(nofile);
    let grpc = accept::split(listener, door, &tasks, stop_accepting.clone(), conn_limit);
    let server = tonic::transport::Server::builder()
        .layer(limit)
        .add_service(InterceptedService::new(router_service, check))
        .add_service(InterceptedService::new(admin_service, check))
        .add_service(InterceptedService::new(health_service, check))
        .add_service(InterceptedService::new(reflection, check))
        .add_service(InterceptedService::new(reflection_v1alpha, check))
        .serve_with_incoming_shutdown(grpc, stop_accepting.clone().cancelled_owned());
    // Owned, not detached: an early return or a drain that times out must
    // not leave the server running after `serve` (a router hosted in a
    // frontend would outlive its term).
    let mut server = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(server));

    host.autostart();
    tasks.spawn({
        let (leases, shutdown) = (leases.clone(), shutdown.clone());
        async move { leases.linger(session_config.linger, shutdown).await }
    });

    tokio::select! {
        () = shutdown.cancelled() => {}
        // Before the lease could lapse at etcd (polis-etcd's lease.rs), so
        // before any other candidate can be elected.
        () = lost.cancelled() => {
            tracing::warn!(epoch, "office lost; no more calls");
            // What waits on `shutdown` (the linger) ends too.
            shutdown.cancel();
        }
    }
    // The decision to leave: no call is taken from here on. What arrives is
    // refused as not run, and the client takes it to the next router.
    leases.close();
    // A hosted router hands over only if other frontends remain: when its
    // host was the last, the modules stop as with any last frontend leaving.
    if hand_over_on_exit && !hub.table.list().is_empty() {
        handover.cancel();
    }
    let handing_over = handover.is_cancelled();
    tracing::info!(epoch, handing_over, "router leaving office");
    stop_accepting.cancel();
    term.withdraw_record();
    // Before the sessions hear RouterLeaving, so that subscribers can see it.
    host.bus().announce(
        "polis.router.leaving",
        &serde_json::json!({"router": record.id.to_string(), "pid": record.pid, "epoch": epoch, "handover": handing_over}),
    );
    leaving.cancel();
    health.set_not_serving::<RouterServer<service::RouterService>>().await;
    health.set_not_serving::<AdminServer<admin::AdminService>>().await;
    if handing_over {
        // What it accepted, the router answers before it lets the modules
        // go (issue 11, finding 8): a call still in flight then would fail.
        let calls = leases.calls_in_flight();
        if !leases.finish_calls(calls::DEFAULT_CALL_TIMEOUT).await {
            tracing::warn!("handing over with calls still in flight after {:?}", calls::DEFAULT_CALL_TIMEOUT);
        } else if calls > 0 {
            tracing::info!("answered the {calls} calls in flight before handing over");
        }
        // The successor adopts the modules: they are let go, not stopped.
        host.release().await;
    } else {
        host.shutdown().await;
    }
    tasks.close();
    tasks.wait().await;
    let served = match tokio::time::timeout(DRAIN, &mut server).await {
        Ok(Ok(served)) => served.map_err(Error::from),
        Ok(Err(join)) => Err(Error::Task(join.to_string())),
        // Clients still connected; their calls have failed already. Their
        // connections end with the server's task.
        Err(_) => {
            server.abort();
            let _ = server.await;
            Ok(())
        }
    };
    drop(node);
    drop(term);
    served
}

/// Refuses peers of another uid: the socket's 0600 mode keeps them out,
/// and this keeps them out should the mode ever be loosened.
fn same_user(uid: u32) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Copy {
    move |request: Request<()>| match request.extensions().get::<PeerInfo>().and_then(|p| p.uid) {
        Some(peer) if peer == uid => Ok(request),
        Some(peer) => Err(Status::permission_denied(format!(
            "this router serves uid {uid} only; refused a client running as uid {peer}"
        ))),
        None => Err(Status::permission_denied("cannot tell the client's uid; refused")),
    }
}
