//! `polis router`: a router candidate in the foreground.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use polis_discovery::{Campaign, Discovery, MeshDir, NodeRecord};
use tokio_util::sync::CancellationToken;

use crate::cli::{RouterAction, RouterArgs};

/// How long a losing candidate waits for the winner to publish itself.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn run(
    mesh: MeshDir,
    modules_path: Option<&str>,
    args: &RouterArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(RouterAction::Restart) = args.action {
        return restart(&mesh).await;
    }
    if args.detach {
        // A launched router must not die with the launching frontend's
        // terminal or session. Failing means we lead a session already.
        #[cfg(unix)]
        let _ = rustix::process::setsid();
    }
    let term = match campaign(&mesh, args.detach).await? {
        Campaign::Won(term) => term,
        Campaign::Lost => {
            let in_office = wait_for_router(&mesh).await?;
            if !args.standby {
                say!("router in office: {}", describe(in_office.as_ref()))?;
                return Ok(ExitCode::SUCCESS);
            }
            say!("standing by: router in office: {}", describe(in_office.as_ref()))?;
            let mesh = mesh.clone();
            tokio::task::spawn_blocking(move || mesh.standby()).await.context("standby task failed")??
        }
    };

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    // The router in office keeps the mesh's logs bounded, its own included.
    let logs = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::logs::keep_bounded(
        mesh.logs_dir(),
        args.log_max_bytes,
        shutdown.clone(),
    )));
    let mut host = polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(modules_path));
    host.grace = args.grace;
    host.max_frame_len = args.max_frame;
    let sessions = polis_node::router::SessionConfig {
        linger: args.linger(),
        keepalive_interval: args.keepalive_interval,
        keepalive_timeout: args.keepalive_timeout,
    };
    let successor = successor(&mesh, modules_path, args);
    let config = polis_node::router::RouterConfig {
        host,
        sessions,
        successor: Some(successor),
        hand_over_on_exit: false,
    };
    let served = polis_node::router::serve(term, config, shutdown).await;
    signals.abort();
    drop(logs);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The router in office, once it has published itself (it may be starting).
/// Takes the office if free. A launched router (`--detach`) that finds it
/// held by a router that is leaving (no `router.json` any more) tries again
/// while none is published, so that the launching frontend gets the next
/// router as soon as the last one lets go.
async fn campaign(mesh: &MeshDir, launched: bool) -> anyhow::Result<Campaign<polis_discovery::Term>> {
    let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
    loop {
        match mesh.campaign()? {
            Campaign::Lost
                if launched && mesh.current_router()?.is_none() && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Ok(other),
        }
    }
}

async fn wait_for_router(mesh: &MeshDir) -> anyhow::Result<Option<NodeRecord>> {
    let watch = mesh.watch()?;
    Ok(watch.wait_for(PUBLISH_WAIT, || mesh.current_router()).await?)
}

fn describe(router: Option<&NodeRecord>) -> String {
    match router {
        Some(r) => format!("pid {}, epoch {}, id {}", r.pid, r.epoch.unwrap_or(0), r.id),
        None => "starting (not yet published)".into(),
    }
}

pub(super) async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::warn!("cannot listen for signals; stop the router with `polis stop`");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

/// The command line of a successor: this router's settings, standing by.
fn successor(
    mesh: &MeshDir,
    modules_path: Option<&str>,
    args: &RouterArgs,
) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
    let program = std::env::current_exe().unwrap_or_else(|_| "polis".into());
    let mut argv: Vec<std::ffi::OsString> = vec!["--mesh-dir".into(), mesh.root().into()];
    if let Some(paths) = modules_path {
        argv.extend(["--modules-path".into(), paths.into()]);
    }
    let duration = |d: Duration| {
        if d == crate::cli::NEVER { "never".into() } else { humantime::format_duration(d).to_string().into() }
    };
    argv.extend([
        "router".into(),
        "--standby".into(),
        "--detach".into(),
        "--linger".into(),
        duration(args.linger()),
        "--keepalive-interval".into(),
        duration(args.keepalive_interval),
        "--keepalive-timeout".into(),
        duration(args.keepalive_timeout),
        "--grace".into(),
        duration(args.grace),
        "--max-frame".into(),
        args.max_frame.to_string().into(),
        "--log-max-bytes".into(),
        args.log_max_bytes.to_string().into(),
    ]);
    (program, argv)
}

/// `polis router restart`: asks the router for a planned handover, and
/// waits for its successor to take office.
async fn restart(mesh: &MeshDir) -> anyhow::Result<ExitCode> {
    let Some(old) = mesh.current_router()? else {
        return Err(crate::exit::Failure::new(
            crate::exit::UNAVAILABLE,
            format!("UNAVAILABLE: no router is running in the mesh at {}", mesh.root().display()),
        )
        .into());
    };
    let watch = mesh.watch()?;
    let mut admin = super::rpc::admin(mesh).await?;
    let reply = admin.restart(polis_mesh::pb::RestartRequest {}).await.map_err(super::rpc::status)?;
    let successor = reply.into_inner().successor_pid;
    let epoch = old.epoch.unwrap_or(0) + 1;
    let new = watch
        .wait_for(Duration::from_secs(30), || Ok(mesh.current_router()?.filter(|r| r.epoch >= Some(epoch))))
        .await?
        .context("the successor did not take office within 30 s")?;
    say!("router restarted: pid {} (was {}), epoch {}", new.pid, old.pid, new.epoch.unwrap_or(0))?;
    if new.pid != successor {
        tracing::warn!("another router ({}) took office, not the successor ({successor})", new.pid);
    }
    Ok(ExitCode::SUCCESS)
}
