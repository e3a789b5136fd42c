//! The `Admin` service: status, modules at run time, and stop.

use std::{sync::Arc, time::Instant};

use polis_mesh::pb::{self, admin_server::Admin};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::sessions::SessionTable;
use crate::host::Host;

pub(crate) struct AdminService {
    pub(crate) host: Arc<Host>,
    pub(crate) sessions: Arc<SessionTable>,
    pub(crate) identity: pb::StatusReply,
    pub(crate) started: Instant,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled before `shutdown` when leaving for a successor.
    pub(crate) handover: CancellationToken,
    pub(crate) successor: Option<(std::path::PathBuf, Vec<std::ffi::OsString>)>,
    pub(crate) log: std::path::PathBuf,
}

/// How long a successor has to stand by.
const SUCCESSOR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl AdminService {
    /// Starts the successor and waits until it stands by on the lock.
    async fn start_successor(&self) -> Result<u32, Status> {
        use tokio::io::AsyncBufReadExt;
        let Some((program, args)) = &self.successor else {
            return Err(Status::failed_precondition("this router cannot start a successor"));
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log);
        let log = log.map_err(|e| Status::internal(format!("cannot open {}: {e}", self.log.display())))?;
        // In `/`, as a launched router runs (polis_client::connect): a
        // router pins no frontend's working directory. Its command line is
        // made of absolute paths (the CLI makes `--modules-path` absolute).
        let cwd = std::path::Path::new("/");
        // `--detach` calls setsid, which a group leader may not: Group::Parent.
        let mut child = polis_mesh::process::command(program, cwd, polis_mesh::process::Group::Parent)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Status::internal(format!("cannot start a successor ({}): {e}", program.display()))
            })?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match tokio::time::timeout(SUCCESSOR_WAIT, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("standing by") => Ok(pid),
            outcome => {
                // Killed and reaped: a failed successor leaves no zombie behind.
                let _ = child.start_kill();
                let status = child.wait().await;
                Err(Status::internal(format!(
                    "the successor did not stand by ({outcome:?}, then {status:?}); see {}",
                    self.log.display()
                )))
            }
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let mut reply = self.identity.clone();
        reply.uptime_ms = self.started.elapsed().as_millis() as u64;
        reply.modules = self.host.modules();
        reply.sessions = self.sessions.list();
        Ok(Response::new(reply))
    }

    async fn list_modules(
        &self,
        _: Request<pb::ListModulesRequest>,
    ) -> Result<Response<pb::ListModulesReply>, Status> {
        Ok(Response::new(pb::ListModulesReply { modules: self.host.modules() }))
    }

    async fn load_module(
        &self,
        request: Request<pb::ModuleRequest>,
    ) -> Result<Response<pb::ModuleInfo>, Status> {
        Ok(Response::new(self.host.load(&request.into_inner().name).await?))
    }

    async fn unload_module(
        &self,
        request: Request<pb::ModuleRequest>,
    ) -> Result<Response<pb::ModuleInfo>, Status> {
        Ok(Response::new(self.host.unload(&request.into_inner().name).await?))
    }

    async fn reload_module(
        &self,
        request: Request<pb::ModuleRequest>,
    ) -> Result<Response<pb::ModuleInfo>, Status> {
        let name = request.into_inner().name;
        // Unloading a module that is not loaded is fine for a reload.
        match self.host.unload(&name).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(self.host.load(&name).await?))
    }

    async fn restart(&self, _: Request<pb::RestartRequest>) -> Result<Response<pb::RestartReply>, Status> {
        let successor_pid = self.start_successor().await?;
        tracing::info!("handing over to the successor, pid {successor_pid}");
        self.handover.cancel();
        self.shutdown.cancel();
        Ok(Response::new(pb::RestartReply { successor_pid }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeReply>, Status> {
        Ok(Response::new(self.host.describe(&request.into_inner().service).await?))
    }

    type MonitorStream = super::monitor::MonitorStream;

    async fn monitor(
        &self,
        request: Request<pb::MonitorRequest>,
    ) -> Result<Response<Self::MonitorStream>, Status> {
        let pb::MonitorRequest { pattern, payloads } = request.into_inner();
        let watch = self.host.monitor().watch(pattern, payloads);
        Ok(Response::new(super::monitor::MonitorStream::new(watch, self.shutdown.clone())))
    }

    async fn add_module_path(
        &self,
        request: Request<pb::AddModulePathRequest>,
    ) -> Result<Response<pb::AddModulePathReply>, Status> {
        let added = self.host.add_module_dirs(&request.into_inner().dirs)?;
        let text = |dirs: &[std::path::PathBuf]| dirs.iter().map(|d| d.display().to_string()).collect();
        if !added.is_empty() {
            tracing::info!("modules path: added {:?}", added);
        }
        let dirs = text(self.host.modules_path().dirs());
        Ok(Response::new(pb::AddModulePathReply { added: text(&added), dirs }))
    }

    async fn replace_module(
        &self,
        request: Request<pb::ModuleRequest>,
    ) -> Result<Response<pb::ModuleInfo>, Status> {
        Ok(Response::new(self.host.replace(&request.into_inner().name).await?))
    }

    async fn stop(&self, _: Request<pb::StopRequest>) -> Result<Response<pb::StopReply>, Status> {
        tracing::info!("stop requested");
        self.shutdown.cancel();
        Ok(Response::new(pb::StopReply {}))
    }
}
