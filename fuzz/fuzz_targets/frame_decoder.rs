//! `FrameCodec` as a tokio-util `Decoder` over arbitrary bytes.
//!
//! Input: two bytes of size limit (big-endian `u16`), one byte seeding the
//! chunk sizes (0: all at once), then the byte stream. The codec, fed in
//! chunks as a socket would deliver them, must give exactly what a plain
//! reading of the whole stream gives: the same frames, then the same end
//! (clean, or the same error with the same numbers). So it never panics,
//! chunking never changes the outcome, and no frame over the limit is read.
//! Every frame read must also re-encode to bytes that read back the same,
//! or, when it has nothing in it, be refused by the writer.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polis_mesh::{
    codec::{FrameCodec, FrameError, encode_frame},
    pb::Frame,
};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

/// How a stream ends, comparable.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Empty,
    TooLarge { len: usize, max: usize },
    Truncated { have: usize, want: usize },
    Decode,
}

fn end_of(e: FrameError) -> End {
    match e {
        FrameError::Empty => End::Empty,
        FrameError::TooLarge { len, max } => End::TooLarge { len, max },
        FrameError::Truncated { have, want } => End::Truncated { have, want },
        FrameError::Decode(_) => End::Decode,
        other => panic!("a decoder over memory reported {other}"),
    }
}

/// The stream read by hand, all at once: the model the codec must match.
fn model(stream: &[u8], max: usize) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        let Some(header) = rest.get(..4) else {
            return (frames, End::Truncated { have: rest.len(), want: 4 });
        };
        let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
        if len == 0 {
            return (frames, End::Empty);
        }
        if len > max {
            return (frames, End::TooLarge { len, max });
        }
        let Some(body) = rest.get(4..4 + len) else {
            return (frames, End::Truncated { have: rest.len(), want: 4 + len });
        };
        match Frame::decode(body) {
            Ok(frame) => frames.push(frame),
            Err(_) => return (frames, End::Decode),
        }
        rest = &rest[4 + len..];
    }
}

/// The stream through the codec, in chunks, as `FramedRead` drives it.
fn chunked(stream: &[u8], max: usize, mut seed: u8) -> (Vec<Frame>, End) {
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = if seed == 0 {
            rest.len()
        } else {
            // xorshift8: chunks of 1 to 32 bytes, different each time.
            seed ^= seed << 1;
            seed ^= seed >> 1;
            seed ^= seed << 2;
            (usize::from(seed) % 32 + 1).min(rest.len())
        };
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, end_of(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, End::Clean),
            Err(e) => return (frames, end_of(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<3>() else { return };
    let max = usize::from(u16::from_be_bytes([head[0], head[1]]));
    let want = model(stream, max);
    let got = chunked(stream, max, head[2]);
    assert_eq!(got, want, "chunking changed the outcome");

    for frame in &got.0 {
        let len = frame.encoded_len();
        if len == 0 {
            // A body of fields this build does not know reads as a frame
            // without a kind; it cannot be written back (a prefix of 0).
            let written = FrameCodec::new(max).encode(frame, &mut BytesMut::new());
            assert!(matches!(written, Err(FrameError::Empty)), "{written:?}");
            continue;
        }
        let bytes = encode_frame(frame);
        let mut buf = BytesMut::from(&bytes[..]);
        let again = FrameCodec::new(usize::MAX).decode_eof(&mut buf);
        assert!(
            matches!(&again, Ok(Some(f)) if f == frame) && buf.is_empty(),
            "{frame:?} re-encoded as {bytes:?} read back as {again:?}"
        );

        // Writing honours the limit too: what is written is what may be read.
        let written = FrameCodec::new(max).encode(frame, &mut BytesMut::new());
        match written {
            Ok(()) => assert!(len <= max, "wrote {len} bytes over a limit of {max}"),
            Err(FrameError::TooLarge { len: l, max: m }) => assert!(l == len && m == max && len > max),
            Err(e) => panic!("encoding {frame:?} failed: {e}"),
        }
    }
});
