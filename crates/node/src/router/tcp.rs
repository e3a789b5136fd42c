//! The router's TCP door, for a mesh across machines (`polis router
//! --listen`): accepts TCP connections, lets in those that send the mesh's
//! token (`polis_mesh::tcp`), and hands them to the same door as
//! `router.sock`'s, as connections of the router's own user. A connection
//! without the token never reaches a service.

use polis_mesh::{
    tcp::{AUTH_TIMEOUT, Token},
    tls::ServerTls,
    transport::{LocalConn, PeerInfo},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a router on etcd brings to [`super::serve_remote`].
#[derive(Debug)]
pub struct Remote {
    /// The TCP listener, bound already (its address is in the router's
    /// record in etcd).
    pub listener: std::net::TcpListener,
    /// The shared token clients must send.
    pub token: Token,
    /// The router's certificate and key: TLS before the token, when given.
    pub tls: Option<ServerTls>,
    /// The term's epoch in etcd: the fencing token, in place of the
    /// directory's.
    pub epoch: u64,
    /// Cancelled once the office is lost (the lease could not be renewed
    /// in time): the router stops taking calls at once.
    pub lost: CancellationToken,
    /// The router's id, as published in etcd.
    pub id: uuid::Uuid,
}

/// Accepts on `listener` until `stop`, and sends every authenticated
/// connection down the returned channel.
pub(crate) fn door(
    listener: std::net::TcpListener,
    token: Token,
    tls: Option<ServerTls>,
    uid: u32,
    stop: CancellationToken,
) -> std::io::Result<mpsc::Receiver<LocalConn>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed on the router's TCP endpoint: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let (tx, token, tls) = (tx.clone(), token.clone(), tls.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                // The token is the proof of being the mesh's user.
                let proven = PeerInfo { uid: Some(uid), pid: None };
                let admitted = polis_mesh::tcp::admit(stream, &token, tls.as_ref(), proven);
                match tokio::time::timeout(AUTH_TIMEOUT, admitted).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(e)) => tracing::warn!("refused TCP client {peer}: {e}"),
                    Err(_) => tracing::warn!("refused TCP client {peer}: no token within {AUTH_TIMEOUT:?}"),
                }
            });
        }
    });
    Ok(rx)
}
