//! `google.protobuf.Struct` / `Value` ⇄ JSON, for the free-form fields of the contracts
//! (connection config, event data, flow inputs). Struct numbers are doubles by definition;
//! whole numbers go back out as JSON integers, as providers and CEL expect (`2`, not `2.0`).
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

/// Largest magnitude below which a whole double is written as an integer exactly.
const EXACT_INTEGER: f64 = 9.0e15;

pub fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(object_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `Struct`; `None` for anything else.
pub fn json_to_struct(v: &Value) -> Option<prost_types::Struct> {
    v.as_object().map(object_to_struct)
}

pub fn object_to_struct(o: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

pub fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
                Value::Number(Number::from(*n as i64))
            } else {
                // Not finite (NaN, ±inf) has no JSON form.
                Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

pub fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_keeps_integers_whole() {
        let v = json!({"a": 2, "b": 2.5, "c": [true, null, "x"], "d": {"e": -7}});
        let s = json_to_struct(&v).unwrap();
        assert_eq!(struct_to_json(&s), v);
        assert_eq!(struct_to_json(&s).to_string(), v.to_string());
        assert!(json_to_struct(&json!([1])).is_none());
        let nan = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert_eq!(value_to_json(&nan), Value::Null);
    }
}
