//! Frames between router and module: a `u32` big-endian length, then a
//! protobuf-encoded [`Frame`].
//!
//! Reading never panics, whatever the bytes: every malformed input becomes a
//! [`FrameError`], and a clean end of the link at a frame boundary is `None`.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

use crate::pb::Frame;

/// The default largest frame, header excluded: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

const HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced more than the limit allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced (or, when writing, encoded) length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A length prefix of zero, or, when writing, a frame with nothing in
    /// it (no `kind`), which would be written as one: every valid frame has
    /// content.
    #[error("empty frame: a length prefix of 0")]
    Empty,
    /// The link ended in the middle of a frame.
    #[error("link closed in the middle of a frame: {have} of {want} bytes received")]
    Truncated {
        /// Bytes received of the frame, header included.
        have: usize,
        /// Bytes the frame needed, header included.
        want: usize,
    },
    /// The bytes were not a valid protobuf `Frame`.
    #[error("malformed frame: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The underlying link failed.
    #[error("link error: {0}")]
    Io(#[from] std::io::Error),
}

/// The length-delimited [`Frame`] codec, with a size limit.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_frame_len` bytes.
    /// The limit is capped at `u32::MAX`, the most a length prefix can say.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len: max_frame_len.min(u32::MAX as usize) }
    }

    /// The configured limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge { len, max: self.max_frame_len });
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len).freeze();
        Ok(Some(Frame::decode(body)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let want = match src.get(..HEADER_LEN) {
            Some(h) => HEADER_LEN + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
            None => HEADER_LEN,
        };
        Err(FrameError::Truncated { have: src.len(), want })
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.encoded_len();
        // A frame read from a newer peer may have no kind this build knows;
        // writing it back would give a length of 0, which no reader accepts.
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge { len, max: self.max_frame_len });
        }
        dst.reserve(HEADER_LEN + len);
        dst.put_u32(len as u32);
        frame.encode(dst).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(())
    }
}

/// Reads frames from a byte stream, such as a module's stdout.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: FramedRead<R, FrameCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the given codec (and so the given size limit).
    pub fn new(reader: R, codec: FrameCodec) -> Self {
        Self { inner: FramedRead::new(reader, codec) }
    }

    /// The next frame; `None` is a clean end at a frame boundary.
    ///
    /// After an error the link is unusable and later reads return `None`.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.inner.next().await.transpose()
    }

    /// The underlying reader; bytes read but not yet decoded are lost.
    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }
}

/// Writes frames to a byte stream, such as a module's stdin.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    codec: FrameCodec,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer with the given codec (and so the given size limit).
    pub fn new(writer: W, codec: FrameCodec) -> Self {
        Self { inner: writer, codec, buf: BytesMut::new() }
    }

    /// Encodes and writes one frame, then flushes, in a single write where
    /// the link allows it.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        self.buf.clear();
        self.codec.encode(frame, &mut self.buf)?;
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Encodes every frame of `frames` and writes them all with one write
    /// (then flushes): a writer that finds several frames ready sends them
    /// in one syscall rather than one each.
    pub async fn write_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Frame>,
    ) -> Result<(), FrameError> {
        self.buf.clear();
        for frame in frames {
            self.codec.encode(frame, &mut self.buf)?;
        }
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Shuts the write side down, so that the peer reads a clean end.
    pub async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Encodes one frame, header included, for tests and tools.
///
/// # Panics
///
/// On a frame with nothing in it (no `kind`), which no reader accepts.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::new(usize::MAX)
        .encode(frame, &mut buf)
        .expect("an unlimited codec accepts every non-empty frame");
    buf.to_vec()
}

#[cfg(test)]
mod tests;
