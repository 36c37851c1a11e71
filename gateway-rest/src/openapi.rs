//! OpenAPI 3.1 document generated from the same descriptors as the routes, so the two cannot
//! drift: one operation per route, schemas per message in the proto3 JSON mapping.
use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, Json};
use maxai_kit::descriptors::comment;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};

use crate::{routes::Route, Gateway};

pub async fn handler(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    // Built once: the routes never change while the process runs.
    Json(gw.openapi.get_or_init(|| document(gw.routes())).clone())
}

pub fn document(routes: &[Route]) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut operation_ids: BTreeMap<String, usize> = BTreeMap::new();
    for route in routes {
        let (path, path_params) = route.template.openapi_path();
        let input = route.method.input();
        let mut parameters: Vec<Value> = path_params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let bound = route.template.fields();
        if route.body != "*" {
            for field in input.fields() {
                let top_bound = bound
                    .iter()
                    .any(|b| b == field.name() || b.starts_with(&format!("{}.", field.name())));
                if top_bound
                    || field.name() == route.body
                    || matches!(field.kind(), Kind::Message(ref m) if !is_scalar_wkt(m))
                {
                    continue;
                }
                parameters.push(json!({"name": field.json_name(), "in": "query", "required": false, "schema": field_schema(&field, &mut schemas)}));
            }
        }
        let mut op = Map::new();
        // operationId must be unique: additional bindings of one RPC get a numbered suffix.
        let seen = operation_ids
            .entry(route.method.full_name().to_owned())
            .or_insert(0usize);
        let id = if *seen == 0 {
            route.method.full_name().to_owned()
        } else {
            format!("{}_{}", route.method.full_name(), seen)
        };
        *seen += 1;
        op.insert("operationId".into(), json!(id));
        if let Some(text) = comment(&route.method.parent_file(), route.method.path()) {
            op.insert(
                "summary".into(),
                json!(text
                    .split(". ")
                    .next()
                    .unwrap_or(&text)
                    .trim_end_matches('.')),
            );
            op.insert("description".into(), json!(text));
        }
        op.insert(
            "tags".into(),
            json!([route.method.parent_service().full_name()]),
        );
        op.insert("parameters".into(), Value::Array(parameters));
        match route.body.as_str() {
            "" => {}
            "*" => {
                op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": message_ref(&input, &mut schemas)}}}));
            }
            field => {
                if let Some(f) = input.get_field_by_name(field) {
                    op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": field_schema(&f, &mut schemas)}}}));
                }
            }
        }
        let output = route.method.output();
        let response_schema = match output.get_field_by_name(&route.response_body) {
            Some(f) if !route.response_body.is_empty() => field_schema(&f, &mut schemas),
            _ => message_ref(&output, &mut schemas),
        };
        let problem = json!({"description": "Error", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        let responses = match &route.redirect {
            Some(field) => json!({
                "302": {"description": format!("Redirect to the response's {field}"), "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
                "default": problem
            }),
            None => json!({
                "200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}},
                "default": problem
            }),
        };
        op.insert("responses".into(), responses);
        if route.auth.public {
            op.insert("security".into(), json!([]));
        } else {
            op.insert("x-maxai-permission".into(), json!(route.auth.permission));
            if !route.auth.resource_field.is_empty() {
                op.insert(
                    "x-maxai-resource-field".into(),
                    json!(route.auth.resource_field),
                );
            }
        }
        paths.entry(path).or_default().insert(
            route.http_method.as_str().to_ascii_lowercase(),
            Value::Object(op),
        );
    }
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 7807 problem details",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "code": {"type": "string"}, "correlation_id": {"type": "string"},
                "violations": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "description": {"type": "string"}}}}
            },
            "required": ["type", "title", "status", "code"]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "MaxAI Platform API", "version": "v1", "description": "Generated from the gRPC contracts' google.api.http annotations."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token: from Google sign-in, a refresh, an API-key exchange or `maxai token`."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "A service account's API key; the gateway exchanges it for an access token."}
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    })
}

fn is_scalar_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    )
}

fn message_ref(m: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if let Some(wkt) = wkt_schema(m) {
        return wkt;
    }
    let name = m.full_name().to_owned();
    if !schemas.contains_key(&name) {
        schemas.insert(name.clone(), json!({}));
        let mut props = Map::new();
        for f in m.fields() {
            let mut schema = field_schema(&f, schemas);
            if let Some(text) = comment(&f.parent_file(), f.path()) {
                // A $ref cannot carry siblings in every tool; wrap it so the description stays.
                if schema.get("$ref").is_some() {
                    schema = json!({"allOf": [schema], "description": text});
                } else if let Some(obj) = schema.as_object_mut() {
                    obj.insert("description".into(), json!(text));
                }
            }
            props.insert(f.json_name().to_owned(), schema);
        }
        let mut schema =
            json!({"type": "object", "properties": props, "additionalProperties": false});
        if let Some(text) = comment(&m.parent_file(), m.path()) {
            schema["description"] = json!(text);
        }
        schemas.insert(name.clone(), schema);
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn wkt_schema(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "comma-separated field paths"})
        }
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

fn kind_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => message_ref(m, schemas),
    }
}

fn field_schema(f: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if f.is_map() {
        if let Kind::Message(entry) = f.kind() {
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), schemas)});
        }
    }
    let item = kind_schema(&f.kind(), schemas);
    if f.is_list() {
        json!({"type": "array", "items": item})
    } else {
        item
    }
}
