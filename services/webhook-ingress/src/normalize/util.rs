//! Shared helpers of the provider mappings: reading fields by JSON pointer, times, money and
//! content hashes. Schemas have already checked types; these still fail cleanly (as
//! [`Invalid::Normalization`]) rather than panic when a field is not what the mapping needs.
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::money::{number_to_scaled, Money};
use super::Invalid;

/// An array index token of a JSON pointer (RFC 6901: no sign, no leading zero).
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

/// A payload, read by JSON pointer. JSON `null` reads as absent.
#[derive(Clone, Copy)]
pub(crate) struct Doc<'a>(pub &'a Value);

impl<'a> Doc<'a> {
    pub fn get(self, pointer: &str) -> Option<&'a Value> {
        // `Value::pointer` allocates an unescaped copy of every token; the mappings read ~20
        // fields per webhook by plain keys, so walk those without allocating.
        if pointer.contains('~') {
            return self.0.pointer(pointer).filter(|v| !v.is_null());
        }
        let mut at = self.0;
        if !pointer.is_empty() {
            for token in pointer.strip_prefix('/')?.split('/') {
                at = match at {
                    Value::Object(m) => m.get(token)?,
                    Value::Array(items) => items.get(array_index(token)?)?,
                    _ => return None,
                };
            }
        }
        Some(at).filter(|v| !v.is_null())
    }

    /// A string field (possibly empty).
    pub fn str(self, pointer: &str) -> Option<&'a str> {
        self.get(pointer).and_then(Value::as_str)
    }

    /// A non-empty string field, or a normalization error naming the pointer.
    pub fn req_str(self, pointer: &str) -> Result<&'a str, Invalid> {
        self.str(pointer)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Invalid::normalization(format!("{pointer} is missing or empty")))
    }

    /// A string field as JSON: the string, or `null`.
    pub fn string(self, pointer: &str) -> Value {
        self.str(pointer)
            .map_or(Value::Null, |s| Value::String(s.to_owned()))
    }

    /// A non-empty string field as JSON: the string, or `null` (also for `""`).
    pub fn non_empty(self, pointer: &str) -> Value {
        self.str(pointer)
            .filter(|s| !s.is_empty())
            .map_or(Value::Null, |s| Value::String(s.to_owned()))
    }

    pub fn i64(self, pointer: &str) -> Option<i64> {
        self.get(pointer).and_then(Value::as_i64)
    }

    /// An integer field as JSON: the integer, or `null`.
    pub fn int(self, pointer: &str) -> Value {
        self.i64(pointer).map_or(Value::Null, Value::from)
    }

    /// A boolean field as JSON: the boolean, or `null`.
    pub fn bool(self, pointer: &str) -> Value {
        self.get(pointer)
            .and_then(Value::as_bool)
            .map_or(Value::Null, Value::Bool)
    }

    /// An object field as JSON: a copy of the object, or `null`.
    pub fn object(self, pointer: &str) -> Value {
        match self.get(pointer) {
            Some(v @ Value::Object(_)) => v.clone(),
            _ => Value::Null,
        }
    }

    /// An array of strings as JSON (non-strings left out); `[]` when absent.
    pub fn strings(self, pointer: &str) -> Value {
        let items = self
            .get(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| Value::String(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Value::Array(items)
    }

    /// An RFC 3339 time field, as UTC.
    pub fn time(self, pointer: &str) -> Result<Option<DateTime<Utc>>, Invalid> {
        match self.str(pointer) {
            None | Some("") => Ok(None),
            Some(s) => parse_rfc3339(s).map(Some).ok_or_else(|| {
                Invalid::normalization(format!("{pointer} is not an RFC 3339 time"))
            }),
        }
    }

    /// An RFC 3339 time field as JSON: RFC 3339 UTC text, or `null`.
    pub fn time_json(self, pointer: &str) -> Result<Value, Invalid> {
        Ok(opt_time(self.time(pointer)?))
    }

    /// A Unix-seconds field, as UTC.
    pub fn unix_s(self, pointer: &str) -> Result<Option<DateTime<Utc>>, Invalid> {
        self.i64(pointer)
            .map(|s| {
                DateTime::from_timestamp(s, 0)
                    .ok_or_else(|| Invalid::normalization(format!("{pointer} is out of range")))
            })
            .transpose()
    }

    /// A Unix-milliseconds field, as UTC.
    pub fn unix_ms(self, pointer: &str) -> Result<Option<DateTime<Utc>>, Invalid> {
        self.i64(pointer)
            .map(|ms| {
                DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| Invalid::normalization(format!("{pointer} is out of range")))
            })
            .transpose()
    }

    /// A JSON number scaled by `10^shift` to an integer ([`super::decimal_to_scaled`]).
    pub fn scaled_number(self, pointer: &str, shift: u32) -> Result<Option<i64>, Invalid> {
        match self.get(pointer) {
            None => Ok(None),
            Some(Value::Number(n)) => number_to_scaled(n, shift)
                .map(Some)
                .ok_or_else(|| Invalid::normalization(format!("{pointer} is out of range"))),
            Some(_) => Err(Invalid::normalization(format!("{pointer} is not a number"))),
        }
    }

    /// A decimal-string amount in major units with its currency, as [`Money`] JSON (or `null`).
    pub fn decimal_money(
        self,
        amount_pointer: &str,
        currency_pointer: &str,
    ) -> Result<Value, Invalid> {
        match self.str(amount_pointer) {
            None | Some("") => Ok(Value::Null),
            Some(text) => Money::from_decimal(text, self.str(currency_pointer))
                .map(|m| m.to_json())
                .ok_or_else(|| {
                    Invalid::normalization(format!("{amount_pointer} is not a usable decimal"))
                }),
        }
    }
}

/// The map of a JSON object (`json!({...})`); empty for anything else.
pub(crate) fn into_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// RFC 3339 in UTC with `Z`, with fractional seconds only when there are any.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// The first time that is present, else `fallback`.
pub(crate) fn first_time(
    candidates: impl IntoIterator<Item = Option<DateTime<Utc>>>,
    fallback: DateTime<Utc>,
) -> DateTime<Utc> {
    candidates.into_iter().flatten().next().unwrap_or(fallback)
}

/// Hex SHA-256 (first 128 bits) of the canonical JSON of `value`: object keys sorted, no
/// insignificant whitespace. Equal JSON documents hash alike whatever their key order.
pub(crate) fn content_hash(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    let digest = Sha256::digest(&out);
    hex::encode(&digest[..16])
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
        out.push(b':');
        write_canonical(&map[key], out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {

    #[test]
    fn pointers_read_as_serde_json_reads_them() {
        let v = serde_json::json!({"a": {"b": [10, {"c": "x"}], "": 1, "n": null}, "t~/": 2});
        for ptr in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/01",
            "/a/b/+1",
            "/a/b/2",
            "/a/",
            "/a/n",
            "/missing",
            "a",
            "/t~0~1",
            "/a/b/1/c/d",
        ] {
            assert_eq!(
                Doc(&v).get(ptr),
                v.pointer(ptr).filter(|x| !x.is_null()),
                "{ptr:?}"
            );
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn content_hashes_ignore_key_order_only() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_eq!(content_hash(&a).len(), 32);
    }

    #[test]
    fn times_read_and_print_in_utc() {
        let doc = json!({"t": "2025-01-28T16:35:00.500+02:00", "bad": "yesterday", "ms": 1_700_000_000_123_i64});
        let d = Doc(&doc);
        assert_eq!(
            rfc3339(d.time("/t").unwrap().unwrap()),
            "2025-01-28T14:35:00.500Z"
        );
        assert!(d.time("/missing").unwrap().is_none());
        assert!(matches!(d.time("/bad"), Err(Invalid::Normalization { .. })));
        assert_eq!(
            rfc3339(d.unix_ms("/ms").unwrap().unwrap()),
            "2023-11-14T22:13:20.123Z"
        );
        let huge = json!({"s": i64::MAX});
        assert!(matches!(
            Doc(&huge).unix_s("/s"),
            Err(Invalid::Normalization { .. })
        ));
    }
}
