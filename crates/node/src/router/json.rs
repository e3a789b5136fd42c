//! `google.protobuf.Value` and JSON text, both ways: the readable
//! alternative to payload bytes for foreign gRPC clients
//! (`CallRequest.params`, `CallReply.result`). The only place the router
//! reads a payload for gRPC, and only for a caller that asked for JSON.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};
use tonic::Status;

/// Past this, a double no longer holds every integer.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// JSON text for the params a client sent as a `Value`. Integral numbers
/// become JSON integers, so that a module reading `{"ms": 5}` as an integer
/// reads it from grpcurl too.
pub(crate) fn params_text(value: Value) -> Result<Vec<u8>, Status> {
    let json = to_json(value)?;
    Ok(serde_json::to_vec(&json).expect("a JSON value serializes"))
}

fn to_json(value: Value) -> Result<Json, Status> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < EXACT => Json::from(n as i64),
        Some(Kind::NumberValue(n)) => Json::Number(
            Number::from_f64(n)
                .ok_or_else(|| Status::invalid_argument(format!("params hold {n}, which JSON cannot say")))?,
        ),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields.into_iter().map(|(k, v)| Ok((k, to_json(v)?))).collect::<Result<Map<_, _>, Status>>()?,
        ),
    })
}

/// A reply's JSON text as a `Value`; `None` if it is not JSON (the caller
/// then gets the payload as it is). Empty is JSON null, as everywhere.
pub(crate) fn result_value(text: &[u8]) -> Option<Value> {
    if text.is_empty() {
        return Some(from_json(Json::Null));
    }
    serde_json::from_slice(text).ok().map(from_json)
}

fn from_json(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => {
            Kind::ListValue(ListValue { values: items.into_iter().map(from_json).collect() })
        }
        Json::Object(fields) => {
            Kind::StructValue(Struct { fields: fields.into_iter().map(|(k, v)| (k, from_json(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_value_both_ways_and_integers_stay_integers() {
        let original = json!({"ms": 5, "x": [1.5, "s", null, true, {"n": -3}], "big": 1e300});
        let value = from_json(original.clone());
        let text = params_text(value).expect("converts");
        assert_eq!(serde_json::from_slice::<Json>(&text).unwrap(), original);
        assert_eq!(String::from_utf8(params_text(from_json(json!(5))).unwrap()).unwrap(), "5");
    }

    #[test]
    fn a_number_json_cannot_say_is_invalid_argument() {
        let nan = Value { kind: Some(Kind::NumberValue(f64::NAN)) };
        assert_eq!(params_text(nan).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_reply_that_is_not_json_has_no_value() {
        assert_eq!(result_value(b""), Some(from_json(Json::Null)));
        assert_eq!(result_value(b"\xff not json"), None);
    }
}
