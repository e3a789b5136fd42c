//! The door of `router.sock`: accepts connections and tells each one's
//! protocol by its first bytes. A frame session is served here; anything
//! else goes to tonic as gRPC, with the bytes read so far read again and
//! any `:authority` that is not one rewritten (`authority.rs`), so stock
//! grpcio and grpcurl get in.

use std::{io, sync::Arc, time::Duration};

use polis_mesh::transport::{LocalListener, Opened, Rewound, sniff};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    authority::Fixed,
    conns::{ConnLimit, Counted, refuse_frames},
    frames::FrameDoor,
};

/// How long a new connection has to send its first bytes.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the door waits after a failed accept (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long a connection accepted before the router stopped accepting
/// still has to send its first bytes.
const STOP_GRACE: Duration = Duration::from_millis(250);

/// Accepts on `listener` until `stop`, serving frame sessions through
/// `door` on `tracker`; returns the gRPC connections, for tonic's
/// `serve_with_incoming`. It ends when accepting stops and every
/// connection has been told apart.
pub(crate) fn split(
    listener: LocalListener,
    door: Arc<FrameDoor>,
    tracker: &TaskTracker,
    stop: CancellationToken,
    limit: ConnLimit,
) -> ReceiverStream<io::Result<Counted<Fixed<Rewound>>>> {
    let (grpc, incoming) = mpsc::channel(16);
    let sessions = tracker.clone();
    tracker.spawn(async move {
        loop {
            let conn = tokio::select! {
                conn = listener.accept() => conn,
                () = stop.cancelled() => break,
            };
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed on the router socket: {e}");
                    // Out of descriptors: accepting again at once would spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Over the bound, the connection is still told apart, so that a
            // frame client hears why; a gRPC one is closed.
            let permit = limit.admit();
            let limit = limit.clone();
            let (door, grpc, stop) = (door.clone(), grpc.clone(), stop.clone());
            sessions.spawn(async move {
                let sniffing = tokio::time::timeout(SNIFF_TIMEOUT, sniff(conn));
                tokio::pin!(sniffing);
                let opened = tokio::select! {
                    opened = &mut sniffing => opened,
                    // Accepted before the router stopped accepting: a frame
                    // client is told that the router is leaving (its call
                    // then counts as not run, and is retried elsewhere)
                    // rather than hung up on mid-preamble.
                    () = stop.cancelled() => match tokio::time::timeout(STOP_GRACE, &mut sniffing).await {
                        Ok(opened) => opened,
                        Err(_) => return,
                    },
                };
                match (opened, permit) {
                    (Ok(Ok(Opened::Frames { conn, .. })), None) => {
                        tracing::warn!("{}", limit.refusal().message());
                        refuse_frames(conn, &limit.refusal()).await;
                    }
                    (Ok(Ok(Opened::Grpc(_))), None) => tracing::warn!("{}", limit.refusal().message()),
                    (Ok(Ok(Opened::Frames { conn, version })), Some(_permit)) => {
                        door.serve(conn, version).await
                    }
                    (Ok(Ok(Opened::Grpc(conn))), Some(permit)) => {
                        let _ = grpc.send(Ok(Counted::new(Fixed::new(conn), permit))).await;
                    }
                    (Ok(Err(e)), _) => tracing::debug!("a connection ended before its first bytes: {e}"),
                    (Err(_), _) => {
                        tracing::debug!("a connection sent nothing within {SNIFF_TIMEOUT:?}; closed")
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}
