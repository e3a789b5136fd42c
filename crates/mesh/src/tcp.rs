//! The router's TCP endpoint, for a mesh across machines: a shared token
//! that the client sends in a preamble of its own before anything else.
//!
//! The wire: the client sends `polis-auth <token>\n`; the router answers
//! `ok\n` and the connection goes on as on `router.sock` (a frame session's
//! preamble, or gRPC), or answers `UNAUTHENTICATED: <why>\n` and closes it.
//! The token is read from a file that only its owner may read (mode 0600
//! or stricter), as an SSH key is.

use std::{io, path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    tls::{ClientTls, ServerTls},
    transport::{LocalConn, PeerInfo},
};

/// The first bytes of an authenticating client.
pub const AUTH: &str = "polis-auth ";

/// The router's answer to a good token.
const OK: &str = "ok\n";

/// The longest line either side reads: a token is at most this long.
const MAX_LINE: u64 = 512;

/// How long a TCP client has to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A shared secret, read from its file.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// Reads the token from `path`: its first line, trimmed. A file that
    /// group or others may read, an empty token, or one with spaces or
    /// control characters, is refused (the error names the file and why).
    pub fn read(path: &Path) -> io::Result<Self> {
        let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
        check_private(path, "token file")?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read the token file {}: {e}", path.display()))
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() || token.len() as u64 > MAX_LINE - AUTH.len() as u64 - 1 {
            return Err(refuse(format!(
                "the token file {} holds no token of 1 to 400 characters",
                path.display()
            )));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse(format!("the token in {} has spaces or control characters", path.display())));
        }
        Ok(Self(token.to_owned()))
    }

    /// A token from its text, for tests and for callers that keep it elsewhere.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Compares in time independent of where the texts differ.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Refuses a secret's file (`what`: "token file", "TLS key") that group or
/// others may read, as SSH refuses a key.
pub(crate) fn check_private(path: &Path, what: &str) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read the {what} {}: {e}", path.display())))?
            .mode();
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the {what} {} has mode {:03o}: others may read it; run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Router side: reads the client's preamble and answers it. `Ok(())`: the
/// connection goes on; `Err`: it was refused (and told why), or broke.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, token: &Token) -> io::Result<()> {
    let mut line = Vec::new();
    let read = {
        let mut reader = BufReader::new((&mut *stream).take(MAX_LINE));
        // One byte at a time past the line would be lost in the BufReader:
        // read_until stops at the newline, and a client sends nothing more
        // before our answer.
        reader.read_until(b'\n', &mut line).await?
    };
    let given = std::str::from_utf8(&line[..read]).ok().and_then(|l| l.strip_prefix(AUTH)).map(str::trim_end);
    let refusal = match given {
        Some(given) if token.matches(given) => {
            stream.write_all(OK.as_bytes()).await?;
            return Ok(());
        }
        Some(_) => "UNAUTHENTICATED: wrong token for this mesh's router",
        None => {
            "UNAUTHENTICATED: this router's TCP endpoint takes clients with the mesh's token only \
                 (polis --token-file FILE, or POLIS_TOKEN_FILE)"
        }
    };
    let _ = stream.write_all(format!("{refusal}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
    Err(io::Error::new(io::ErrorKind::PermissionDenied, refusal))
}

/// Router side: a TCP client just accepted, let in: the TLS handshake
/// when `tls` is given, then the token ([`check`]). The connection carries
/// `peer`, the credentials the token proves.
pub async fn admit(
    stream: tokio::net::TcpStream,
    token: &Token,
    tls: Option<&ServerTls>,
    peer: PeerInfo,
) -> io::Result<LocalConn> {
    match tls {
        None => {
            let mut stream = stream;
            check(&mut stream, token).await?;
            Ok(LocalConn::tcp(stream, peer))
        }
        #[cfg(feature = "tls")]
        Some(tls) => {
            let mut stream = tls.accept(stream).await?;
            check(&mut stream, token).await?;
            Ok(LocalConn::tls(stream, peer))
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    }
}

/// How long a client gives a router to take its connection, finish TLS
/// and answer its token. A router cut off by a partition drops the SYN (or
/// the token) silently, and TCP alone would try for two minutes; past this
/// the router is taken as gone (`TimedOut`), and a frontend looks the
/// router up again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Client side: connects to `addr`, inside TLS when `tls` is given,
/// authenticates with `token`, and gives the connection, ready for a frame
/// session's preamble or gRPC. A refusal is a `PermissionDenied` error
/// whose text is the router's (`UNAUTHENTICATED: …`); no answer within
/// [`CONNECT_TIMEOUT`] is `TimedOut`.
pub async fn connect(addr: &str, token: &Token, tls: Option<&ClientTls>) -> io::Result<LocalConn> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_now(addr, token, tls)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {addr} within {CONNECT_TIMEOUT:?} (is the router's machine reachable?)"),
        )),
    }
}

async fn connect_now(addr: &str, token: &Token, tls: Option<&ClientTls>) -> io::Result<LocalConn> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let peer = PeerInfo { uid: None, pid: None };
    match tls {
        None => {
            let mut stream = stream;
            authenticate(&mut stream, addr, token).await?;
            Ok(LocalConn::tcp(stream, peer))
        }
        #[cfg(feature = "tls")]
        Some(tls) => {
            let mut stream = tls.connect(addr, stream).await?;
            authenticate(&mut stream, addr, token).await?;
            Ok(LocalConn::tls(stream, peer))
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    }
}

/// Sends the token and reads the router's answer.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    token: &Token,
) -> io::Result<()> {
    stream.write_all(format!("{AUTH}{}\n", token.0).as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: whatever follows the answer is the session's.
    while answer.len() < MAX_LINE as usize {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        answer.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    match std::str::from_utf8(&answer) {
        Ok(OK) => Ok(()),
        Ok(text) if text.starts_with("UNAUTHENTICATED") => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, text.trim_end().to_owned()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the peer at {addr} is not a polis router's TCP endpoint (it answered {:?})",
                String::from_utf8_lossy(&answer)
            ),
        )),
    }
}

/// How often a TCP channel pings its router (HTTP/2 PING), and how long it
/// waits for the answer: a router cut off by a partition answers nothing,
/// not even a reset, and a call in flight to it would wait for ever. With
/// the pings it fails `UNAVAILABLE` instead, within about their sum.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// See [`PING_INTERVAL`].
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// A tonic channel to the router at `addr` over TCP (inside TLS when
/// `tls` is given), authenticated with `token`; it connects now, and again
/// with the token when it breaks. It pings the router while open
/// ([`PING_INTERVAL`]), so that a router gone silent fails the calls in
/// flight rather than hanging them.
pub async fn connect_channel(
    addr: &str,
    token: &Token,
    tls: Option<ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    let (addr, token) = (addr.to_owned(), token.clone());
    Endpoint::from_static("http://polis")
        .http2_keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (addr, token, tls) = (addr.clone(), token.clone(), tls.clone());
            async move { connect(&addr, &token, tls.as_ref()).await.map(TokioIo::new) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    #[tokio::test]
    async fn the_right_token_gets_in_and_the_session_reads_on() {
        let (listener, addr) = pair().await;
        let token = Token::new("s3cret");
        let server = tokio::spawn({
            let token = token.clone();
            async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                check(&mut stream, &token).await.unwrap();
                let mut rest = [0; 5];
                stream.read_exact(&mut rest).await.unwrap();
                rest
            }
        });
        let mut conn = connect(&addr, &token, None).await.unwrap();
        conn.write_all(b"after").await.unwrap();
        assert_eq!(&server.await.unwrap(), b"after");
    }

    /// A router whose machine is cut off: the connection is taken (by the
    /// kernel's backlog) but nothing answers the token. The client gives up
    /// rather than wait on TCP's own retries.
    #[tokio::test]
    async fn a_router_that_never_answers_the_token_times_out() {
        let (listener, addr) = pair().await;
        let err = tokio::time::timeout(Duration::from_secs(20), connect(&addr, &Token::new("t"), None))
            .await
            .expect("connect gave up by itself")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().starts_with(&format!("no answer from {addr} within 1s")), "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_wrong_or_missing_token_is_refused_as_unauthenticated() {
        let (listener, addr) = pair().await;
        let server = tokio::spawn(async move {
            let mut refusals = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                refusals.push(check(&mut stream, &Token::new("right")).await.unwrap_err().to_string());
            }
            refusals
        });
        let err = connect(&addr, &Token::new("wrong"), None).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "UNAUTHENTICATED: wrong token for this mesh's router");
        // A client without the preamble (gRPC's preface here) hears why.
        let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
        raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("UNAUTHENTICATED: this router's TCP endpoint"), "{answer}");
        let refusals = server.await.unwrap();
        assert!(refusals.iter().all(|r| r.starts_with("UNAUTHENTICATED")), "{refusals:?}");
    }

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Token::read(&path).unwrap_err().to_string();
        assert!(err.contains("has mode 644") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Token::read(&path).unwrap(), Token::new("abc"));
        std::fs::write(&path, "\n").unwrap();
        assert!(Token::read(&path).unwrap_err().to_string().contains("holds no token"));
    }
}
