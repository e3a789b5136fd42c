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

    async fn stop(&self, _: Request<pb::StopRequest>) -> Result<Response<pb::StopReply>, Status> {
        tracing::info!("stop requested");
        self.shutdown.cancel();
        Ok(Response::new(pb::StopReply {}))
    }
}
