//! The module's stdin and stdout as non-blocking byte streams: each is
//! classified as a pipe or a socket and driven by tokio directly, with
//! tokio's blocking-thread stdio as the fallback.

use tokio::io::{AsyncRead, AsyncWrite};

/// The module's stdin as a reader that does not hold the runtime open.
///
/// `tokio::io::stdin` reads on a blocking thread that nothing can
/// interrupt, so the process would hang on exit until the router wrote or
/// closed the pipe. A pipe or a socket, which is what a router gives, is
/// read without blocking instead.
pub(crate) fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    match nonblocking(std::io::stdin()) {
        Ok(Some(Stdio::Pipe(fd))) => match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => return Box::new(pipe),
            Err(err) => eprintln!("warning: reading stdin on a blocking thread: {err}"),
        },
        Ok(Some(Stdio::Socket(socket))) => return Box::new(socket),
        Ok(None) => {}
        Err(err) => eprintln!("warning: reading stdin on a blocking thread: {err}"),
    }
    Box::new(tokio::io::stdin())
}

/// The module's stdout as a writer taking each frame in one write.
///
/// `tokio::io::stdout` hands every write to a blocking thread and goes
/// through std's line-buffered `Stdout`, which splits a frame at each 0x0a
/// byte (common in protobuf): measured, half of a module's CPU per call. A
/// pipe or a socket, which is what a router gives, is written without
/// blocking instead.
pub(crate) fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    match nonblocking(std::io::stdout()) {
        Ok(Some(Stdio::Pipe(fd))) => match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
            Ok(pipe) => return Box::new(pipe),
            Err(err) => eprintln!("warning: writing stdout on a blocking thread: {err}"),
        },
        Ok(Some(Stdio::Socket(socket))) => return Box::new(socket),
        Ok(None) => {}
        Err(err) => eprintln!("warning: writing stdout on a blocking thread: {err}"),
    }
    Box::new(tokio::io::stdout())
}

/// A standard stream that can be driven without blocking.
#[cfg(unix)]
enum Stdio {
    /// A pipe: tokio's pipe types take the fd (and make it non-blocking).
    Pipe(std::os::fd::OwnedFd),
    /// A socket, already non-blocking and registered.
    Socket(tokio::net::UnixStream),
}

/// A copy of `stream`'s fd as a pipe or a socket; `None` when it is
/// neither (a file or a terminal).
#[cfg(unix)]
fn nonblocking(stream: impl std::os::fd::AsFd) -> std::io::Result<Option<Stdio>> {
    use std::os::unix::fs::FileTypeExt;

    let fd = stream.as_fd().try_clone_to_owned()?;
    let kind = std::fs::File::from(fd.try_clone()?).metadata()?.file_type();
    if kind.is_fifo() {
        return Ok(Some(Stdio::Pipe(fd)));
    }
    if kind.is_socket() {
        let socket = std::os::unix::net::UnixStream::from(fd);
        socket.set_nonblocking(true)?;
        return Ok(Some(Stdio::Socket(tokio::net::UnixStream::from_std(socket)?)));
    }
    Ok(None)
}
