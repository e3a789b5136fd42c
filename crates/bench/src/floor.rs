//! The physical floor: a 64-byte ping-pong between two processes over a
//! Unix socket and over a pair of pipes, with blocking reads and writes and
//! nothing else. A call through polis crosses one of each (client → router
//! is a socket, router → module is a pipe), so their sum is the floor a warm
//! call is held against.
//!
//! The peer is this binary again, in its hidden `echo-peer` mode.

use std::{
    io::{Read, Write},
    os::{
        fd::AsFd,
        unix::net::{UnixListener, UnixStream},
    },
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::stats::Samples;

/// Round trips timed, after `WARMUP` untimed ones.
const ROUNDS: usize = 5000;
const WARMUP: usize = 500;

/// The two floors.
#[derive(Debug)]
pub(crate) struct Floor {
    pub(crate) socket: Samples,
    pub(crate) pipe: Samples,
}

impl Floor {
    /// Socket p50 plus pipe p50: what one call through polis cannot beat.
    pub(crate) fn p50(&self) -> Duration {
        self.socket.p50() + self.pipe.p50()
    }
}

pub(crate) fn measure(payload: usize) -> anyhow::Result<Floor> {
    Ok(Floor { socket: socket(payload)?, pipe: pipe(payload)? })
}

fn peer(args: &[&str]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut cmd = polis_testing::command(exe);
    cmd.arg("echo-peer").args(args);
    Ok(cmd)
}

/// Kills and reaps the peer when the measurement ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn socket(payload: usize) -> anyhow::Result<Samples> {
    let dir = tempfile::Builder::new().prefix("pbf").tempdir_in("/tmp")?;
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path)?;
    let _peer = Reaped(peer(&["unix"])?.arg(&path).stdin(Stdio::null()).spawn()?);
    let (mut stream, _) = listener.accept()?;
    ping_pong(payload, |buf| {
        stream.write_all(buf)?;
        stream.read_exact(buf)
    })
}

fn pipe(payload: usize) -> anyhow::Result<Samples> {
    let mut child = peer(&["pipe"])?.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut to = child.stdin.take().context("peer stdin")?;
    let mut from = child.stdout.take().context("peer stdout")?;
    let _peer = Reaped(child);
    ping_pong(payload, |buf| {
        to.write_all(buf)?;
        from.read_exact(buf)
    })
}

fn ping_pong(
    payload: usize,
    mut round: impl FnMut(&mut [u8]) -> std::io::Result<()>,
) -> anyhow::Result<Samples> {
    let mut buf = vec![b'x'; payload];
    for _ in 0..WARMUP {
        round(&mut buf).context("peer round trip")?;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        round(&mut buf).context("peer round trip")?;
        samples.push(start.elapsed());
    }
    Ok(Samples::new(samples))
}

/// The peer's side: echo `payload`-byte messages until the other end closes.
pub(crate) fn echo_peer(mode: &str, path: Option<&str>, payload: usize) -> anyhow::Result<()> {
    let mut buf = vec![0; payload];
    let mut serve = |input: &mut dyn Read, output: &mut dyn Write| -> anyhow::Result<()> {
        loop {
            match input.read_exact(&mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            output.write_all(&buf)?;
            output.flush()?;
        }
    };
    match (mode, path) {
        ("unix", Some(path)) => {
            let stream = UnixStream::connect(path).with_context(|| format!("cannot connect to {path}"))?;
            serve(&mut &stream, &mut &stream)
        }
        // Raw stdio: std's stdout is line-buffered, and this must not be.
        ("pipe", None) => {
            let mut input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
            let mut output = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
            serve(&mut input, &mut output)
        }
        _ => anyhow::bail!("usage: polis-bench echo-peer unix PATH | echo-peer pipe"),
    }
}
