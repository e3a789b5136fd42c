//! Reaching the router in office for one-shot calls, through a change of
//! router: a router that is leaving is not a router. A connection it
//! refuses (its socket no longer listens, or it hung up on the preamble)
//! carried no call, so the router is looked up again (and launched, under
//! `spawn.lock`, when none is left) until one answers or the window ends.

use std::time::Duration;

use polis_discovery::MeshDir;
use tokio::time::Instant;

use crate::{
    ClientError, ConnectError, Transport,
    call::Route,
    connect::{self, Launcher},
};

/// How long a one-shot caller keeps looking for the next router.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Whether `err` says that no router took the connection, so that nothing
/// was run and looking again is safe.
pub(crate) fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::Connect(ConnectError::Socket { .. } | ConnectError::Connect { .. }) => true,
        ClientError::Connect(ConnectError::NotARouter { reason, .. }) => reason == crate::frames::HUNG_UP,
        _ => false,
    }
}

/// A route to the router in office, found (or launched) anew on every try,
/// until one takes the connection or `window` passes.
pub(crate) async fn route(
    mesh: &MeshDir,
    launcher: Option<&Launcher>,
    transport: Transport,
    window: Duration,
) -> Result<Route, ClientError> {
    let deadline = Instant::now() + window;
    let mut backoff = Duration::from_millis(1);
    loop {
        let tried = async { Route::open(&connect::find(mesh, launcher).await?, transport).await }.await;
        match tried {
            Err(err) if is_transient(&err) && Instant::now() + backoff < deadline => {
                tracing::debug!("the router did not take the connection ({err}); looking again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
