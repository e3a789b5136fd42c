//! The gRPC `:authority` rewriter (`crates/node/src/router/authority.rs`):
//! it decodes HPACK from any local client before h2 does, so hostile bytes
//! must end in `Malformed` or rewritten bytes, never a panic, a hang or
//! unbounded output.
//!
//! `AuthorityFix` is `pub(crate)` in a private module, so the source file is
//! compiled in here as it stands (as `jsonrpc_line` does); it uses only
//! other crates.
//!
//! Input: the first byte seeds the chunk sizes; the rest, prefixed by the
//! HTTP/2 client preface, is pushed in chunks, as a socket would deliver it.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/node/src/router/authority.rs"]
mod authority;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else { return };
    let input: Vec<u8> = PREFACE.iter().chain(rest).copied().collect();
    let mut fix = authority::AuthorityFix::default();
    let mut out = BytesMut::new();
    let mut step = usize::from(seed % 31) + 1;
    let mut at = 0;
    while at < input.len() {
        let end = (at + step).min(input.len());
        if fix.push(&input[at..end], &mut out).is_err() {
            return;
        }
        at = end;
        step = step * 7 % 61 + 1;
    }
    // Rewritten blocks are bounded: a literal authority and re-encoded
    // headers, never more than a few times what came in.
    assert!(out.len() <= input.len() * 4 + 64 * 1024, "{} bytes out of {}", out.len(), input.len());
});
