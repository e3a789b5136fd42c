//! Frame sessions and gRPC over a local socket: a Unix domain socket (a
//! named pipe on Windows), through `interprocess`.
//!
//! [`LocalListener::accept`] takes connections; [`sniff`] tells a frame
//! session from gRPC by a connection's first bytes, so that both share one
//! socket, and hands gRPC a connection for tonic's `serve_with_incoming`.
//! [`connect_channel`] gives a tonic [`Channel`]. Each accepted connection
//! carries its peer's credentials as [`PeerInfo`], which the router uses to
//! refuse other users.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use interprocess::local_socket::{
    GenericFilePath, ListenerOptions, ToFsName,
    tokio::{Listener, Stream, prelude::*},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri, server::Connected};

/// The credentials of a connected peer, read once at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's effective user id, where the platform reports it.
    pub uid: Option<u32>,
    /// The peer's process id, where the platform reports it.
    pub pid: Option<u32>,
}

/// A listening local socket, and optionally connections accepted
/// elsewhere (the router's TCP door) that it hands out with its own.
#[derive(Debug)]
pub struct LocalListener {
    inner: Listener,
    path: PathBuf,
    others: Option<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<LocalConn>>>,
}

/// Binds a local socket at `path`, readable and writable by its owner only.
///
/// An existing file at `path` is an error: removing a stale socket is the
/// caller's decision, taken while it holds the lock that owns the path. The
/// socket file is not removed when the listener drops, for the same reason.
pub fn bind(path: &Path) -> io::Result<LocalListener> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    let options = ListenerOptions::new().name(name).reclaim_name(false);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    let inner = options.create_tokio()?;
    Ok(LocalListener { inner, path: path.to_owned(), others: None })
}

impl LocalListener {
    /// The path this listener is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<LocalConn> {
        let Some(others) = &self.others else { return Ok(LocalConn::new(self.inner.accept().await?)) };
        let mut others = others.lock().await;
        tokio::select! {
            stream = self.inner.accept() => Ok(LocalConn::new(stream?)),
            Some(conn) = others.recv() => Ok(conn),
        }
    }

    /// Hands out the connections of `others` too, as if accepted here.
    pub fn with_others(mut self, others: tokio::sync::mpsc::Receiver<LocalConn>) -> Self {
        self.others = Some(tokio::sync::Mutex::new(others));
        self
    }
}

/// One accepted or connected local-socket connection, or a TCP one that
/// passed the router's token check ([`crate::tcp`]).
#[derive(Debug)]
pub struct LocalConn {
    inner: Inner,
    peer: PeerInfo,
}

#[derive(Debug)]
enum Inner {
    Local(Stream),
    Tcp(tokio::net::TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::TlsStream<tokio::net::TcpStream>>),
}

impl LocalConn {
    fn new(inner: Stream) -> Self {
        let peer = match inner.peer_creds() {
            Ok(creds) => PeerInfo { uid: creds.euid(), pid: creds.pid().and_then(|p| u32::try_from(p).ok()) },
            Err(_) => PeerInfo { uid: None, pid: None },
        };
        Self { inner: Inner::Local(inner), peer }
    }

    /// A TCP connection, with the credentials it is taken to have: those
    /// its token proved (the router's own user), or none on the client side.
    pub fn tcp(stream: tokio::net::TcpStream, peer: PeerInfo) -> Self {
        Self { inner: Inner::Tcp(stream), peer }
    }

    /// A TCP connection inside TLS, as [`LocalConn::tcp`].
    #[cfg(feature = "tls")]
    pub fn tls(stream: tokio_rustls::TlsStream<tokio::net::TcpStream>, peer: PeerInfo) -> Self {
        Self { inner: Inner::Tls(Box::new(stream)), peer }
    }

    /// The peer's credentials.
    pub fn peer(&self) -> PeerInfo {
        self.peer
    }
}

/// Connects to the local socket at `path`.
pub async fn connect(path: &Path) -> io::Result<LocalConn> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    let stream = Stream::connect(name).await?;
    Ok(LocalConn::new(stream))
}

/// A tonic channel to the gRPC server listening at `path`.
///
/// The connection is made now, so that a missing server is an error here and
/// not at the first call. When it breaks, the channel reconnects to the same
/// path on the next call.
pub async fn connect_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    // The URI is only a placeholder: the connector below ignores it.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { connect(&path).await.map(TokioIo::new) }
        }))
        .await
}

impl Connected for LocalConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer
    }
}

/// Calls the same method on whichever stream a [`LocalConn`] holds.
macro_rules! either {
    ($inner:expr, $s:ident => $body:expr) => {
        match $inner {
            Inner::Local($s) => $body,
            Inner::Tcp($s) => $body,
            #[cfg(feature = "tls")]
            Inner::Tls($s) => $body,
        }
    };
}

impl AsyncRead for LocalConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(&mut self.inner, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for LocalConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either!(&mut self.inner, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(&mut self.inner, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(&mut self.inner, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(&mut self.inner, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(&self.inner, s => s.is_write_vectored())
    }
}

/// What a connection to the router is, told by its first bytes.
#[derive(Debug)]
pub enum Opened {
    /// A frame session: its preamble (announcing `version`) has been read,
    /// and is the caller's to answer.
    Frames {
        /// The connection, positioned after the preamble.
        conn: LocalConn,
        /// The version the peer announced.
        version: u16,
    },
    /// Anything else, taken for HTTP/2: the bytes read so far are read
    /// again first, so tonic sees the whole client preface.
    Grpc(Rewound),
}

/// Reads the first [`preamble::LEN`](crate::preamble::LEN) bytes of `conn`
/// and tells a frame session from gRPC. Both kinds of client send at least
/// that many bytes before they wait for the server; a peer that sends fewer
/// and hangs up is an error, and one that sends fewer and waits is the
/// caller's to time out.
pub async fn sniff(mut conn: LocalConn) -> io::Result<Opened> {
    let mut first = [0; crate::preamble::LEN];
    conn.read_exact(&mut first).await?;
    Ok(match crate::preamble::decode(&first) {
        Some(version) => Opened::Frames { conn, version },
        None => Opened::Grpc(Rewound { first, read: 0, conn }),
    })
}

/// A connection whose first bytes were read to tell its protocol, and are
/// served again before the rest.
#[derive(Debug)]
pub struct Rewound {
    first: [u8; crate::preamble::LEN],
    read: usize,
    conn: LocalConn,
}

impl Connected for Rewound {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.conn.peer
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.first.len() {
            let rest = &this.first[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    };

    #[tokio::test]
    async fn a_bound_socket_is_private_and_outlives_its_listener() {
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "socket mode");
        }
        drop(listener);
        assert!(path.exists(), "the socket file is the caller's to remove");
    }

    /// gRPC and a frame session on one socket: each connection is told
    /// apart by its first bytes, and tonic still sees the whole preface.
    #[tokio::test]
    async fn sniffing_tells_frames_from_grpc_on_one_socket() {
        use tokio::io::AsyncWriteExt;

        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(4);
        let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel(4);
        let accept = tokio::spawn(async move {
            loop {
                let conn = listener.accept().await.unwrap();
                match sniff(conn).await.unwrap() {
                    Opened::Frames { conn, version } => frames_tx.send((conn, version)).await.unwrap(),
                    Opened::Grpc(conn) => grpc_tx.send(Ok::<_, io::Error>(conn)).await.unwrap(),
                }
            }
        });
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("polis", ServingStatus::Serving).await;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(grpc_rx)),
        );

        let mut frames = connect(&path).await.unwrap();
        frames.write_all(&crate::preamble::encode(7)).await.unwrap();
        frames.write_all(b"after").await.unwrap();
        let (mut conn, version) = frames_rx.recv().await.unwrap();
        assert_eq!(version, 7);
        let mut after = [0; 5];
        conn.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"after", "the session reads on right after the preamble");

        let mut client = HealthClient::new(connect_channel(&path).await.unwrap());
        let reply = client.check(HealthCheckRequest { service: "polis".into() }).await.unwrap().into_inner();
        assert_eq!(reply.status, health_check_response::ServingStatus::Serving as i32);
        accept.abort();
        server.abort();
    }

    #[tokio::test]
    async fn a_peer_hanging_up_before_the_first_bytes_is_an_error() {
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (client, server) = tokio::join!(connect(&path), listener.accept());
        let server = server.unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut client = client.unwrap();
            client.write_all(b"POL").await.unwrap();
        }
        let err = sniff(server).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn binding_over_an_existing_file_fails() {
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        let path = dir.path().join("t.sock");
        std::fs::write(&path, b"").unwrap();
        assert!(bind(&path).is_err());
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails() {
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        assert!(connect_channel(&dir.path().join("none.sock")).await.is_err());
    }

    #[tokio::test]
    async fn peer_credentials_are_ours() {
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp").unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (client, server) = tokio::join!(connect(&path), listener.accept());
        let (_client, server) = (client.unwrap(), server.unwrap());
        #[cfg(unix)]
        assert_eq!(server.peer().uid, Some(rustix::process::geteuid().as_raw()));
        assert_eq!(server.peer().pid, Some(std::process::id()));
    }
}
