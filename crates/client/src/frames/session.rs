//! A frontend's session over frames: the connection opened with
//! `SessionHello` is the session (a lease on the router), kept with
//! keepalives and ended with `Goodbye`.

use std::{path::Path, time::Duration};

use polis_mesh::pb::{self, frame::Kind};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::conn::{Control, Controls, FrameConn, went_away};
use crate::ClientError;

/// How long the router has to welcome a session.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Goodbye` may take to be written on close.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// An open frame session.
#[derive(Debug)]
pub(crate) struct FrameSession {
    conn: FrameConn,
    controls: Controls,
    welcome: pb::SessionWelcome,
}

/// Why a session ended without the client closing it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The router said it is going away.
    Leaving { handover: bool, reason: String },
    /// The connection ended.
    Closed,
}

impl FrameSession {
    /// Connects to the router's socket at `path` and opens a session as `hello`.
    pub(crate) async fn open(path: &Path, hello: pb::SessionHello) -> Result<FrameSession, ClientError> {
        let (conn, mut controls) = FrameConn::open(path).await?;
        conn.send(Kind::SessionHello(hello))?;
        // The router's first word on a session is Welcome, or why not.
        let welcomed = async {
            match controls.recv().await {
                Some(Control::Welcome(welcome)) => Ok(welcome),
                Some(Control::Leaving(l)) => Err(went_away(format!("it is leaving: {}", l.reason))),
                None => Err(conn.closed_status()),
            }
        };
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, welcomed).await.map_err(|_| {
            Status::unavailable(format!("the router did not welcome the session within {WELCOME_TIMEOUT:?}"))
        })??;
        tracing::debug!("frame session open with router {} (epoch {})", welcome.router_id, welcome.epoch);
        Ok(FrameSession { conn, controls, welcome })
    }

    /// The connection, for calls.
    pub(crate) fn conn(&self) -> &FrameConn {
        &self.conn
    }

    /// What the router said when it welcomed the session.
    #[cfg(test)]
    pub(crate) fn welcome(&self) -> &pb::SessionWelcome {
        &self.welcome
    }

    /// Sends keepalives until the session ends or `closed` is cancelled;
    /// on close, says goodbye and closes the connection. `None` when closed.
    pub(crate) async fn hold(&mut self, closed: &CancellationToken) -> Option<Ended> {
        let interval = Duration::from_millis(self.welcome.keepalive_interval_ms.max(10));
        let mut ticks = tokio::time::interval(interval);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    seq += 1;
                    if self.conn.send(Kind::Keepalive(pb::Keepalive { seq })).is_err() {
                        return Some(Ended::Closed);
                    }
                }
                control = self.controls.recv() => match control {
                    Some(Control::Leaving(l)) => {
                        tracing::info!("router leaving ({}); re-attaching", l.reason);
                        return Some(Ended::Leaving { handover: l.handover, reason: l.reason });
                    }
                    Some(Control::Welcome(_)) => {}
                    None => return Some(Ended::Closed),
                },
                () = closed.cancelled() => {
                    self.goodbye().await;
                    return None;
                }
            }
        }
    }

    /// Says goodbye and closes the write side, waiting a bounded time.
    pub(crate) async fn goodbye(&self) {
        let _ = self.conn.send(Kind::Goodbye(pb::Goodbye {}));
        self.conn.shutdown(GOODBYE_TIMEOUT).await;
    }
}
