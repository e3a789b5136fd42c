//! `polis watch PATTERN`: a frontend that prints one JSON line per event,
//! `{"topic":…,"value":…}`, until interrupted; and `polis publish TOPIC
//! [JSON]`, one event.

use std::process::ExitCode;

use polis_client::{Client, ClientOptions, Notice};
use polis_discovery::MeshDir;
#[cfg(feature = "etcd")]
use polis_mesh::pb;
use tokio::io::AsyncWriteExt;
#[cfg(feature = "etcd")]
use tonic::transport::Channel;

use super::rpc;
use crate::{
    cli::{PublishArgs, WatchArgs},
    exit::{Failure, UNAVAILABLE, USAGE},
};

async fn connect(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    name: String,
    no_launch: bool,
) -> anyhow::Result<Client> {
    let options = ClientOptions {
        name,
        mesh_dir: Some(mesh.root().to_owned()),
        launch: (!no_launch).then(|| super::launcher(modules_path)),
        host: None,
        transport: polis_client::Transport::Frames,
        modules_path: modules_path.map(str::to_owned),
    };
    Client::connect(options).await.map_err(|e| Failure::new(UNAVAILABLE, e.to_string()).into())
}

pub(super) async fn watch(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: WatchArgs,
) -> anyhow::Result<ExitCode> {
    let client =
        connect(mesh, modules_path, format!("polis-watch/{}", std::process::id()), args.no_launch).await?;
    let mut events = client.subscribe(&args.pattern).await.map_err(rpc::failure)?;
    // On stderr, so that stdout stays one event per line: scripts wait for it.
    eprintln!("watching {}", args.pattern);
    let mut out = tokio::io::stdout();
    let mut interrupted = std::pin::pin!(interrupted());
    loop {
        let notice = tokio::select! {
            notice = events.next() => notice,
            () = &mut interrupted => break,
        };
        match notice {
            Some(Notice::Event(event)) => {
                print_event(&mut out, &event.topic, event.json().unwrap_or(serde_json::Value::Null)).await?
            }
            Some(Notice::Lagged { count }) => warn_lagged(count),
            Some(_) => {}
            None => break,
        }
    }
    drop(events);
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn publish(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: PublishArgs,
) -> anyhow::Result<ExitCode> {
    let value = value(&args)?;
    let client =
        connect(mesh, modules_path, format!("polis-publish/{}", std::process::id()), args.no_launch).await?;
    let published = client.publish(&args.topic, &value).map_err(rpc::failure);
    // Goodbye follows the publish on the same connection, so it is sent first.
    client.close().await;
    published?;
    Ok(ExitCode::SUCCESS)
}

/// One event as the line a watch prints: `{"topic":…,"value":…}`.
async fn print_event(
    out: &mut tokio::io::Stdout,
    topic: &str,
    value: serde_json::Value,
) -> std::io::Result<()> {
    let line = serde_json::json!({"topic": topic, "value": value});
    out.write_all(format!("{line}\n").as_bytes()).await?;
    out.flush().await
}

fn warn_lagged(count: u64) {
    if count == 0 {
        eprintln!("warning: the router changed; events may have been lost")
    } else {
        eprintln!("warning: {count} events lost: this watch fell behind")
    }
}

/// `polis watch` through the gRPC `Router.Subscribe` of a router found
/// elsewhere (a mesh on etcd): the same lines as over frames.
#[cfg(feature = "etcd")]
pub(super) async fn watch_on(
    mut router: pb::router_client::RouterClient<Channel>,
    args: WatchArgs,
) -> anyhow::Result<ExitCode> {
    let request = pb::SubscribeRequest { pattern: args.pattern.clone() };
    let mut replies = router.subscribe(request).await.map_err(rpc::status)?.into_inner();
    eprintln!("watching {}", args.pattern);
    let mut out = tokio::io::stdout();
    let mut interrupted = std::pin::pin!(interrupted());
    loop {
        let reply = tokio::select! {
            reply = replies.message() => reply.map_err(rpc::status)?,
            () = &mut interrupted => break,
        };
        match reply.and_then(|r| r.kind) {
            Some(pb::subscribe_reply::Kind::Event(event)) => {
                let data = event.payload.map(|p| p.data).unwrap_or_default();
                let value = serde_json::from_slice(&data).unwrap_or(serde_json::Value::Null);
                print_event(&mut out, &event.topic, value).await?;
            }
            Some(pb::subscribe_reply::Kind::Lagged(lagged)) => warn_lagged(lagged.count),
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `polis publish` through the gRPC `Router.Publish` of a router found
/// elsewhere (a mesh on etcd).
#[cfg(feature = "etcd")]
pub(super) async fn publish_on(
    mut router: pb::router_client::RouterClient<Channel>,
    args: PublishArgs,
) -> anyhow::Result<ExitCode> {
    let value = value(&args)?;
    let payload = pb::Payload { content_type: "application/json".into(), data: value.to_string().into() };
    let request = pb::PublishRequest {
        topic: args.topic,
        payload: Some(payload),
        publisher: format!("polis-publish/{}", std::process::id()),
    };
    router.publish(request).await.map_err(rpc::status)?;
    Ok(ExitCode::SUCCESS)
}

/// The value to publish: the JSON given, `null` when none.
fn value(args: &PublishArgs) -> anyhow::Result<serde_json::Value> {
    match &args.value {
        Some(text) => Ok(serde_json::from_str(text)
            .map_err(|e| Failure::new(USAGE, format!("the value is not JSON ({e})")))?),
        None => Ok(serde_json::Value::Null),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
