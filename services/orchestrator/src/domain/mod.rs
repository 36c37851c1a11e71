//! Pure domain: resource names, life-cycle states, the flow model and its validation, CEL.
pub mod cel;
pub mod flow;
pub mod validate;

use maxai_kit::{resource::check_id, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `tenants/{t}/flows/{f}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowName {
    pub tenant: String,
    pub flow: String,
}

impl FlowName {
    pub fn parse(raw: &str, field: &str) -> Result<Self> {
        match raw.split('/').collect::<Vec<_>>().as_slice() {
            ["tenants", t, "flows", f] if !t.is_empty() && !f.is_empty() => Ok(FlowName {
                tenant: (*t).to_owned(),
                flow: (*f).to_owned(),
            }),
            _ => Err(Error::invalid(
                field,
                "must be tenants/{tenant}/flows/{flow}",
            )),
        }
    }
    pub fn render(&self) -> String {
        format!("tenants/{}/flows/{}", self.tenant, self.flow)
    }
    pub fn version(&self, v: i64) -> String {
        format!("{}/versions/{v}", self.render())
    }
}

/// `tenants/{t}/flows/{f}/versions/{v}`.
pub fn parse_version_name(raw: &str, field: &str) -> Result<(FlowName, i64)> {
    match raw.split('/').collect::<Vec<_>>().as_slice() {
        ["tenants", t, "flows", f, "versions", v] if !t.is_empty() && !f.is_empty() => {
            let v = v
                .parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| Error::invalid(field, "version must be a positive number"))?;
            Ok((
                FlowName {
                    tenant: (*t).to_owned(),
                    flow: (*f).to_owned(),
                },
                v,
            ))
        }
        _ => Err(Error::invalid(
            field,
            "must be tenants/{tenant}/flows/{flow}/versions/{version}",
        )),
    }
}

/// `tenants/{t}`.
pub fn parse_parent(raw: &str, field: &str) -> Result<String> {
    match raw.split('/').collect::<Vec<_>>().as_slice() {
        ["tenants", t] if !t.is_empty() => Ok((*t).to_owned()),
        _ => Err(Error::invalid(field, "must be tenants/{tenant}")),
    }
}

/// `tenants/{t}/executions/{e}` → (tenant, execution id).
pub fn parse_execution_name(raw: &str, field: &str) -> Result<(String, String)> {
    match raw.split('/').collect::<Vec<_>>().as_slice() {
        ["tenants", t, "executions", e] if !t.is_empty() && !e.is_empty() => {
            Ok(((*t).to_owned(), (*e).to_owned()))
        }
        _ => Err(Error::invalid(
            field,
            "must be tenants/{tenant}/executions/{execution}",
        )),
    }
}

pub fn execution_name(tenant: &str, id: &str) -> String {
    format!("tenants/{tenant}/executions/{id}")
}

/// Checks a caller-chosen flow id (AIP-122).
pub fn check_flow_id(raw: &str) -> Result<()> {
    check_id(raw, 1, 63).map_err(|m| Error::invalid("flow_id", m))
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(VersionState { Draft => "draft", Active => "active", Retired => "retired" });
text_enum!(TriggerKind { Event => "event", Schedule => "schedule", Manual => "manual" });
text_enum!(ExecState {
    Pending => "pending",
    Running => "running",
    Waiting => "waiting",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});
text_enum!(StepKind {
    Call => "call",
    Condition => "condition",
    Loop => "loop",
    Delay => "delay",
    Delegate => "delegate",
    ErrorHandler => "error_handler",
    Set => "set",
    Fail => "fail",
});
text_enum!(StepState {
    Running => "running",
    Waiting => "waiting",
    Succeeded => "succeeded",
    Failed => "failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

impl ExecState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ExecState::Succeeded | ExecState::Failed | ExecState::Cancelled
        )
    }
}

/// Why a step or an execution failed, as stored (JSON) and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecError {
    /// Platform reason without prefix, e.g. `UNAVAILABLE`, `INTERNAL`.
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub step_id: String,
    /// gRPC code name of a port error (`UNAVAILABLE`), for retry decisions.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub details: Option<Value>,
}

impl ExecError {
    pub fn internal(message: impl Into<String>, step_id: &str) -> Self {
        ExecError {
            reason: "INTERNAL".into(),
            message: message.into(),
            step_id: step_id.into(),
            code: String::new(),
            details: None,
        }
    }
}

/// What started an execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    pub kind: String,
    #[serde(default)]
    pub trigger_id: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub schedule_us: Option<i64>,
    #[serde(default)]
    pub principal: String,
}
