//! Port calls: JSON input → the method's request message (through the descriptor pool) → the
//! platform's gRPC listener, carrying the service identity's bearer token, the step's
//! connection and the step's idempotency key in `context`.
use std::{sync::Arc, time::Duration};

use maxai_kit::{
    dynamic::{message_from_json, message_to_json, DynamicClient},
    ErrorKind,
};
use prost_reflect::MethodDescriptor;
use serde_json::{json, Value};
use tonic::{transport::Channel, Status};
use tonic_types::StatusExt;

use crate::domain::ExecError;

/// The bearer token to send (the platform's service identity), asked for on every call so a
/// rotated token is picked up; the same shape as the webhook dispatcher's credential.
pub type Credential = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Calls any port method over one channel.
#[derive(Clone)]
pub struct PortCaller {
    client: DynamicClient,
    credential: Credential,
}

impl std::fmt::Debug for PortCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortCaller").finish_non_exhaustive()
    }
}

pub use maxai_kit::error::code_name;

/// A port's error as the execution records it: the platform reason from `ErrorInfo` when the
/// port sent one, else the one its code stands for.
pub fn error_from_status(status: &Status) -> ExecError {
    let details = status.get_error_details();
    let reason = details
        .error_info()
        .map(|i| i.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| ErrorKind::from_code(status.code()).reason().to_owned());
    let violations: Vec<Value> = details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| json!({"field": v.field, "description": v.description}))
                .collect()
        })
        .unwrap_or_default();
    ExecError {
        reason,
        message: status.message().to_owned(),
        step_id: String::new(),
        code: code_name(status.code()).to_owned(),
        details: (!violations.is_empty()).then(|| json!({"fieldViolations": violations})),
    }
}

/// `google.protobuf.Struct` numbers are doubles; whole ones become integers so CEL (which keeps
/// int and double apart) compares and adds them as flows expect.
pub fn integral(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

impl PortCaller {
    pub fn new(channel: Channel, credential: Credential, max_message_bytes: usize) -> Self {
        PortCaller {
            client: DynamicClient::new(channel, max_message_bytes),
            credential,
        }
    }

    /// One call for an execution of `tenant`. `input` is the request without `context`, which
    /// is added here. Refused (PERMISSION_DENIED, nothing sent) unless `connection` is one of
    /// that tenant's: validation checks it at activation, but the engine calls with the
    /// platform's identity, so every path to a port (steps, status polls) is re-checked here.
    pub async fn call(
        &self,
        tenant: &str,
        method: &MethodDescriptor,
        input: &Value,
        connection: &str,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<Value, ExecError> {
        if tenant.is_empty() || !connection.starts_with(&format!("tenants/{tenant}/")) {
            return Err(ExecError {
                reason: "PERMISSION_DENIED".into(),
                message: format!("{connection:?} is not a connection of tenants/{tenant}"),
                step_id: String::new(),
                code: "PERMISSION_DENIED".into(),
                details: None,
            });
        }
        let mut body = match input {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        body.insert(
            "context".into(),
            json!({"connection": connection, "idempotencyKey": idempotency_key}),
        );
        let msg =
            message_from_json(method.input(), &Value::Object(body)).map_err(|e| ExecError {
                reason: "INVALID_ARGUMENT".into(),
                message: format!("the input does not fit {}: {e}", method.input().full_name()),
                step_id: String::new(),
                code: "INVALID_ARGUMENT".into(),
                details: None,
            })?;
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        if let Some(token) = (self.credential)() {
            maxai_kit::auth::with_bearer(&mut req, &token);
        }
        metrics::counter!(crate::metrics::PORT_CALLS_TOTAL, "method" => method.full_name().to_owned())
            .increment(1);
        match tokio::time::timeout(timeout, self.client.unary(method, req)).await {
            Ok(Ok(resp)) => Ok(integral(message_to_json(resp.get_ref()))),
            Ok(Err(status)) => Err(error_from_status(&status)),
            Err(_) => Err(ExecError {
                reason: "TIMEOUT".into(),
                message: format!("no answer within {} ms", timeout.as_millis()),
                step_id: String::new(),
                code: "DEADLINE_EXCEEDED".into(),
                details: None,
            }),
        }
    }
}
