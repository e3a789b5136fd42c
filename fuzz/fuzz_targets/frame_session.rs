//! The router's frame session (`crates/node/src/router/frames.rs`, behind
//! the door's sniff in `accept.rs`): a frontend's bytes on `router.sock`,
//! the preamble and then frames, served by a real door on a real socket
//! with a host that has no modules (`polis_node::router::fuzzing`).
//!
//! Input: the whole byte stream a client sends before it closes its
//! writing half. Checks: the router never panics and always closes the
//! connection once the input has ended; to a preamble it answers with its
//! own, then only whole frames that decode, each of a kind a router sends
//! to a frontend, every reply answering an id the client requested; at
//! most one `Error`, and only as the last frame; to anything else (gRPC,
//! cut short) nothing at all.
#![no_main]

use std::{collections::HashSet, sync::OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polis_mesh::{
    codec::FrameCodec,
    pb::{Frame, frame::Kind},
    preamble,
};
use polis_node::router::fuzzing::{FrameSession, MAX_FRAME_LEN};
use tokio_util::codec::Decoder;

fn session() -> &'static FrameSession {
    static SESSION: OnceLock<FrameSession> = OnceLock::new();
    SESSION.get_or_init(|| {
        // Kept for the process's life: the socket lives in it.
        let dir = tempfile::Builder::new().prefix("polis-fuzz").tempdir_in("/tmp").unwrap().keep();
        FrameSession::new(&dir)
    })
}

/// The frames in `bytes` as `codec` reads them, up to the first error or
/// the end; and whether it read them all cleanly.
fn frames(codec: FrameCodec, bytes: &[u8]) -> (Vec<Frame>, bool) {
    let (mut codec, mut buf) = (codec, BytesMut::from(bytes));
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return (out, buf.is_empty()),
            Err(_) => return (out, false),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let out = session().run(data);
    let is_preamble = data.len() >= preamble::LEN
        && preamble::decode(data[..preamble::LEN].try_into().unwrap()).is_some();
    if !is_preamble {
        assert!(out.is_empty(), "{} bytes answered to a connection that is not a frame session", out.len());
        return;
    }
    assert!(out.starts_with(&preamble::encode(preamble::VERSION)), "the router's preamble first: {out:?}");
    // What the router reads from a frontend, as it reads it.
    let limit = MAX_FRAME_LEN + 64 * 1024;
    let (sent, _) = frames(FrameCodec::new(limit), &data[preamble::LEN..]);
    let requested: HashSet<u64> = sent
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Request(r)) => Some(r.id),
            _ => None,
        })
        .collect();
    let (answered, clean) = frames(FrameCodec::new(limit), &out[preamble::LEN..]);
    assert!(clean, "the router writes whole frames that decode: {out:?}");
    for (at, frame) in answered.iter().enumerate() {
        match &frame.kind {
            Some(Kind::Reply(reply)) => {
                assert!(requested.contains(&reply.id), "a reply to id {} that was never requested", reply.id)
            }
            Some(Kind::Error(_)) => assert_eq!(at + 1, answered.len(), "an Error ends the session"),
            Some(
                Kind::SessionWelcome(_)
                | Kind::Keepalive(_)
                | Kind::Leaving(_)
                | Kind::Event(_)
                | Kind::Subscribed(_)
                | Kind::Lagged(_),
            ) => {}
            other => panic!("a router does not send {other:?} to a frontend"),
        }
    }
});
