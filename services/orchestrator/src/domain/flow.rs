//! The flow definition model (the JSON object of `schemas/orchestrator/flow.schema.json`),
//! parsed only after the schema accepted it, and the control-flow graph derived from it.
use serde::Deserialize;
use serde_json::{Map, Value};

/// Reserved successor name: the execution finishes.
pub const END: &str = "end";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    #[serde(default)]
    pub triggers: Vec<TriggerDef>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub output: Option<Map<String, Value>>,
    #[serde(default)]
    pub on_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerDef {
    pub id: String,
    #[serde(default)]
    pub event: Option<EventTrigger>,
    #[serde(default)]
    pub schedule: Option<ScheduleTrigger>,
    #[serde(default)]
    pub manual: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventTrigger {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTrigger {
    pub cron: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub missed: Option<MissedPolicy>,
}

/// What a scheduler that was down does with the slots it missed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Fire only the latest due slot.
    #[default]
    Skip,
    /// Fire every missed slot (bounded), oldest first.
    CatchUp,
}

impl MissedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::CatchUp => "catch_up",
        }
    }
    pub fn parse(s: &str) -> Self {
        if s == "catch_up" {
            MissedPolicy::CatchUp
        } else {
            MissedPolicy::Skip
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub initial_backoff_ms: Option<u64>,
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    #[serde(default)]
    pub retryable_codes: Option<Vec<String>>,
}

impl Retry {
    pub fn attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(1).max(1)
    }
    /// gRPC codes worth another attempt: by default the transient ones.
    pub fn retryable(&self, code: &str) -> bool {
        match &self.retryable_codes {
            Some(codes) => codes.iter().any(|c| c == code),
            None => matches!(
                code,
                "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "RESOURCE_EXHAUSTED" | "ABORTED"
            ),
        }
    }
    /// Exponential backoff with full jitter before attempt `next_attempt` (2, 3, …).
    pub fn backoff_ms(&self, next_attempt: u32, jitter: f64) -> u64 {
        let initial = self.initial_backoff_ms.unwrap_or(200);
        let max = self.max_backoff_ms.unwrap_or(10_000).max(initial);
        let exp = initial.saturating_mul(1u64 << next_attempt.saturating_sub(2).min(20));
        let capped = exp.min(max);
        // Half fixed, half jittered: retries of many executions spread out, none is immediate.
        capped / 2 + ((capped as f64 / 2.0) * jitter.clamp(0.0, 1.0)) as u64
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallSpec {
    pub method: String,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub input: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IfSpec {
    pub condition: String,
    pub then: String,
    #[serde(default, rename = "else")]
    pub otherwise: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub when: String,
    pub next: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SwitchSpec {
    pub cases: Vec<Case>,
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SetSpec {
    pub vars: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FailSpec {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForeachSpec {
    pub items: String,
    #[serde(default)]
    pub concurrency: Option<u32>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DelaySpec {
    pub seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WaitUntilSpec {
    pub time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegateSpec {
    pub connection: String,
    pub webhook_path: String,
    #[serde(default)]
    pub payload: Map<String, Value>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub poll_interval_seconds: Option<u64>,
}

/// One step as written; exactly one of the kind fields is set (the schema's `oneOf`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub id: String,
    #[serde(default)]
    pub call: Option<CallSpec>,
    #[serde(default, rename = "if")]
    pub if_: Option<IfSpec>,
    #[serde(default)]
    pub switch: Option<SwitchSpec>,
    #[serde(default)]
    pub set: Option<SetSpec>,
    #[serde(default)]
    pub fail: Option<FailSpec>,
    #[serde(default)]
    pub foreach: Option<ForeachSpec>,
    #[serde(default)]
    pub delay: Option<DelaySpec>,
    #[serde(default)]
    pub wait_until: Option<WaitUntilSpec>,
    #[serde(default)]
    pub delegate: Option<DelegateSpec>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The step's kind, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    Call(&'a CallSpec),
    If(&'a IfSpec),
    Switch(&'a SwitchSpec),
    Set(&'a SetSpec),
    Fail(&'a FailSpec),
    Foreach(&'a ForeachSpec),
    Delay(&'a DelaySpec),
    WaitUntil(&'a WaitUntilSpec),
    Delegate(&'a DelegateSpec),
}

impl Step {
    /// `None` only for a step the schema would have refused (no kind).
    pub fn kind(&self) -> Option<Kind<'_>> {
        if let Some(c) = &self.call {
            return Some(Kind::Call(c));
        }
        if let Some(c) = &self.if_ {
            return Some(Kind::If(c));
        }
        if let Some(c) = &self.switch {
            return Some(Kind::Switch(c));
        }
        if let Some(c) = &self.set {
            return Some(Kind::Set(c));
        }
        if let Some(c) = &self.fail {
            return Some(Kind::Fail(c));
        }
        if let Some(c) = &self.foreach {
            return Some(Kind::Foreach(c));
        }
        if let Some(c) = &self.delay {
            return Some(Kind::Delay(c));
        }
        if let Some(c) = &self.wait_until {
            return Some(Kind::WaitUntil(c));
        }
        self.delegate.as_ref().map(Kind::Delegate)
    }

    /// Named successors (not the fall-through), with the JSON path suffix each is written at.
    pub fn targets(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(n) = &self.next {
            out.push(("next".to_owned(), n.as_str()));
        }
        match self.kind() {
            Some(Kind::If(i)) => {
                out.push(("if.then".to_owned(), i.then.as_str()));
                if let Some(e) = &i.otherwise {
                    out.push(("if.else".to_owned(), e.as_str()));
                }
            }
            Some(Kind::Switch(s)) => {
                for (i, c) in s.cases.iter().enumerate() {
                    out.push((format!("switch.cases[{i}].next"), c.next.as_str()));
                }
                if let Some(d) = &s.default {
                    out.push(("switch.default".to_owned(), d.as_str()));
                }
            }
            _ => {}
        }
        out
    }

    /// Whether control can fall through to the following step.
    pub fn falls_through(&self) -> bool {
        match self.kind() {
            Some(Kind::Fail(_)) => false,
            Some(Kind::If(i)) => i.otherwise.is_none(),
            Some(Kind::Switch(s)) => s.default.is_none(),
            _ => self.next.is_none(),
        }
    }
}

impl Definition {
    pub fn parse(value: &Value) -> Result<Definition, String> {
        serde_json::from_value(value.clone()).map_err(|e| e.to_string())
    }
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
    /// Step `id` anywhere, including foreach bodies.
    pub fn find(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find_map(|s| {
            if s.id == id {
                return Some(s);
            }
            s.foreach
                .as_ref()
                .and_then(|f| f.steps.iter().find(|b| b.id == id))
        })
    }
}
