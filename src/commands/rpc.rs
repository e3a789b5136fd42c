//! Reaching the router from a command, and the one mapping of a frontend's
//! errors ([`polis_client::ClientError`]) onto the contract's exit codes.

use polis_client::{ClientError, ConnectError};
use polis_discovery::MeshDir;
use polis_mesh::pb::admin_client::AdminClient;
use tonic::{Code, Status, transport::Channel};

use crate::exit::{Failure, NOT_FOUND, REMOTE, UNAVAILABLE};

/// The Admin service of the router in office; never launches one.
pub(crate) async fn admin(mesh: &MeshDir) -> anyhow::Result<AdminClient<Channel>> {
    let channel = polis_client::connect(mesh, None).await.map_err(|e| failure(e.into()))?;
    Ok(AdminClient::new(channel))
}

/// The exit code and `error:` line for what went wrong.
pub(crate) fn failure(error: ClientError) -> anyhow::Error {
    let code = match error.code() {
        Code::NotFound => NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
        _ => REMOTE,
    };
    match error {
        // A broken mesh directory says what to fix in its own words.
        ClientError::Connect(ConnectError::Discovery(e)) | ClientError::Discovery(e) => e.into(),
        other => Failure::new(code, other.to_string()).into(),
    }
}

/// [`failure`] for a status an Admin call returned: mapped like any call's,
/// so a router killed mid-call is `UNAVAILABLE` here too.
pub(crate) fn status(status: Status) -> anyhow::Error {
    failure(status.into())
}
