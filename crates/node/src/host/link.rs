//! A module's link: frames or JSON-RPC lines over its stdio (or any byte
//! pipe: tests use `tokio::io::duplex`), or the frames of an attach stream,
//! read and written as frames either way.

use polis_mesh::{
    codec::{FrameCodec, FrameError, FrameReader, FrameWriter},
    pb::Frame,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::jsonrpc;
use crate::manifest::Protocol;

/// The module side of a link went wrong; the link is over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A JSON-RPC line that is not JSON-RPC, or an attach stream that failed.
    #[error("{0}")]
    Protocol(String),
}

/// The module's output: a child's stdout, or one end of a pipe in tests.
pub(crate) type ByteReader = Box<dyn AsyncRead + Unpin + Send>;

/// The module's input: a child's stdin, or one end of a pipe in tests.
pub(crate) type ByteWriter = Box<dyn AsyncWrite + Unpin + Send>;

pub(crate) enum LinkReader {
    Frames(FrameReader<ByteReader>),
    JsonRpc(FramedRead<ByteReader, LinesCodec>),
    /// A module attached over `Router.AttachModule`.
    Attached(tonic::Streaming<Frame>),
}

impl LinkReader {
    pub(crate) fn new(protocol: Protocol, stdout: ByteReader, max_frame_len: usize) -> Self {
        match protocol {
            Protocol::Frames => Self::Frames(FrameReader::new(stdout, FrameCodec::new(max_frame_len))),
            Protocol::JsonRpc => {
                Self::JsonRpc(FramedRead::new(stdout, LinesCodec::new_with_max_length(max_frame_len)))
            }
        }
    }

    /// The next frame from the module; `None` when it closed its stdout.
    pub(crate) async fn read(&mut self) -> Result<Option<Frame>, LinkError> {
        match self {
            Self::Frames(r) => Ok(r.read_frame().await?),
            Self::Attached(stream) => match stream.message().await {
                Ok(frame) => Ok(frame),
                // The module's process ended or dropped the stream: the link is over.
                Err(status)
                    if status.code() == tonic::Code::Cancelled || status.code() == tonic::Code::Unknown =>
                {
                    Ok(None)
                }
                Err(status) => {
                    Err(LinkError::Protocol(format!("attach stream failed: {}", status.message())))
                }
            },
            Self::JsonRpc(lines) => loop {
                let line = match lines.next().await {
                    None => return Ok(None),
                    Some(Ok(line)) => line,
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        return Err(LinkError::Protocol("a line longer than the frame limit".into()));
                    }
                    Some(Err(LinesCodecError::Io(e))) => return Err(FrameError::Io(e).into()),
                };
                if line.trim().is_empty() {
                    continue;
                }
                match jsonrpc::decode(&line) {
                    Ok(Some(frame)) => return Ok(Some(frame)),
                    Ok(None) => continue,
                    Err(why) => {
                        let shown: String = line.chars().take(80).collect();
                        return Err(LinkError::Protocol(format!("{why}: {shown:?}")));
                    }
                }
            },
        }
    }
}

pub(crate) enum LinkWriter {
    Frames(FrameWriter<ByteWriter>),
    JsonRpc(ByteWriter),
    /// The response stream of `Router.AttachModule`.
    Attached(tokio::sync::mpsc::Sender<Result<Frame, tonic::Status>>),
}

impl LinkWriter {
    pub(crate) fn new(protocol: Protocol, stdin: ByteWriter, max_frame_len: usize) -> Self {
        match protocol {
            Protocol::Frames => Self::Frames(FrameWriter::new(stdin, FrameCodec::new(max_frame_len))),
            Protocol::JsonRpc => Self::JsonRpc(stdin),
        }
    }

    /// Writes `frames` in order, in one write to a module's input where the
    /// link has one (issue 10: under load the frames queued for a module
    /// go out together, not one `write` each).
    pub(crate) async fn write_batch(&mut self, frames: &[Frame]) -> Result<(), LinkError> {
        match self {
            Self::Frames(w) => Ok(w.write_frames(frames).await?),
            Self::JsonRpc(stdin) => {
                let lines: Vec<u8> = frames.iter().filter_map(jsonrpc::encode).flatten().collect();
                if !lines.is_empty() {
                    stdin.write_all(&lines).await.map_err(FrameError::Io)?;
                    stdin.flush().await.map_err(FrameError::Io)?;
                }
                Ok(())
            }
            Self::Attached(_) => {
                for frame in frames {
                    self.write(frame).await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn write(&mut self, frame: &Frame) -> Result<(), LinkError> {
        match self {
            Self::Frames(w) => Ok(w.write_frame(frame).await?),
            Self::Attached(tx) => tx
                .send(Ok(frame.clone()))
                .await
                .map_err(|_| LinkError::Protocol("the attached module is gone".into())),
            Self::JsonRpc(stdin) => {
                if let Some(line) = jsonrpc::encode(frame) {
                    stdin.write_all(&line).await.map_err(FrameError::Io)?;
                    stdin.flush().await.map_err(FrameError::Io)?;
                }
                Ok(())
            }
        }
    }
}
