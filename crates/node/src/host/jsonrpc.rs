//! Line-delimited JSON-RPC 2.0 (DESIGN.md §6), translated to and from
//! frames, so that the rest of the host sees one kind of link.
//!
//! The router's request ids are the JSON-RPC ids; `initialize` uses id 0,
//! which calls never do. A streamed item is a `$/item` notification; a
//! final `null` result after items ends the stream without another item.
//!
//! A module's own calls are `$/call` requests (and `$/cancel` notifications
//! naming their id) from the module; the router answers them with responses
//! (and `$/item` notifications) of the same id. The two directions' ids
//! never clash: a line with `method` is a request, one without a response,
//! whichever side sends it. The translation of `$/call` is in `calls`.

// Explicit paths: fuzz/fuzz_targets/jsonrpc_line.rs compiles this file in
// by `#[path]`, where a bare `mod` would be looked for beside it.
#[path = "jsonrpc/events.rs"]
mod events;

use std::collections::HashMap;

use bytes::Bytes;
use polis_mesh::pb::{self, Frame, frame::Kind, reply::Outcome};
use serde::Deserialize;
use serde_json::value::RawValue;
use tonic::Code;

/// The id of the `initialize` request.
pub(crate) const INITIALIZE_ID: u64 = 0;

/// The `initialize` request carrying the manifest's `[config]`.
pub(crate) fn initialize(config: &serde_json::Value) -> Vec<u8> {
    line(
        &serde_json::json!({"jsonrpc": "2.0", "id": INITIALIZE_ID, "method": "initialize", "params": config}),
    )
}

/// The line for a frame going to the module, if the frame has one.
pub(crate) fn encode(frame: &Frame) -> Option<Vec<u8>> {
    match frame.kind.as_ref()? {
        Kind::Request(r) => {
            // Re-serialized so that a pretty-printed payload stays on one line.
            let params = match r.payload.as_ref().map(|p| &p.data) {
                Some(data) if !data.is_empty() => {
                    serde_json::from_slice::<serde_json::Value>(data).unwrap_or(serde_json::Value::Null)
                }
                _ => serde_json::Value::Null,
            };
            Some(line(
                &serde_json::json!({"jsonrpc": "2.0", "id": r.id, "method": r.method, "params": params}),
            ))
        }
        Kind::Cancel(c) => {
            Some(line(&serde_json::json!({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": c.id}})))
        }
        Kind::Shutdown(_) => Some(line(&serde_json::json!({"jsonrpc": "2.0", "method": "shutdown"}))),
        // The answer to one of the module's `$/call`s.
        Kind::Reply(r) => Some(line(&calls::response(r))),
        kind => events::encode(kind).map(|value| line(&value)),
    }
}

fn line(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ItemParams<'a> {
    id: u64,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// Translates one line from the module. `Ok(None)` is a notification the
/// router does not act on; `Err` means the line is not JSON-RPC.
pub(crate) fn decode(line: &str) -> Result<Option<Frame>, String> {
    // A map of raw values keeps `"result": null` apart from no result at all.
    let fields: HashMap<String, &RawValue> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object ({e})"))?;
    let field = |name: &str| fields.get(name).map(|raw| raw.get());
    if field("jsonrpc") != Some("\"2.0\"") {
        return Err("not JSON-RPC 2.0 (\"jsonrpc\": \"2.0\" is missing)".into());
    }
    if let Some(method) = field("method") {
        if method == "\"$/call\"" || method == "\"$/cancel\"" {
            return Ok(calls::decode(method, &fields));
        }
        if let Some(frame) = events::decode(method, &fields)? {
            return Ok(Some(frame));
        }
        if method != "\"$/item\"" {
            tracing::debug!("ignoring notification {method}");
            return Ok(None);
        }
        let raw = field("params").ok_or("$/item without params")?;
        let item: ItemParams<'_> = serde_json::from_str(raw).map_err(|e| format!("bad $/item ({e})"))?;
        return Ok(Some(reply(item.id, Some(Outcome::Payload(json_payload(item.value))), true)));
    }
    let id: u64 = field("id")
        .and_then(|raw| serde_json::from_str(raw).ok())
        .ok_or("a response without a numeric id")?;
    let outcome = match (fields.get("result"), field("error")) {
        (_, Some(raw)) => {
            let e: RpcError = serde_json::from_str(raw).map_err(|e| format!("bad error object ({e})"))?;
            Some(Outcome::Error(pb::Error { code: grpc_code(e.code) as i32, message: e.message }))
        }
        (Some(r), None) if r.get() != "null" => Some(Outcome::Payload(json_payload(r))),
        (Some(_), None) => None,
        (None, None) => return Err("a response with neither result nor error".into()),
    };
    Ok(Some(reply(id, outcome, false)))
}

fn reply(id: u64, outcome: Option<Outcome>, more: bool) -> Frame {
    Frame { kind: Some(Kind::Reply(pb::Reply { id, outcome, more })) }
}

fn json_payload(raw: &RawValue) -> pb::Payload {
    pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::copy_from_slice(raw.get().as_bytes()) }
}

/// JSON-RPC's reserved codes map to their gRPC kin; a module may also
/// answer a gRPC code (1-16) directly.
fn grpc_code(code: i64) -> Code {
    match code {
        -32601 => Code::NotFound,
        -32700 | -32600 | -32602 => Code::InvalidArgument,
        1..=16 => Code::from(code as i32),
        _ => Code::Unknown,
    }
}

#[path = "jsonrpc/calls.rs"]
mod calls;
pub(crate) use calls::INVALID_CALL;

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(line: &str) -> pb::Reply {
        match decode(line).unwrap().unwrap().kind {
            Some(Kind::Reply(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn results_items_and_errors_become_replies() {
        let r = reply_of(r#"{"jsonrpc":"2.0","id":4,"result":{"a": [1, 2]}}"#);
        assert_eq!((r.id, r.more), (4, false));
        let Some(Outcome::Payload(p)) = r.outcome else { panic!() };
        assert_eq!(&p.data[..], br#"{"a": [1, 2]}"#);

        let r = reply_of(r#"{"jsonrpc":"2.0","method":"$/item","params":{"id":9,"value":3}}"#);
        assert_eq!((r.id, r.more), (9, true));

        let r = reply_of(r#"{"jsonrpc": "2.0", "id": 5, "result": null}"#);
        assert!(r.outcome.is_none());

        let r = reply_of(r#"{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"no such method"}}"#);
        let Some(Outcome::Error(e)) = r.outcome else { panic!() };
        assert_eq!((e.code, e.message.as_str()), (Code::NotFound as i32, "no such method"));
    }

    #[test]
    fn garbage_is_an_error() {
        for line in ["hello", "{}", r#"{"jsonrpc":"2.0"}"#, "[1,2]", r#"{"jsonrpc":"1.0","id":1,"result":1}"#]
        {
            assert!(decode(line).is_err(), "{line}");
        }
        assert!(decode(r#"{"jsonrpc":"2.0","method":"$/log","params":"hi"}"#).unwrap().is_none());
    }

    #[test]
    fn requests_stay_on_one_line() {
        let frame = Frame {
            kind: Some(Kind::Request(pb::Request {
                id: 3,
                method: "echo".into(),
                payload: Some(pb::Payload {
                    content_type: String::new(),
                    data: Bytes::from_static(b"{\n \"a\": 1\n}"),
                }),
                ..Default::default()
            })),
        };
        let line = encode(&frame).unwrap();
        assert_eq!(line, b"{\"id\":3,\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"a\":1}}\n");
    }
}
