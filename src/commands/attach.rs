//! `polis attach`: a frontend on the command line.

use std::process::ExitCode;

use polis_client::{Client, ClientOptions};
use polis_discovery::{Discovery, MeshDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    cli::AttachArgs,
    exit::{Failure, UNAVAILABLE, USAGE},
};

pub(super) async fn run(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: AttachArgs,
) -> anyhow::Result<ExitCode> {
    let transport = args.transport.transport().map_err(|e| Failure::new(USAGE, e))?;
    let host = args.host_router.then(|| polis_node::router::RouterConfig {
        host: polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(modules_path)),
        sessions: polis_node::router::SessionConfig::default(),
        successor: None,
        hand_over_on_exit: true,
    });
    let options = ClientOptions {
        name: args.name,
        mesh_dir: Some(mesh.root().to_owned()),
        modules_path: modules_path.map(str::to_owned),
        launch: (!args.no_launch && !args.host_router).then(|| super::launcher(modules_path)),
        host,
        transport,
    };
    let client = Client::connect(options).await.map_err(|e| Failure::new(UNAVAILABLE, e.to_string()))?;
    let mut out = tokio::io::stdout();
    // Status goes to stderr: stdout carries answers only, one JSON value
    // (or `error: CODE: message`) per line.
    if let Some(router) = mesh.current_router()? {
        eprintln!("attached: router pid {}, epoch {}", router.pid, router.epoch.unwrap_or(0));
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match parse(&line) {
            None => continue,
            Some(Err(why)) => crate::exit::line(USAGE, &why),
            Some(Ok((service, method, params))) => {
                match client.call_json(service, method, &params, None).await {
                    Ok(value) => value.to_string(),
                    Err(e) => {
                        let text = e.to_string();
                        let code = polis_client::code_name(e.code());
                        if text.starts_with(code) {
                            format!("error: {text}")
                        } else {
                            format!("error: {code}: {text}")
                        }
                    }
                }
            }
        };
        out.write_all(answer.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `SERVICE METHOD [JSON]`; `None` for a blank line.
fn parse(line: &str) -> Option<Result<(&str, &str, serde_json::Value), String>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let mut parts = line.splitn(3, char::is_whitespace);
    let (Some(service), Some(method)) = (parts.next(), parts.next()) else {
        return Some(Err(format!("expected SERVICE METHOD [JSON], got {line:?}")));
    };
    let params = match parts.next().map(str::trim).filter(|p| !p.is_empty()) {
        Some(json) => match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return Some(Err(format!("the params are not JSON ({e})"))),
        },
        None => serde_json::Value::Null,
    };
    Some(Ok((service, method, params)))
}
