//! Reaching the router from a command, and turning gRPC statuses into the
//! contract's exit codes.

use polis_client::{ConnectError, Launcher};
use polis_discovery::MeshDir;
use polis_mesh::pb::{admin_client::AdminClient, router_client::RouterClient};
use tonic::{Code, Status, transport::Channel};

use crate::exit::{Failure, NOT_FOUND, REMOTE, UNAVAILABLE};

/// A channel to the router; with `launch`, one is started if none runs.
pub(crate) async fn channel(mesh: &MeshDir, launch: Option<&Launcher>) -> anyhow::Result<Channel> {
    polis_client::connect(mesh, launch).await.map_err(|e| match e {
        ConnectError::Discovery(e) => anyhow::Error::new(e),
        other => Failure::new(UNAVAILABLE, other.to_string()).into(),
    })
}

pub(crate) async fn router(
    mesh: &MeshDir,
    launch: Option<&Launcher>,
) -> anyhow::Result<RouterClient<Channel>> {
    Ok(RouterClient::new(channel(mesh, launch).await?))
}

pub(crate) async fn admin(mesh: &MeshDir) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::new(channel(mesh, None).await?))
}

/// The exit code and `error:` line for a status from the router.
pub(crate) fn failure(status: &Status) -> Failure {
    let code = match status.code() {
        Code::NotFound => NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
        _ => REMOTE,
    };
    Failure::new(code, format!("{}: {}", code_name(status.code()), status.message()))
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
