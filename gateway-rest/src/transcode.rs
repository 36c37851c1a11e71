//! REST → gRPC request: path variables, query parameters and the JSON body are assembled into
//! one proto3 JSON object, then decoded once through the descriptor (unknown fields refused).
//! gRPC → REST response: the message, or its `response_body` field, as proto3 JSON.
use bytes::Bytes;
use http::StatusCode;
use maxai_kit::dynamic::{message_from_json, message_to_json};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage};
use serde_json::{Map, Value};

use crate::{problem::Problem, routes::Route};

fn bad(code: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, code, detail)
}

pub fn request(
    route: &Route,
    bound: Vec<(String, String)>,
    query: Option<&str>,
    body: &Bytes,
) -> Result<DynamicMessage, Problem> {
    let input = route.method.input();
    let mut root = Map::new();
    match route.body.as_str() {
        "" => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(bad("INVALID_ARGUMENT", "this route takes no request body"));
            }
        }
        "*" => match parse_body(body)? {
            Some(Value::Object(obj)) => root = obj,
            Some(_) => {
                return Err(bad(
                    "INVALID_JSON",
                    "the request body must be a JSON object",
                ))
            }
            None => {}
        },
        field => {
            if let Some(value) = parse_body(body)? {
                root.insert(field.to_owned(), value);
            }
        }
    }
    for (path, text) in bound {
        set_path(&input, &mut root, &path, &text, true)?;
    }
    if let Some(q) = query {
        for (key, value) in url::form_urlencoded_parse(q) {
            let in_body = route.body == "*"
                || (!route.body.is_empty()
                    && (key == route.body || key.starts_with(&format!("{}.", route.body))));
            if in_body {
                return Err(bad(
                    "INVALID_ARGUMENT",
                    format!("query parameter {key} is not accepted here"),
                )
                .with_violation(key, "unknown query parameter"));
            }
            set_path(&input, &mut root, &key, &value, false)?;
        }
    }
    message_from_json(input, &Value::Object(root)).map_err(|e| {
        let mut p = bad(
            "INVALID_ARGUMENT",
            format!("the request does not match its schema: {e}"),
        );
        if let Some(field) = unknown_field(&e) {
            p = p.with_violation(field, "unknown field");
        }
        p
    })
}

fn parse_body(body: &Bytes) -> Result<Option<Value>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        bad(
            "INVALID_JSON",
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

fn unknown_field(error: &str) -> Option<String> {
    let rest = error
        .split("unknown field")
        .nth(1)
        .or_else(|| error.split("unrecognized field name").nth(1))?;
    let name: String = rest
        .trim_start_matches([' ', '`', '\'', '"'])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn find_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// Sets `a.b.c` in the JSON object from text, typed by the field's kind.
fn set_path(
    desc: &MessageDescriptor,
    root: &mut Map<String, Value>,
    path: &str,
    text: &str,
    from_path: bool,
) -> Result<(), Problem> {
    let where_ = if from_path {
        "path variable"
    } else {
        "query parameter"
    };
    let invalid = |msg: String| {
        bad("INVALID_ARGUMENT", format!("{where_} {path}: {msg}"))
            .with_violation(path.to_owned(), msg)
    };
    let names: Vec<&str> = path.split('.').collect();
    let mut desc = desc.clone();
    let mut obj = root;
    for (i, name) in names.iter().enumerate() {
        let field = find_field(&desc, name).ok_or_else(|| invalid("unknown field".into()))?;
        let key = field.name().to_owned();
        if i + 1 < names.len() {
            let Kind::Message(inner) = field.kind() else {
                return Err(invalid(format!("{name} is not a message")));
            };
            if field.is_list() || field.is_map() {
                return Err(invalid(format!("{name} cannot be addressed from a URL")));
            }
            desc = inner;
            let entry = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
            obj = entry
                .as_object_mut()
                .ok_or_else(|| invalid(format!("{name} is set twice")))?;
            continue;
        }
        let value = scalar(&field, text).map_err(invalid)?;
        if field.is_list() {
            match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(value),
                _ => return Err(invalid("set twice".into())),
            }
        } else if from_path {
            // The path wins over a body that names the same field differently.
            obj.insert(key, value);
        } else if obj.insert(key, value).is_some() {
            return Err(invalid("given twice".into()));
        }
    }
    Ok(())
}

fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    Ok(match field.kind() {
        Kind::String | Kind::Bytes | Kind::Enum(_) => Value::String(text.to_owned()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            text.parse::<i128>()
                .map_err(|_| "must be an integer".to_owned())?;
            Value::String(text.to_owned())
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => Value::from(
            text.parse::<i64>()
                .map_err(|_| "must be an integer".to_owned())?,
        ),
        Kind::Bool => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err("must be true or false".into()),
        }),
        Kind::Float | Kind::Double => {
            let n: f64 = text.parse().map_err(|_| "must be a number".to_owned())?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| "must be a finite number".to_owned())?
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue" => Value::String(text.to_owned()),
            other => return Err(format!("a {other} cannot be given in a URL")),
        },
    })
}

/// The JSON body of a successful response.
/// The response body as JSON bytes. The common shapes (the whole message, or one message
/// field of it) are serialized directly; the rest goes through [`response`].
pub fn response_bytes(route: &Route, msg: &DynamicMessage) -> Vec<u8> {
    if msg.descriptor().full_name() != "maxai.iam.v1.GetJwksResponse" {
        if route.response_body.is_empty() {
            return maxai_kit::dynamic::message_to_json_bytes(msg);
        }
        if let Some(field) = msg.descriptor().get_field_by_name(&route.response_body) {
            if let prost_reflect::Value::Message(inner) = msg.get_field(&field).as_ref() {
                return maxai_kit::dynamic::message_to_json_bytes(inner);
            }
        }
    }
    serde_json::to_vec(&response(route, msg)).unwrap_or_default()
}

pub fn response(route: &Route, msg: &DynamicMessage) -> Value {
    let mut json = message_to_json(msg);
    // A JWK Set is read by JOSE libraries, not by people: RFC 7517 members that do not apply
    // to a key type (an EdDSA key has no "n", "e" or "y") must be absent, not empty.
    if msg.descriptor().full_name() == "maxai.iam.v1.GetJwksResponse" {
        if let Some(keys) = json.get_mut("keys").and_then(Value::as_array_mut) {
            for key in keys.iter_mut().filter_map(Value::as_object_mut) {
                key.retain(|_, v| v.as_str() != Some(""));
            }
        }
    }
    if route.response_body.is_empty() {
        return json;
    }
    let field = msg.descriptor().get_field_by_name(&route.response_body);
    let key = field
        .map(|f| f.json_name().to_owned())
        .unwrap_or_else(|| route.response_body.clone());
    match json {
        Value::Object(mut obj) => obj
            .remove(&key)
            .unwrap_or_else(|| Value::Object(Map::new())),
        other => other,
    }
}

mod url {
    /// `application/x-www-form-urlencoded` pairs of a query string.
    pub fn form_urlencoded_parse(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    fn decode(s: &str) -> String {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned()
    }
}
