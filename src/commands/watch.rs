//! `polis watch PATTERN`: a frontend that prints one JSON line per event,
//! `{"topic":…,"value":…}`, until interrupted; and `polis publish TOPIC
//! [JSON]`, one event.

use std::process::ExitCode;

use polis_client::{Client, ClientOptions, Notice};
use polis_discovery::MeshDir;
use tokio::io::AsyncWriteExt;

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
                let value = event.json().unwrap_or(serde_json::Value::Null);
                let line = serde_json::json!({"topic": event.topic, "value": value});
                out.write_all(format!("{line}\n").as_bytes()).await?;
                out.flush().await?;
            }
            Some(Notice::Lagged { count: 0 }) => {
                eprintln!("warning: the router changed; events may have been lost")
            }
            Some(Notice::Lagged { count }) => {
                eprintln!("warning: {count} events lost: this watch fell behind")
            }
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
    let value: serde_json::Value = match &args.value {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::new(USAGE, format!("the value is not JSON ({e})")))?,
        None => serde_json::Value::Null,
    };
    let client =
        connect(mesh, modules_path, format!("polis-publish/{}", std::process::id()), args.no_launch).await?;
    let published = client.publish(&args.topic, &value).map_err(rpc::failure);
    // Goodbye follows the publish on the same connection, so it is sent first.
    client.close().await;
    published?;
    Ok(ExitCode::SUCCESS)
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
