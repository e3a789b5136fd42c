//! Events in JSON-RPC (the contract's `$/publish`, `$/subscribe`,
//! `$/unsubscribe`, `$/event`, `$/lagged`), translated to and from the
//! event frames.
//!
//! A `$/subscribe` request's id is the subscription's id: it is answered
//! with `{"subscription": id}` or an error, and its events carry it.

use std::collections::HashMap;

use bytes::Bytes;
use polis_mesh::pb::{self, Frame, frame::Kind};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct PublishParams<'a> {
    topic: String,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeParams {
    pattern: String,
}

#[derive(Deserialize)]
struct UnsubscribeParams {
    subscription: u64,
}

/// The frame for an event method from the module; `Ok(None)` when
/// `method` (still JSON-quoted) is not one.
pub(super) fn decode(method: &str, fields: &HashMap<String, &RawValue>) -> Result<Option<Frame>, String> {
    let params = || fields.get("params").map_or("null", |raw| raw.get());
    let kind = match method {
        "\"$/publish\"" => {
            let p: PublishParams<'_> =
                serde_json::from_str(params()).map_err(|e| format!("bad $/publish params ({e})"))?;
            let data = p
                .value
                .map_or_else(|| Bytes::from_static(b"null"), |v| Bytes::copy_from_slice(v.get().as_bytes()));
            Kind::Publish(pb::Publish {
                topic: p.topic,
                payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data }),
            })
        }
        "\"$/subscribe\"" => {
            let id: u64 = fields
                .get("id")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or("$/subscribe is a request: it needs a numeric id")?;
            let p: SubscribeParams =
                serde_json::from_str(params()).map_err(|e| format!("bad $/subscribe params ({e})"))?;
            Kind::Subscribe(pb::Subscribe { id, pattern: p.pattern })
        }
        "\"$/unsubscribe\"" => {
            let p: UnsubscribeParams =
                serde_json::from_str(params()).map_err(|e| format!("bad $/unsubscribe params ({e})"))?;
            Kind::Unsubscribe(pb::Unsubscribe { id: p.subscription })
        }
        _ => return Ok(None),
    };
    Ok(Some(Frame { kind: Some(kind) }))
}

/// The line for an event frame going to the module; `None` if not one.
pub(super) fn encode(kind: &Kind) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match kind {
        Kind::Subscribed(s) => match &s.error {
            None => json!({"jsonrpc": "2.0", "id": s.id, "result": {"subscription": s.id}}),
            Some(e) => json!({"jsonrpc": "2.0", "id": s.id, "error": {"code": e.code, "message": e.message}}),
        },
        Kind::Event(e) => {
            let value = e
                .payload
                .as_ref()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok())
                .unwrap_or(serde_json::Value::Null);
            json!({"jsonrpc": "2.0", "method": "$/event", "params": {
                "subscription": e.subscription, "topic": e.topic, "value": value, "publisher": e.publisher,
            }})
        }
        Kind::Lagged(l) => json!({"jsonrpc": "2.0", "method": "$/lagged", "params": {
            "subscription": l.subscription, "count": l.count,
        }}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{decode as decode_line, encode as encode_frame};
    use super::*;

    #[test]
    fn publish_subscribe_and_unsubscribe_become_frames() {
        let frame =
            decode_line(r#"{"jsonrpc":"2.0","method":"$/publish","params":{"topic":"a.b","value":{"x":1}}}"#)
                .unwrap()
                .unwrap();
        let Some(Kind::Publish(p)) = frame.kind else { panic!("{frame:?}") };
        assert_eq!((p.topic.as_str(), &p.payload.unwrap().data[..]), ("a.b", &br#"{"x":1}"#[..]));

        let frame =
            decode_line(r#"{"jsonrpc":"2.0","id":7,"method":"$/subscribe","params":{"pattern":"a.*"}}"#)
                .unwrap()
                .unwrap();
        let Some(Kind::Subscribe(s)) = frame.kind else { panic!("{frame:?}") };
        assert_eq!((s.id, s.pattern.as_str()), (7, "a.*"));

        let frame = decode_line(r#"{"jsonrpc":"2.0","method":"$/unsubscribe","params":{"subscription":7}}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(frame.kind, Some(Kind::Unsubscribe(pb::Unsubscribe { id: 7 }))));

        assert!(decode_line(r#"{"jsonrpc":"2.0","method":"$/subscribe","params":{"pattern":"a"}}"#).is_err());
        assert!(decode_line(r#"{"jsonrpc":"2.0","method":"$/publish","params":{}}"#).is_err());
    }

    #[test]
    fn events_become_notifications() {
        let event = Frame {
            kind: Some(Kind::Event(pb::Event {
                subscription: 7,
                topic: "a.b".into(),
                payload: Some(pb::Payload {
                    content_type: polis_mesh::JSON.into(),
                    data: Bytes::from_static(b"[1]"),
                }),
                publisher: "m".into(),
            })),
        };
        let line: serde_json::Value = serde_json::from_slice(&encode_frame(&event).unwrap()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"jsonrpc":"2.0","method":"$/event","params":{"subscription":7,"topic":"a.b","value":[1],"publisher":"m"}})
        );
        let refused = Frame {
            kind: Some(Kind::Subscribed(pb::Subscribed {
                id: 3,
                error: Some(pb::Error { code: 3, message: "bad pattern".into() }),
            })),
        };
        let line: serde_json::Value = serde_json::from_slice(&encode_frame(&refused).unwrap()).unwrap();
        assert_eq!(line["error"]["message"], "bad pattern");
        assert_eq!(line["id"], 3);
    }
}
