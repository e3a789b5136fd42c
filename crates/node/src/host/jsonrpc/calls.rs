//! A JSON-RPC module's own calls: `$/call` and `$/cancel` from the module
//! become `Request` and `Cancel` frames; the `Reply` frames that answer
//! them become responses (and `$/item` notifications) of the same id.

use std::collections::HashMap;

use bytes::Bytes;
use polis_mesh::pb::{self, Frame, frame::Kind, reply::Outcome};
use serde_json::{Value, value::RawValue};
use tonic::Code;

/// The content type of a `$/call` refused for its fields: the frame carries
/// the reason to `outgoing`, which answers the module with it. Never on a
/// wire.
pub(crate) const INVALID_CALL: &str = "application/x-polis-invalid-call";

/// What a `$/call` is answered with when its params are wrong.
const INVALID_PARAMS: i64 = -32602;

/// Translates `$/call` (a request: `{id, params: {service, method, params?,
/// timeout_ms?, stream?, parent?}}`) or `$/cancel` (`{params: {id}}`). A
/// `$/call` with bad fields becomes a request refused with the reason; one
/// without a numeric id cannot be answered and is dropped with a warning.
pub(super) fn decode(method: &str, fields: &HashMap<String, &RawValue>) -> Option<Frame> {
    let params: Option<Value> = fields.get("params").and_then(|raw| serde_json::from_str(raw.get()).ok());
    if method == "\"$/cancel\"" {
        let id = params.as_ref().and_then(|p| p.get("id")).and_then(Value::as_u64);
        let Some(id) = id else {
            tracing::warn!("a JSON-RPC module sent $/cancel without a numeric params.id; ignoring it");
            return None;
        };
        return Some(Frame { kind: Some(Kind::Cancel(pb::Cancel { id })) });
    }
    let Some(id) = fields.get("id").and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok()) else {
        tracing::warn!("a JSON-RPC module sent $/call without a numeric id; it cannot be answered");
        return None;
    };
    let request = match request(id, params) {
        Ok(request) => request,
        Err(why) => pb::Request {
            id,
            payload: Some(pb::Payload { content_type: INVALID_CALL.into(), data: Bytes::from(why) }),
            ..Default::default()
        },
    };
    Some(Frame { kind: Some(Kind::Request(request)) })
}

fn request(id: u64, params: Option<Value>) -> Result<pb::Request, String> {
    let Some(Value::Object(mut params)) = params else {
        return Err("$/call: \"params\" must be an object {service, method, params, timeout_ms}".into());
    };
    let text = |name: &str| match params.get(name) {
        None | Some(Value::Null) => Err(format!("$/call: \"{name}\" is missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("$/call: \"{name}\" must be a string")),
    };
    let (service, method) = (text("service")?, text("method")?);
    let number = |name: &str| match params.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| format!("$/call: \"{name}\" must be a non-negative integer")),
    };
    let (timeout_ms, parent) = (number("timeout_ms")?, number("parent")?);
    let stream = match params.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("$/call: \"stream\" must be true or false".into()),
    };
    let data = match params.remove("params") {
        None => Bytes::new(),
        Some(value) => Bytes::from(serde_json::to_vec(&value).expect("JSON values serialize")),
    };
    Ok(pb::Request {
        id,
        method,
        payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data }),
        timeout_ms,
        service,
        stream,
        parent,
        ..Default::default()
    })
}

/// The JSON-RPC message for a reply to one of the module's calls.
pub(super) fn response(reply: &pb::Reply) -> Value {
    let id = reply.id;
    match &reply.outcome {
        Some(Outcome::Payload(p)) if reply.more => {
            serde_json::json!({"jsonrpc": "2.0", "method": "$/item", "params": {"id": id, "value": value(p)}})
        }
        Some(Outcome::Payload(p)) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": value(p)}),
        None => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": null}),
        Some(Outcome::Error(e)) => {
            // Invalid arguments are JSON-RPC's invalid params; any other
            // error keeps its gRPC code (1-16), as a module may answer one.
            let code = match Code::from(e.code) {
                Code::InvalidArgument => INVALID_PARAMS,
                _ => i64::from(e.code),
            };
            serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": e.message}})
        }
    }
}

/// A payload as JSON: a JSON-RPC module reads nothing else.
fn value(payload: &pb::Payload) -> Value {
    if payload.data.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&payload.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload.data).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_line;
    use super::*;

    fn request_of(line: &str) -> pb::Request {
        match decode_line(line).unwrap().unwrap().kind {
            Some(Kind::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn refusal(line: &str) -> String {
        let r = request_of(line);
        let p = r.payload.unwrap();
        assert_eq!(p.content_type, INVALID_CALL, "{line}");
        String::from_utf8(p.data.to_vec()).unwrap()
    }

    #[test]
    fn a_call_becomes_a_request() {
        let r = request_of(
            r#"{"jsonrpc":"2.0","id":7,"method":"$/call","params":{"service":"echo","method":"echo",
            "params":{"a":1},"timeout_ms":250,"stream":true,"parent":3}}"#,
        );
        assert_eq!((r.id, r.service.as_str(), r.method.as_str()), (7, "echo", "echo"));
        assert_eq!((r.timeout_ms, r.stream, r.parent), (250, true, 3));
        assert_eq!(&r.payload.unwrap().data[..], br#"{"a":1}"#);
        let r =
            request_of(r#"{"jsonrpc":"2.0","id":8,"method":"$/call","params":{"service":"s","method":"m"}}"#);
        assert_eq!((r.timeout_ms, r.stream, r.parent), (0, false, 0));
    }

    #[test]
    fn bad_call_fields_are_named() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"method":"$/call"}"#, "\"params\" must be an object"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"$/call","params":{"method":"m"}}"#,
                "\"service\" is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"$/call","params":{"service":5,"method":"m"}}"#,
                "\"service\" must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"$/call","params":{"service":"s"}}"#,
                "\"method\" is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"$/call","params":{"service":"s","method":"m","timeout_ms":-1}}"#,
                "\"timeout_ms\" must be a non-negative integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"$/call","params":{"service":"s","method":"m","stream":"yes"}}"#,
                "\"stream\" must be true or false",
            ),
        ];
        for (line, expected) in cases {
            let why = refusal(line);
            assert!(why.contains(expected), "{line}: {why}");
        }
        // No id: nobody to answer.
        assert!(decode_line(r#"{"jsonrpc":"2.0","method":"$/call","params":{}}"#).unwrap().is_none());
    }

    #[test]
    fn a_cancel_becomes_a_cancel() {
        let frame =
            decode_line(r#"{"jsonrpc":"2.0","method":"$/cancel","params":{"id":4}}"#).unwrap().unwrap();
        assert!(matches!(frame.kind, Some(Kind::Cancel(pb::Cancel { id: 4 }))));
        assert!(decode_line(r#"{"jsonrpc":"2.0","method":"$/cancel","params":{}}"#).unwrap().is_none());
    }

    #[test]
    fn replies_become_responses() {
        let payload = |data: &'static [u8]| {
            Some(Outcome::Payload(pb::Payload {
                content_type: polis_mesh::JSON.into(),
                data: Bytes::from_static(data),
            }))
        };
        let item = response(&pb::Reply { id: 2, outcome: payload(b"[1]"), more: true });
        assert_eq!(
            item,
            serde_json::json!({"jsonrpc":"2.0","method":"$/item","params":{"id":2,"value":[1]}})
        );
        let end = response(&pb::Reply { id: 2, outcome: payload(b"{\"a\":1}"), more: false });
        assert_eq!(end, serde_json::json!({"jsonrpc":"2.0","id":2,"result":{"a":1}}));
        let error = pb::Error { code: Code::InvalidArgument as i32, message: "bad".into() };
        let bad = response(&pb::Reply { id: 3, outcome: Some(Outcome::Error(error)), more: false });
        assert_eq!(bad["error"]["code"], -32602);
        let error = pb::Error { code: Code::PermissionDenied as i32, message: "no".into() };
        let denied = response(&pb::Reply { id: 3, outcome: Some(Outcome::Error(error)), more: false });
        assert_eq!(denied["error"]["code"], 7);
    }
}
