//! The host's JSON-RPC translation (`crates/node/src/host/jsonrpc.rs`), both
//! ways.
//!
//! `decode` and `encode` are `pub(crate)` in a private module and no public
//! path reaches them, so the source file itself is compiled in here, as it
//! stands; it uses only other crates, never `super`. When the host refactor
//! exposes them (a `#[doc(hidden)] pub mod fuzzing` in polis-node), this
//! target should call that instead.
//!
//! Input: the first byte picks the direction. Even: the rest is a line from
//! a module, and `decode` must not panic; what it accepts is a `Reply` whose
//! payload is JSON. Odd: the rest is a protobuf `Frame` going to a module,
//! and `encode` must give one line of JSON-RPC 2.0 that says the same.
#![no_main]

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../../crates/node/src/host/jsonrpc.rs"]
mod jsonrpc;

use libfuzzer_sys::fuzz_target;
use polis_mesh::pb::{Frame, frame::Kind, reply::Outcome};
use prost::Message;
use serde_json::{Value, json};

fn check_decoded(line: &str) {
    let Ok(Some(frame)) = jsonrpc::decode(line) else { return };
    // A module's own frames ($/call, $/publish, ...) are the router's to check.
    let Some(Kind::Reply(reply)) = frame.kind else { return };
    match reply.outcome {
        Some(Outcome::Payload(p)) => {
            assert_eq!(p.content_type, polis_mesh::JSON);
            let parsed = serde_json::from_slice::<&serde_json::value::RawValue>(&p.data);
            assert!(parsed.is_ok(), "{line:?}: the payload {:?} is not JSON", p.data);
        }
        Some(Outcome::Error(e)) => assert!((0..=16).contains(&e.code), "{line:?}: code {}", e.code),
        None => assert!(!reply.more, "{line:?}: an item without a value"),
    }
}

fn check_encoded(frame: &Frame) {
    let Some(line) = jsonrpc::encode(frame) else {
        assert!(!matches!(frame.kind, Some(Kind::Request(_) | Kind::Cancel(_) | Kind::Shutdown(_))));
        return;
    };
    assert_eq!(line.iter().position(|&b| b == b'\n'), Some(line.len() - 1), "one line: {line:?}");
    let value: Value = serde_json::from_slice(&line).expect("encode writes JSON");
    assert_eq!(value["jsonrpc"], "2.0");
    match frame.kind.as_ref().unwrap() {
        Kind::Request(r) => {
            assert_eq!(value["id"], r.id);
            assert_eq!(value["method"], r.method.as_str());
            let data = r.payload.as_ref().map(|p| &p.data[..]).unwrap_or_default();
            let params = serde_json::from_slice::<Value>(data).unwrap_or(Value::Null);
            assert_eq!(value["params"], params);
        }
        Kind::Cancel(c) => {
            assert_eq!(value, json!({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": c.id}}))
        }
        Kind::Shutdown(_) => assert_eq!(value, json!({"jsonrpc": "2.0", "method": "shutdown"})),
        other => panic!("encoded {other:?} as {line:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&direction, rest)) = data.split_first() else { return };
    if direction % 2 == 0 {
        // The link reads lines with LinesCodec: UTF-8, without the newline.
        if let Ok(line) = std::str::from_utf8(rest) {
            if !line.contains('\n') {
                check_decoded(line);
            }
        }
    } else if let Ok(frame) = Frame::decode(rest) {
        check_encoded(&frame);
    }
});
