//! The commands on a mesh whose directory is etcd (`--discovery
//! etcd://…`, `POLIS_DISCOVERY`): the router campaigns through etcd and
//! serves TCP with the mesh's token besides its local socket; frontends
//! find it through etcd and call it over TCP. The local mesh directory
//! still holds what is this machine's: the router's local socket, its
//! modules' records and the logs.
//!
//! The operator's commands (`stop`, `module`, `introspect`, `monitor`,
//! `watch`, `publish`) are the same code as on one machine, handed a
//! channel to the router found through etcd; the ones that work on this
//! machine's files or terminal are refused.

use std::{process::ExitCode, time::Duration};

use polis_discovery::{AsyncDiscovery, Campaign, Discovery, MeshDir, NodeRecord, Office, Role};
use polis_etcd::{Address, Etcd};
use polis_mesh::{
    dial::DialError,
    pb::{self, admin_client::AdminClient, router_client::RouterClient},
    tcp::Token,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    cli::{CallArgs, Cli, Command, ModuleCommand, RouterArgs},
    exit::{Failure, NOT_FOUND, REFUSED, UNAVAILABLE, USAGE},
};

/// How long a frontend keeps looking for a router that answers: through a
/// failover, until the dead router's lease has lapsed and another is elected.
const FIND_WINDOW: Duration = Duration::from_secs(15);

/// The etcd address the command line or `POLIS_DISCOVERY` gives; `None`
/// for the mesh directory alone (unset, empty or `dir`).
pub(super) fn address(cli: &Cli) -> anyhow::Result<Option<Address>> {
    match cli.discovery.as_deref() {
        None | Some("" | "dir") => Ok(None),
        Some(url) => url
            .parse()
            .map(Some)
            .map_err(|e: polis_discovery::Error| Failure::new(USAGE, e.to_string()).into()),
    }
}

pub(super) async fn run(
    cli: Cli,
    address: Address,
    mesh: MeshDir,
    modules_path: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (token_file, tls_ca) = (cli.token_file.clone(), cli.tls_ca.clone());
    let token = || token(token_file.as_deref());
    let creds = || -> anyhow::Result<Credentials> {
        let tls = tls_ca
            .as_deref()
            .map(polis_mesh::tls::ClientTls::from_ca_file)
            .transpose()
            .map_err(|e| Failure::new(REFUSED, e.to_string()))?;
        Ok(Credentials { token: token()?, tls })
    };
    let module_env = module_env(&cli);
    match cli.command {
        Command::Router(args) => router(mesh, modules_path, &args, address, token()?, module_env?).await,
        Command::Call(args) => call(&address, &creds()?, &args).await,
        Command::Status(args) => super::status::status_of(admin(&address, &creds()?).await?, args.json).await,
        Command::Resolve { name } => {
            let etcd = connect(&address).await?;
            match etcd.resolve(&name).await.map_err(unavailable)? {
                Some(record) => say!("{}", record.to_json())?,
                None => {
                    return Err(Failure::new(
                        NOT_FOUND,
                        format!(
                            "no live node serves {name:?} in the mesh at etcd {}{}",
                            address.members(),
                            address.prefix
                        ),
                    )
                    .into());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls(args) => {
            let etcd = connect(&address).await?;
            let listing = etcd.list().await.map_err(unavailable)?;
            let router = etcd.current_router().await.map_err(unavailable)?;
            if args.json {
                say!(
                    "{}",
                    serde_json::json!({"discovery": format!("etcd://{}{}", address.members(), address.prefix), "router": router, "nodes": listing.nodes})
                )?;
            } else {
                match &router {
                    Some(r) => say!(
                        "router pid {}, epoch {}, {}",
                        r.pid,
                        r.epoch.unwrap_or(0),
                        r.endpoint.as_deref().unwrap_or("-")
                    )?,
                    None => say!("router none")?,
                }
                for n in &listing.nodes {
                    say!(
                        "{:<9} {:<16} {:>8}  {}  {}",
                        n.role.to_string(),
                        n.name,
                        n.pid,
                        n.id,
                        n.endpoint.as_deref().unwrap_or("-")
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop => stop(&address, &creds()?).await,
        Command::Module(
            command @ (ModuleCommand::List(_)
            | ModuleCommand::Load { .. }
            | ModuleCommand::Unload { .. }
            | ModuleCommand::Reload { .. }),
        ) => super::status::module_of(admin(&address, &creds()?).await?, command).await,
        Command::Monitor(args) => super::monitor::run_on(admin(&address, &creds()?).await?, args).await,
        Command::Introspect(args) => {
            super::introspect::describe(admin(&address, &creds()?).await?, args).await
        }
        Command::Watch(args) => {
            let channel = router_channel(&address, &creds()?, args.no_launch).await?;
            super::watch::watch_on(RouterClient::new(channel), args).await
        }
        Command::Publish(args) => {
            let channel = router_channel(&address, &creds()?, args.no_launch).await?;
            super::watch::publish_on(RouterClient::new(channel), args).await
        }
        _ => Err(Failure::new(
            USAGE,
            "this command does not work with --discovery etcd: it works on this machine's files or \
             terminal (attach, module install/remove/new, log); run it on the router's machine without \
             --discovery",
        )
        .into()),
    }
}

/// What a router on etcd tells the modules it spawns, so that one that
/// loses it finds the next router (on any machine) and authenticates to it:
/// the discovery address, and the paths of the token file and the mesh CA
/// (absolute: a module runs in its manifest's directory). The token itself
/// is never put in the environment.
fn module_env(cli: &Cli) -> anyhow::Result<Vec<(String, std::ffi::OsString)>> {
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path).map_err(|e| Failure::new(USAGE, format!("{}: {e}", path.display())))
    };
    let mut env = Vec::new();
    if let Some(url) = &cli.discovery {
        env.push(("POLIS_DISCOVERY".to_owned(), url.into()));
    }
    if let Some(path) = &cli.token_file {
        env.push(("POLIS_TOKEN_FILE".to_owned(), absolute(path)?.into()));
    }
    if let Some(path) = &cli.tls_ca {
        env.push(("POLIS_TLS_CA".to_owned(), absolute(path)?.into()));
    }
    Ok(env)
}

/// What a frontend proves and trusts: the mesh's token, and the mesh CA
/// when the router serves TLS.
struct Credentials {
    token: Token,
    tls: Option<polis_mesh::tls::ClientTls>,
}

/// The Admin service of the router in office (found once: no failover
/// window for an operator's command).
async fn admin(address: &Address, creds: &Credentials) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::new(router_channel(address, creds, true).await?))
}

/// `polis stop` on etcd: asks the router in office to stop, and waits
/// until etcd no longer has it in office.
async fn stop(address: &Address, creds: &Credentials) -> anyhow::Result<ExitCode> {
    let etcd = connect(address).await?;
    let Some(router) = etcd.current_router().await.map_err(unavailable)? else {
        return Ok(ExitCode::SUCCESS);
    };
    admin(address, creds).await?.stop(pb::StopRequest {}).await.map_err(super::rpc::status)?;
    // Modules get their grace period first; a minute covers any sane one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while etcd.current_router().await.map_err(unavailable)?.is_some_and(|r| r.id == router.id) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(UNAVAILABLE, "the router did not leave office within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    say!("router pid {} stopped", router.pid)?;
    Ok(ExitCode::SUCCESS)
}

/// The token of `--token-file` / `POLIS_TOKEN_FILE`, which a mesh on etcd needs.
fn token(path: Option<&std::path::Path>) -> anyhow::Result<Token> {
    let Some(path) = path else {
        return Err(Failure::new(
            REFUSED,
            "UNAUTHENTICATED: a mesh on etcd is reached over TCP with its token: give --token-file FILE \
             or POLIS_TOKEN_FILE (a file of mode 0600 holding one line)",
        )
        .into());
    };
    Token::read(path).map_err(|e| Failure::new(REFUSED, e.to_string()).into())
}

async fn connect(address: &Address) -> anyhow::Result<Etcd> {
    Etcd::connect(address.clone()).await.map_err(unavailable)
}

fn unavailable(error: polis_discovery::Error) -> anyhow::Error {
    Failure::new(UNAVAILABLE, error.to_string()).into()
}

/// `polis router` on etcd: the local office first (one router per mesh
/// directory), then the TCP endpoint, then etcd's election, waiting (and
/// retrying while etcd is out of reach) until elected.
async fn router(
    mesh: MeshDir,
    modules_path: Option<&str>,
    args: &RouterArgs,
    address: Address,
    token: Token,
    module_env: Vec<(String, std::ffi::OsString)>,
) -> anyhow::Result<ExitCode> {
    let Some(listen) = &args.listen else {
        return Err(Failure::new(
            USAGE,
            "a router on etcd needs --listen HOST:PORT for frontends on other machines",
        )
        .into());
    };
    let Campaign::Won(term) = Discovery::campaign(&mesh)? else {
        say!("a router already runs for the mesh directory {}", mesh.root().display())?;
        return Ok(ExitCode::SUCCESS);
    };
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Failure::new(UNAVAILABLE, format!("UNAVAILABLE: cannot listen on {listen}: {e}")))?;
    let advertised = match &args.advertise {
        Some(a) => a.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            polis_mesh::tls::ServerTls::from_pem_files(cert, key)
                .map_err(|e| Failure::new(REFUSED, e.to_string()))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "tls" } else { "tcp" };
    let mut record = NodeRecord::new(Role::Router, "router");
    record.version = env!("CARGO_PKG_VERSION").to_owned();
    record.endpoint = Some(format!("{scheme}:{advertised}"));

    let shutdown = CancellationToken::new();
    // Told apart from the office being lost, which cancels `shutdown` too.
    let signalled = CancellationToken::new();
    let signals = tokio::spawn({
        let (signalled, shutdown) = (signalled.clone(), shutdown.clone());
        async move {
            super::router::cancel_on_signal(signalled).await;
            shutdown.cancel();
        }
    });
    let elected = tokio::select! {
        elected = elect(&address, &record) => elected,
        () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
    };
    let (etcd, office, _node) = elected;
    let lost = office.lost();
    say!("router in office through etcd: epoch {}, {scheme}:{advertised}", office.epoch())?;

    let mut host = polis_node::HostConfig::new(polis_node::manifest::ModulePath::new(modules_path));
    host.grace = args.grace;
    host.max_frame_len = args.max_frame;
    host.module_env = module_env;
    // Modules on every machine publish their records in etcd: a call that
    // reaches this router before a module of a dead router is back waits
    // for it instead of starting another and losing its state.
    host.sightings = Some(std::sync::Arc::new(etcd.clone()));
    let sessions = polis_node::router::SessionConfig {
        // A router on etcd is a service of the mesh: it stays unless told.
        linger: args.linger.unwrap_or(crate::cli::NEVER),
        keepalive_interval: args.keepalive_interval,
        keepalive_timeout: args.keepalive_timeout,
    };
    let config =
        polis_node::router::RouterConfig { host, sessions, successor: None, hand_over_on_exit: false };
    let remote = polis_node::router::Remote {
        listener,
        token,
        tls,
        epoch: office.epoch(),
        lost: lost.clone(),
        id: record.id,
    };
    let served = polis_node::router::serve_remote(term, config, Some(remote), shutdown.clone()).await;
    signals.abort();
    let was_lost = lost.is_cancelled() && !signalled.is_cancelled();
    office.resign().await;
    etcd.close().await;
    served?;
    if was_lost {
        return Err(Failure::new(
            UNAVAILABLE,
            format!(
                "UNAVAILABLE: lost the router office: etcd at {} did not renew the lease in time",
                address.members()
            ),
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects and campaigns until elected, riding out an etcd without
/// quorum. One connection, and so one lease, for every try: a campaign
/// that failed leaves its key under that lease, and the next try takes
/// the same place in the queue rather than leaving a ghost ahead of it.
async fn elect(
    address: &Address,
    record: &NodeRecord,
) -> (Etcd, polis_etcd::EtcdTerm, polis_etcd::EtcdGuard) {
    let mut backoff = Duration::from_millis(100);
    let mut etcd = None;
    loop {
        let attempt = async {
            let etcd = match &etcd {
                Some(etcd) => etcd,
                None => etcd.insert(Etcd::connect(address.clone()).await?),
            };
            let office = etcd.campaign(record).await?;
            let node = etcd.publish(record).await?;
            Ok::<_, polis_discovery::Error>((office, node))
        };
        match attempt.await {
            Ok((office, node)) => return (etcd.expect("connected above"), office, node),
            Err(e) => {
                tracing::warn!("campaigning through etcd: {e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// `polis call` on etcd: the router in office, over TCP with the token; a
/// router that does not answer (dead, its lease not lapsed yet) is looked
/// up again until another is elected or the window is over.
async fn call(address: &Address, creds: &Credentials, args: &CallArgs) -> anyhow::Result<ExitCode> {
    let payload = match &args.params {
        Some(text) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
                return Err(Failure::new(USAGE, format!("the params are not JSON ({e})")).into());
            }
            bytes::Bytes::from(text.clone())
        }
        None => bytes::Bytes::new(),
    };
    let channel = router_channel(address, creds, args.no_launch).await?;
    let name = format!("polis-cli/{}", std::process::id());
    let caller = polis_client::Caller::from_channel(channel, name);
    let print =
        |data: &[u8]| say!("{}", if data.is_empty() { "null".into() } else { String::from_utf8_lossy(data) });
    if args.stream {
        let mut items = caller
            .call_stream(&args.service, &args.method, payload, args.timeout)
            .await
            .map_err(super::rpc::failure)?;
        while let Some(item) = items.next_payload().await {
            print(&item.map_err(super::rpc::failure)?)?;
        }
    } else {
        let options =
            polis_client::CallOptions { timeout: args.timeout, idempotent: false, unary_only: true };
        let reply =
            caller.call(&args.service, &args.method, payload, options).await.map_err(super::rpc::failure)?;
        print(&reply)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A channel to the router in office, over TCP (inside TLS for a `tls:`
/// endpoint) with the token; a router that does not answer (dead, its
/// lease not lapsed yet) is looked up again until another is elected or
/// the window is over (`once`: one look). A refusal (the token, the
/// router's certificate, TLS asked for on one side only) is final.
async fn router_channel(
    address: &Address,
    creds: &Credentials,
    once: bool,
) -> anyhow::Result<tonic::transport::Channel> {
    let etcd = connect(address).await?;
    let deadline = tokio::time::Instant::now() + FIND_WINDOW;
    Ok(loop {
        let why = match etcd.current_router().await.map_err(unavailable)? {
            None => {
                format!("no router is in office in the mesh at etcd {}{}", address.members(), address.prefix)
            }
            Some(router) => {
                let endpoint = router.endpoint.clone().unwrap_or_default();
                match polis_mesh::dial::endpoint(&endpoint, &creds.token, creds.tls.as_ref()).await {
                    Ok(channel) => break channel,
                    Err(DialError::Refused(why)) => return Err(Failure::new(REFUSED, why).into()),
                    Err(DialError::BadEndpoint(why)) => return Err(Failure::new(UNAVAILABLE, why).into()),
                    Err(DialError::Unreachable(why)) => {
                        format!("{why} (epoch {})", router.epoch.unwrap_or(0))
                    }
                }
            }
        };
        if once || tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(UNAVAILABLE, format!("UNAVAILABLE: {why}")).into());
        }
        tracing::debug!("{why}; looking again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
}
