//! What the router's socket may cost it (issue 11, finding 2): the soft
//! `nofile` limit raised to the hard one at start, a bound on connections
//! open at once (the one over it is told so and closed), and a deadline for
//! a gRPC connection to get past its preface. A frame connection that sends
//! nothing after its preamble is closed by the session's own silence rule
//! (`frames.rs`), and one that sends nothing at all by the door's sniff
//! deadline (`accept.rs`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::transport::server::Connected;

/// Overrides the bound on connections (for tests, and for users with
/// unusual needs); unset, it follows the `nofile` limit.
pub(crate) const MAX_CONNECTIONS_ENV: &str = "POLIS_MAX_CONNECTIONS";

/// Descriptors kept for everything but frontends' connections: module
/// pipes, records, locks, logs.
const RESERVED_FDS: u64 = 256;

/// How long a gRPC connection has, from its preface, to send its first
/// HTTP/2 frame (its SETTINGS).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Raises the soft `nofile` limit to the hard one; returns the soft limit
/// in force afterwards (`None` when it is unlimited or cannot be read).
pub(crate) fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let before = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::info!("raised the open-file limit from {before:?} to {:?}", limit.maximum),
            Err(e) => tracing::warn!("cannot raise the open-file limit from {before:?}: {e}"),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The connections open on the router socket, up to a bound.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimit {
    open: Arc<Semaphore>,
    max: usize,
}

impl ConnLimit {
    /// The bound from `POLIS_MAX_CONNECTIONS`, else half of what `nofile`
    /// leaves after [`RESERVED_FDS`] (each module takes descriptors too).
    pub(crate) fn from_env(nofile: Option<u64>) -> Self {
        let from_env = std::env::var(MAX_CONNECTIONS_ENV).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let from_nofile =
            nofile.map_or(16_384, |n| (n.saturating_sub(RESERVED_FDS) / 2).clamp(16, 65_536) as usize);
        let max = from_env.filter(|&n| n > 0).unwrap_or(from_nofile);
        Self { open: Arc::new(Semaphore::new(max)), max }
    }

    /// A place for one more connection, or `None` when all are taken.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// What a connection over the bound is told.
    pub(crate) fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "the router has {} connections open, its limit ({MAX_CONNECTIONS_ENV}); this one is refused: \
             close idle connections and try again",
            self.max
        ))
    }
}

/// Tells a frame client over the bound why it is refused: the preamble,
/// then an `Error` frame; then a moment to read what it still sends, so
/// that closing does not reset the connection before it reads why.
pub(crate) async fn refuse_frames(conn: polis_mesh::transport::LocalConn, status: &tonic::Status) {
    use polis_mesh::{pb, preamble};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = conn;
    let error = pb::Error { code: status.code() as i32, message: status.message().to_owned() };
    let frame = pb::Frame { kind: Some(pb::frame::Kind::Error(error)) };
    let mut bytes = preamble::encode(preamble::VERSION).to_vec();
    bytes.extend(polis_mesh::codec::encode_frame(&frame));
    let told = async {
        conn.write_all(&bytes).await?;
        conn.flush().await?;
        let mut buf = [0; 4096];
        while conn.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), told).await;
}

/// A gRPC connection holding its place under the bound, and held to
/// [`HANDSHAKE_TIMEOUT`] until it has sent its preface and a frame head.
pub(crate) struct Counted<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// Bytes read so far, counted until the handshake is done.
    read: usize,
    handshake: Option<Pin<Box<Sleep>>>,
}

/// The preface (24 bytes) and one HTTP/2 frame head (9).
const HANDSHAKE_BYTES: usize = 24 + 9;

impl<T> Counted<T> {
    pub(crate) fn new(inner: T, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
            read: 0,
            handshake: Some(Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT))),
        }
    }
}

impl<T: Connected> Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = &mut this.handshake {
            this.read += buf.filled().len() - before;
            if this.read >= HANDSHAKE_BYTES {
                this.handshake = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("a gRPC connection sent no frame within {HANDSHAKE_TIMEOUT:?}; closed");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake in time",
                )));
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
