//! n8n JSON ⇄ port messages. Responses are read into typed structs and destructured without
//! `..`; n8n's extra workflow fields (`staticData`, `pinData`, `meta`, `tags`, ...) are named
//! and deliberately dropped, because the port does not carry them.
use chrono::{DateTime, Utc};
use maxai_adapter::ProviderError;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::ports::workflow::v1::{
    ExecutionStatus, GetExecutionStatusResponse, Workflow,
};
use prost_types::value::Kind;
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::PROVIDER;
pub use maxai_kit::structs::{json_to_struct, json_to_value, struct_to_json, value_to_json};

/// Reads n8n's `{"message": "..."}` error body; n8n gives no error codes.
pub fn parse_error(status: u16, body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Body {
        message: String,
    }
    let message = match serde_json::from_slice::<Body>(body) {
        Ok(Body { message }) => message,
        // Not n8n's JSON (a reverse proxy's page): keep a short, printable prefix.
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    if message.trim().is_empty() {
        (String::new(), format!("HTTP {status}"))
    } else {
        (String::new(), message)
    }
}

pub fn provider_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(PROVIDER, ErrorKind::Provider, message)
}

/// A workflow as n8n's API returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowJson {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub nodes: Vec<Value>,
    #[serde(default)]
    pub connections: Value,
    #[serde(default)]
    pub settings: Value,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub static_data: Value,
}

pub fn parse_workflow(body: &[u8]) -> Result<WorkflowJson, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|e| provider_error(format!("unexpected workflow body: {e}")))
}

fn timestamp(text: Option<&str>) -> Option<Timestamp> {
    let t = DateTime::parse_from_rfc3339(text?)
        .ok()?
        .with_timezone(&Utc);
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn object_or_empty(v: &Value) -> prost_types::Struct {
    json_to_struct(v).unwrap_or_default()
}

pub fn workflow_of(w: &WorkflowJson) -> Workflow {
    let WorkflowJson {
        id,
        name,
        nodes,
        connections,
        settings,
        active,
        version_id,
        created_at,
        updated_at,
        // n8n's run-time state of trigger nodes; not part of the port's workflow.
        static_data: _,
    } = w;
    Workflow {
        id: id.clone(),
        name: name.clone(),
        nodes: nodes.iter().map(object_or_empty).collect(),
        connections: Some(object_or_empty(connections)),
        settings: Some(object_or_empty(settings)),
        active: *active,
        version_id: version_id.clone().unwrap_or_default(),
        create_time: timestamp(created_at.as_deref()),
        update_time: timestamp(updated_at.as_deref()),
    }
}

/// The writable fields n8n's create and update schemas take (read-only ones are never sent).
pub struct WritableWorkflow {
    pub name: String,
    pub nodes: Vec<Value>,
    pub connections: Value,
    pub settings: Value,
}

impl WritableWorkflow {
    pub fn from_port(w: &Workflow) -> Self {
        let Workflow {
            id: _,
            name,
            nodes,
            connections,
            settings,
            // Output-only fields and `active` (set through activate/deactivate).
            active: _,
            version_id: _,
            create_time: _,
            update_time: _,
        } = w;
        WritableWorkflow {
            name: name.clone(),
            nodes: nodes.iter().map(struct_to_json).collect(),
            connections: connections
                .as_ref()
                .map_or_else(|| json!({}), struct_to_json),
            settings: settings.as_ref().map_or_else(|| json!({}), struct_to_json),
        }
    }

    pub fn from_n8n(w: &WorkflowJson) -> Self {
        WritableWorkflow {
            name: w.name.clone(),
            nodes: w.nodes.clone(),
            connections: if w.connections.is_object() {
                w.connections.clone()
            } else {
                json!({})
            },
            settings: if w.settings.is_object() {
                w.settings.clone()
            } else {
                json!({})
            },
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "nodes": self.nodes,
            "connections": self.connections,
            "settings": self.settings,
        })
    }
}

/// An execution as n8n's API returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionJson {
    pub id: Value,
    #[serde(default)]
    pub finished: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub wait_till: Option<String>,
    #[serde(default)]
    pub workflow_id: Value,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionList {
    #[serde(default)]
    pub data: Vec<ExecutionJson>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// n8n writes ids as numbers or strings depending on the endpoint and version.
pub fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

pub fn status_of(status: Option<&str>) -> ExecutionStatus {
    match status {
        Some("new") => ExecutionStatus::New,
        Some("running") => ExecutionStatus::Running,
        Some("waiting") => ExecutionStatus::Waiting,
        Some("success") => ExecutionStatus::Success,
        Some("error" | "failed") => ExecutionStatus::Error,
        Some("canceled") => ExecutionStatus::Canceled,
        Some("crashed") => ExecutionStatus::Crashed,
        Some("unknown") => ExecutionStatus::Unknown,
        _ => ExecutionStatus::Unspecified,
    }
}

/// The run error's message, from `data.resultData.error.message`.
pub fn error_message(data: Option<&Value>) -> String {
    data.and_then(|d| d.pointer("/resultData/error/message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub fn execution_of(e: &ExecutionJson, include_data: bool) -> GetExecutionStatusResponse {
    let ExecutionJson {
        id,
        finished,
        // The port reports no trigger mode.
        mode: _,
        status,
        started_at,
        stopped_at,
        wait_till,
        workflow_id,
        data,
    } = e;
    let status = status_of(status.as_deref());
    let error_message = match status {
        ExecutionStatus::Error | ExecutionStatus::Crashed => error_message(data.as_ref()),
        _ => String::new(),
    };
    GetExecutionStatusResponse {
        execution_id: id_text(id),
        workflow_id: id_text(workflow_id),
        status: status as i32,
        finished: *finished,
        data: if include_data {
            data.as_ref().and_then(json_to_struct)
        } else {
            None
        },
        error_message,
        start_time: timestamp(started_at.as_deref()),
        stop_time: timestamp(stopped_at.as_deref()),
        wait_time: timestamp(wait_till.as_deref()),
    }
}

/// Whether `needle` appears as a string value anywhere in `v`.
pub fn holds_string(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| holds_string(x, needle)),
        Value::Object(o) => o.values().any(|x| holds_string(x, needle)),
        _ => false,
    }
}

/// A webhook's answer body as a protobuf value: JSON when it parses, else text; `None` if empty.
pub fn answer_value(body: &[u8]) -> Option<prost_types::Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Some(json_to_value(&v)),
        Err(_) => Some(prost_types::Value {
            kind: Some(Kind::StringValue(
                String::from_utf8_lossy(body).into_owned(),
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_map_statuses_errors_and_times() {
        let e: ExecutionJson = serde_json::from_value(json!({
            "id": 12, "finished": false, "mode": "webhook", "status": "error",
            "startedAt": "2026-01-02T03:04:05.250Z", "stoppedAt": null, "workflowId": "wf1",
            "data": {"resultData": {"error": {"message": "boom"}}}
        }))
        .expect("execution");
        let r = execution_of(&e, false);
        assert_eq!(r.execution_id, "12");
        assert_eq!(r.status(), ExecutionStatus::Error);
        assert_eq!(r.error_message, "boom");
        assert_eq!(r.data, None);
        let start = r.start_time.expect("start");
        assert_eq!(start.nanos, 250_000_000);
        assert_eq!(status_of(Some("later")), ExecutionStatus::Unspecified);
    }

    #[test]
    fn answers_and_errors() {
        assert_eq!(answer_value(b""), None);
        assert!(matches!(
            answer_value(b"plain").and_then(|v| v.kind),
            Some(Kind::StringValue(s)) if s == "plain"
        ));
        assert_eq!(
            parse_error(404, br#"{"message":"Not Found"}"#).1,
            "Not Found"
        );
        assert_eq!(parse_error(500, b"").1, "HTTP 500");
        assert!(holds_string(&json!({"a": [{"b": "corr-1"}]}), "corr-1"));
        assert!(!holds_string(&json!({"a": "corr-10"}), "corr-1"));
    }
}
