//! The guest's stdin: the host's stdin, read by a thread of the host, and
//! watched for cancels. That thread also drives the tokio runtime on which
//! the guest's WASI calls run (see `pump`).
//!
//! A WASI module is single-threaded: while it computes it does not read,
//! so it never sees the `$/cancel` (JSON-RPC) or `Cancel` frame the router
//! sends when a call's deadline passes. The pump thread notes when a
//! cancel arrives; the guest's next read (any read of stdin) clears it.
//! A cancel left pending for longer than the grace means the module is
//! stuck, and the watchdog (`main.rs`) interrupts it.
//!
//! The pump is needed only while the guest computes. A guest that waits
//! for input with nothing buffered reads the pipe itself, on its own
//! thread, as a native module would: handing each request over from the
//! pump would add a wake-up of another thread, often on another CPU, to
//! every call. One reader at a time: the pipe is read only by whoever
//! holds [`Shared::side`], which carries the scanner, so every byte passes
//! the cancel scan once and in order.

use std::{
    collections::VecDeque,
    io::Read,
    os::fd::{AsFd, BorrowedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rustix::fs::{FileType, OFlags};
use tokio::{io::unix::AsyncFd, sync::Notify};
use wasmtime_wasi::{
    async_trait,
    cli::{IsTerminal, StdinStream},
    p2::{InputStream, Pollable, StreamError, StreamResult},
};

/// How the link's messages are framed, to find cancels in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// One JSON-RPC message a line.
    JsonRpc,
    /// A `u32` big-endian length, then a protobuf `Frame`.
    Frames,
}

/// What the pump thread and the guest share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    // std Mutex: held for a copy, never across an await.
    state: Mutex<State>,
    /// Woken when data arrives or stdin closes.
    readable: Notify,
    /// The right to read the pipe, and what a read needs. Taken before
    /// `state` when both are (never the other way round); never held
    /// across an await. `None` until `pump` sets it up.
    side: Mutex<Option<ReadSide>>,
    /// Whether the guest may read the pipe itself: it is a pipe or a
    /// socket, non-blocking, that only this process reads.
    direct: AtomicBool,
    /// Where the guest says it let the side go, when the pump asked
    /// (`State::missed`).
    released: Notify,
}

/// What reading the pipe needs, whoever reads it.
struct ReadSide {
    chunk: Vec<u8>,
    scanner: Scanner,
    /// Called at the first cancel, before the guest can see it.
    first_cancel: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSide").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    buffer: VecDeque<u8>,
    closed: bool,
    /// When the oldest cancel the guest has not yet read past arrived.
    cancel_since: Option<Instant>,
    /// The pump found the side taken (the guest reading) while the pipe was
    /// readable. Kept here, not in an atomic of its own: this lock orders
    /// the pump's "I missed it, is the side still taken?" against the
    /// guest's "I let it go, did anyone miss it?", so one of the two sees
    /// the other.
    missed: bool,
}

impl Shared {
    /// Whether a cancel has waited longer than `grace` without the guest
    /// reading its stdin: the guest is not coming back to its input.
    pub(crate) fn stuck(&self, grace: Duration) -> bool {
        let state = self.state.lock().expect("stdin lock");
        state.cancel_since.is_some_and(|since| since.elapsed() >= grace)
    }

    fn push(&self, bytes: &[u8], cancels: bool) {
        let mut state = self.state.lock().expect("stdin lock");
        state.buffer.extend(bytes);
        if cancels && state.cancel_since.is_none() {
            state.cancel_since = Some(Instant::now());
        }
        drop(state);
        self.readable.notify_waiters();
    }

    fn close(&self) {
        self.state.lock().expect("stdin lock").closed = true;
        self.readable.notify_waiters();
    }

    /// Passes `n` bytes just read into `side.chunk` to the guest, watching
    /// them for cancels; `0` is the end of stdin.
    fn deliver(&self, side: &mut ReadSide, n: usize) {
        if n == 0 {
            self.close();
            return;
        }
        let bytes = &side.chunk[..n];
        let cancels = side.scanner.feed(bytes);
        if cancels && let Some(first) = side.first_cancel.take() {
            first();
        }
        self.push(bytes, cancels);
    }

    /// The guest, with nothing buffered, reads the pipe on its own thread
    /// until something comes (or it closes). `false` if it may not (not a
    /// pipe: the pump reads, and the guest waits for it).
    fn read_here(&self) -> bool {
        if !self.direct.load(Ordering::Acquire) {
            return false;
        }
        // The pump holds the side for one read at most.
        let mut guard = self.side.lock().expect("stdin side lock");
        let side = guard.as_mut().expect("set up before the guest runs");
        // The pump may have delivered while we waited for the side.
        let waiting = {
            let state = self.state.lock().expect("stdin lock");
            state.buffer.is_empty() && !state.closed
        };
        if waiting {
            let stdin = std::io::stdin();
            loop {
                match rustix::io::read(stdin.as_fd(), &mut side.chunk) {
                    Ok(n) => break self.deliver(side, n),
                    Err(rustix::io::Errno::AGAIN) => wait_readable(stdin.as_fd()),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break self.close(),
                }
            }
        }
        drop(guard);
        // The pump saw the pipe readable while we held the side: let it
        // look again, or it would wait for the next write to the pipe.
        if std::mem::take(&mut self.state.lock().expect("stdin lock").missed) {
            self.released.notify_one();
        }
        true
    }
}

/// Blocks this thread until `fd` is readable (or hung up).
fn wait_readable(fd: BorrowedFd<'_>) {
    let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, None);
}

/// Starts the thread that reads the host's stdin into `shared` while the
/// guest computes, calling `first_cancel` once, when the first cancel
/// arrives (before the guest can see it). The thread drives `runtime` for
/// the rest of the host's life: the guest's WASI calls run on it (main.rs
/// enters its handle on the guest's thread), so its timers and I/O need a
/// thread that polls them, and this one is otherwise idle in epoll.
/// Without it wasmtime-wasi would start a multi-threaded tokio runtime of
/// its own, two more threads.
pub(crate) fn pump(
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    protocol: Protocol,
    first_cancel: impl FnOnce() + Send + 'static,
) {
    *shared.side.lock().expect("stdin side lock") = Some(ReadSide {
        chunk: vec![0u8; 64 * 1024],
        scanner: Scanner::new(protocol),
        first_cancel: Some(Box::new(first_cancel)),
    });
    // AsyncFd registers with the runtime it finds entered.
    let input = {
        let _entered = runtime.enter();
        Input::new()
    };
    shared.direct.store(matches!(input, Input::Polled(_)), Ordering::Release);
    std::thread::spawn(move || {
        runtime.block_on(async move {
            input.pump(&shared).await;
            shared.close();
            // The runtime is still the guest's, for its WASI calls.
            std::future::pending::<()>().await
        });
    });
}

/// The host's stdin, read without blocking the runtime's thread: through
/// epoll when it is a pipe or a socket (as the router gives), else as it
/// is: a file's reads never wait, and a terminal's (polis-wasm run by hand)
/// hold the runtime's timers up until a line is typed.
enum Input {
    Polled(AsyncFd<std::io::Stdin>),
    Plain(std::io::Stdin),
}

impl Input {
    fn new() -> Self {
        let stdin = std::io::stdin();
        // Only a pipe or a socket: O_NONBLOCK is on the open file
        // description, which for those only this process reads (the
        // router keeps the other end); a terminal's is the shell's too.
        let pipe = rustix::fs::fstat(&stdin)
            .is_ok_and(|st| matches!(FileType::from_raw_mode(st.st_mode), FileType::Fifo | FileType::Socket));
        let flags = match rustix::fs::fcntl_getfl(&stdin) {
            Ok(flags) if pipe => flags,
            _ => return Self::Plain(stdin),
        };
        if rustix::fs::fcntl_setfl(&stdin, flags | OFlags::NONBLOCK).is_err() {
            return Self::Plain(stdin);
        }
        // SAFETY: `register` needs the descriptor to stay open and the same
        // file for the AsyncFd's life: it is fd 0, which nothing in this
        // process closes or replaces (the guest has no access to it: it
        // reads `Shared`), and the AsyncFd lives until the process exits.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register(std::io::stdin()) };
        match registered {
            Ok(fd) => Self::Polled(fd),
            Err(_) => {
                let _ = rustix::fs::fcntl_setfl(&stdin, flags);
                Self::Plain(stdin)
            }
        }
    }

    /// Reads until stdin ends, delivering to `shared`. A pipe is read
    /// when it is readable and the guest is not reading it itself.
    async fn pump(self, shared: &Shared) {
        match self {
            Self::Plain(mut stdin) => loop {
                let mut guard = shared.side.lock().expect("stdin side lock");
                let side = guard.as_mut().expect("set up before the pump starts");
                // Only this thread reads a terminal or a file (`direct` is
                // off): holding the side while it waits keeps nobody out.
                let n = stdin.read(&mut side.chunk).unwrap_or(0);
                shared.deliver(side, n);
                if n == 0 {
                    return;
                }
            },
            Self::Polled(fd) => loop {
                let Ok(mut ready) = fd.readable().await else { return };
                let released = shared.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let mut guard = match shared.side.try_lock() {
                    Ok(guard) => guard,
                    Err(_) => {
                        // The guest is reading: it takes what comes. Look
                        // again once it lets go (the pipe may hold more).
                        shared.state.lock().expect("stdin lock").missed = true;
                        match shared.side.try_lock() {
                            Ok(guard) => guard,
                            Err(_) => {
                                drop(ready);
                                released.await;
                                continue;
                            }
                        }
                    }
                };
                let side = guard.as_mut().expect("set up before the pump starts");
                match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut side.chunk)?)) {
                    Ok(Ok(n)) => {
                        shared.deliver(side, n);
                        if n == 0 {
                            return;
                        }
                    }
                    Ok(Err(_)) => return,
                    // Read dry (by the guest, perhaps): wait for more.
                    Err(_would_block) => {}
                }
            },
        }
    }
}

/// Finds cancels in the byte stream, across chunk boundaries.
#[derive(Debug)]
struct Scanner {
    protocol: Protocol,
    /// The incomplete line (JSON-RPC) or frame header and body (frames).
    partial: Vec<u8>,
}

/// The first byte of a `Frame` whose `kind` is `Cancel` (field 5, length
/// delimited): `frame.proto` fixes it.
const CANCEL_TAG: u8 = (5 << 3) | 2;

impl Scanner {
    fn new(protocol: Protocol) -> Self {
        Self { protocol, partial: Vec::new() }
    }

    /// Whether `bytes` complete at least one cancel message.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        self.partial.extend_from_slice(bytes);
        let mut found = false;
        match self.protocol {
            Protocol::JsonRpc => {
                let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') else { return false };
                for line in self.partial[..last].split(|&b| b == b'\n') {
                    found |= is_cancel_line(line);
                }
                self.partial.drain(..=last);
            }
            Protocol::Frames => {
                let mut at = 0;
                while let Some(header) = self.partial.get(at..at + 4) {
                    let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
                    if self.partial.len() < at + 4 + len {
                        break;
                    }
                    found |= len > 0 && self.partial[at + 4] == CANCEL_TAG;
                    at += 4 + len;
                }
                self.partial.drain(..at);
            }
        }
        found
    }
}

fn is_cancel_line(line: &[u8]) -> bool {
    // Cheap first: requests carry params that could contain anything, so
    // only a line naming the method is parsed.
    const NEEDLE: &[u8] = b"$/cancel";
    if !line.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| v.get("method").and_then(|m| m.as_str()) == Some("$/cancel") && v.get("id").is_none())
}

/// The guest's view of [`Shared`].
#[derive(Debug, Clone)]
pub(crate) struct GuestStdin(pub(crate) Arc<Shared>);

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        // Only WASIp2 streams are used by a preview 1 module.
        Box::new(tokio::io::empty())
    }
}

#[async_trait]
impl InputStream for GuestStdin {
    /// What a guest's `fd_read` of stdin comes to. With nothing buffered,
    /// the pipe is read here rather than by the pump, which would then
    /// wake this thread. (`ready`, for `poll_oneoff`, still waits for the
    /// pump: a poll with a timeout must not block this thread in a read.)
    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        loop {
            let data = self.read(size)?;
            if !data.is_empty() || size == 0 {
                return Ok(data);
            }
            if !self.0.read_here() {
                self.ready().await;
            }
        }
    }

    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let mut state = self.0.state.lock().expect("stdin lock");
        // The guest came back to its input: it will see any cancel now.
        state.cancel_since = None;
        if state.buffer.is_empty() && state.closed {
            return Err(StreamError::Closed);
        }
        let n = size.min(state.buffer.len());
        Ok(state.buffer.drain(..n).collect::<Vec<u8>>().into())
    }
}

#[async_trait]
impl Pollable for GuestStdin {
    async fn ready(&mut self) {
        loop {
            let readable = self.0.readable.notified();
            {
                let mut state = self.0.state.lock().expect("stdin lock");
                state.cancel_since = None;
                if !state.buffer.is_empty() || state.closed {
                    return;
                }
            }
            readable.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_jsonrpc_cancels_across_chunks() {
        let mut s = Scanner::new(Protocol::JsonRpc);
        assert!(!s.feed(br#"{"id":1,"jsonrpc":"2.0","method":"spin","params":{"x":"$/cancel"}}"#));
        assert!(!s.feed(b"\n{\"jsonrpc\":\"2.0\",\"method\":\"$/can"));
        assert!(s.feed(b"cel\",\"params\":{\"id\":1}}\n"));
        assert!(!s.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"shutdown\"}\n"));
    }

    #[test]
    fn finds_cancel_frames_across_chunks() {
        let mut s = Scanner::new(Protocol::Frames);
        // A Request frame (tag of field 3), then a Cancel frame split in two.
        let request = [0, 0, 0, 2, (3 << 3) | 2, 0];
        let cancel = [0, 0, 0, 4, CANCEL_TAG, 2, 8, 1];
        assert!(!s.feed(&request));
        assert!(!s.feed(&cancel[..5]));
        assert!(s.feed(&cancel[5..]));
        assert!(s.partial.is_empty());
    }

    #[test]
    fn a_read_clears_a_pending_cancel() {
        let shared = Arc::new(Shared::default());
        shared.push(b"x\n", true);
        assert!(shared.stuck(Duration::ZERO));
        let mut guest = GuestStdin(shared.clone());
        assert_eq!(&guest.read(16).unwrap()[..], b"x\n");
        assert!(!shared.stuck(Duration::ZERO));
        shared.close();
        assert!(matches!(guest.read(16), Err(StreamError::Closed)));
    }
}
