//! proto ⇄ domain: JSON documents as `google.protobuf.Struct`, records as resources. Proto
//! messages are built field by field without `..`, so a new field breaks the build until
//! someone decides what it carries.
use maxai_kit::resource::{etag, timestamp};
use maxai_proto::maxai::{common::v1::ErrorReason, orchestrator::v1 as pb};
use prost_types::{value::Kind as PKind, ListValue, Struct, Value as PValue};
use serde_json::{Map, Number, Value};

use crate::{
    domain::{
        execution_name, ExecError, ExecState, FlowName, StepKind, StepState, TriggerKind,
        VersionState,
    },
    store::{
        ExecutionRecord, FlowRecord, LimitsRecord, StepRunRecord, TriggerRecord, VersionRecord,
    },
};

pub fn value_to_json(v: &PValue) -> Value {
    match &v.kind {
        None | Some(PKind::NullValue(_)) => Value::Null,
        Some(PKind::NumberValue(n)) => {
            // Whole numbers stay integers so CEL sees `3`, not `3.0`.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Some(PKind::StringValue(s)) => Value::String(s.clone()),
        Some(PKind::BoolValue(b)) => Value::Bool(*b),
        Some(PKind::StructValue(s)) => struct_to_json(s),
        Some(PKind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

pub fn struct_to_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

pub fn json_to_value(v: &Value) -> PValue {
    let kind = match v {
        Value::Null => PKind::NullValue(0),
        Value::Bool(b) => PKind::BoolValue(*b),
        Value::Number(n) => PKind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => PKind::StringValue(s.clone()),
        Value::Array(a) => PKind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => PKind::StructValue(map_to_struct(m)),
    };
    PValue { kind: Some(kind) }
}

fn map_to_struct(m: &Map<String, Value>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A JSON document as a Struct; a non-object is wrapped as `{"value": …}`.
pub fn json_to_struct(v: &Value) -> Struct {
    match v {
        Value::Object(m) => map_to_struct(m),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other.clone());
            map_to_struct(&m)
        }
    }
}

fn ts(us: Option<i64>) -> Option<prost_types::Timestamp> {
    us.map(timestamp)
}

pub fn flow_to_pb(f: &FlowRecord, definition: Option<&VersionRecord>) -> pb::Flow {
    let name = FlowName {
        tenant: f.tenant.clone(),
        flow: f.flow_id.clone(),
    };
    pb::Flow {
        name: name.render(),
        display_name: f.display_name.clone(),
        description: f.description.clone(),
        definition: definition.map(|v| json_to_struct(&v.definition)),
        schema_url: definition.map(|v| v.schema_url.clone()).unwrap_or_default(),
        draft_version: f.draft_version.map(|v| name.version(v)).unwrap_or_default(),
        active_version: f
            .active_version
            .map(|v| name.version(v))
            .unwrap_or_default(),
        etag: etag(f.revision),
        create_time: Some(timestamp(f.create_us)),
        update_time: Some(timestamp(f.update_us)),
    }
}

pub fn version_state_to_pb(s: VersionState) -> pb::FlowVersionState {
    match s {
        VersionState::Draft => pb::FlowVersionState::Draft,
        VersionState::Active => pb::FlowVersionState::Active,
        VersionState::Retired => pb::FlowVersionState::Retired,
    }
}

pub fn version_state_from_pb(v: i32) -> Option<VersionState> {
    match pb::FlowVersionState::try_from(v).ok()? {
        pb::FlowVersionState::Unspecified => None,
        pb::FlowVersionState::Draft => Some(VersionState::Draft),
        pb::FlowVersionState::Active => Some(VersionState::Active),
        pb::FlowVersionState::Retired => Some(VersionState::Retired),
    }
}

pub fn version_to_pb(v: &VersionRecord, with_definition: bool) -> pb::FlowVersion {
    let name = FlowName {
        tenant: v.tenant.clone(),
        flow: v.flow_id.clone(),
    };
    pb::FlowVersion {
        name: name.version(v.version),
        state: version_state_to_pb(v.state) as i32,
        definition: with_definition.then(|| json_to_struct(&v.definition)),
        schema_url: v.schema_url.clone(),
        etag: etag(v.revision),
        create_time: Some(timestamp(v.create_us)),
        update_time: Some(timestamp(v.update_us)),
        activate_time: ts(v.activate_us),
        retire_time: ts(v.retire_us),
        activated_by: v.activated_by.clone(),
    }
}

pub fn trigger_kind_to_pb(k: TriggerKind) -> pb::TriggerKind {
    match k {
        TriggerKind::Event => pb::TriggerKind::Event,
        TriggerKind::Schedule => pb::TriggerKind::Schedule,
        TriggerKind::Manual => pb::TriggerKind::Manual,
    }
}

pub fn trigger_kind_from_pb(v: i32) -> Option<TriggerKind> {
    match pb::TriggerKind::try_from(v).ok()? {
        pb::TriggerKind::Unspecified => None,
        pb::TriggerKind::Event => Some(TriggerKind::Event),
        pb::TriggerKind::Schedule => Some(TriggerKind::Schedule),
        pb::TriggerKind::Manual => Some(TriggerKind::Manual),
    }
}

pub fn trigger_to_pb(t: &TriggerRecord) -> pb::Trigger {
    let name = FlowName {
        tenant: t.tenant.clone(),
        flow: t.flow_id.clone(),
    };
    pb::Trigger {
        flow: name.render(),
        flow_version: name.version(t.version),
        trigger_id: t.trigger_id.clone(),
        kind: trigger_kind_to_pb(t.kind) as i32,
        event_type: t.event_type.clone(),
        filter: t.filter.clone(),
        schedule: t.schedule.clone(),
        time_zone: t.time_zone.clone(),
        next_fire_time: ts(t.next_fire_us),
    }
}

pub fn exec_state_to_pb(s: ExecState) -> pb::ExecutionState {
    match s {
        ExecState::Pending => pb::ExecutionState::Pending,
        ExecState::Running => pb::ExecutionState::Running,
        ExecState::Waiting => pb::ExecutionState::Waiting,
        ExecState::Succeeded => pb::ExecutionState::Succeeded,
        ExecState::Failed => pb::ExecutionState::Failed,
        ExecState::Cancelled => pb::ExecutionState::Cancelled,
    }
}

pub fn exec_state_from_pb(v: i32) -> Option<ExecState> {
    match pb::ExecutionState::try_from(v).ok()? {
        pb::ExecutionState::Unspecified => None,
        pb::ExecutionState::Pending => Some(ExecState::Pending),
        pb::ExecutionState::Running => Some(ExecState::Running),
        pb::ExecutionState::Waiting => Some(ExecState::Waiting),
        pb::ExecutionState::Succeeded => Some(ExecState::Succeeded),
        pb::ExecutionState::Failed => Some(ExecState::Failed),
        pb::ExecutionState::Cancelled => Some(ExecState::Cancelled),
    }
}

pub fn error_to_pb(e: &ExecError) -> pb::ExecutionError {
    let reason = ErrorReason::from_str_name(&format!("ERROR_REASON_{}", e.reason))
        .unwrap_or(ErrorReason::Internal);
    let mut details = e.details.clone();
    if !e.code.is_empty() {
        let mut m = match details {
            Some(Value::Object(m)) => m,
            Some(other) => {
                let mut m = Map::new();
                m.insert("detail".into(), other);
                m
            }
            None => Map::new(),
        };
        m.insert("grpcCode".into(), Value::String(e.code.clone()));
        details = Some(Value::Object(m));
    }
    pb::ExecutionError {
        reason: reason as i32,
        message: e.message.clone(),
        step_id: e.step_id.clone(),
        details: details.as_ref().map(json_to_struct),
    }
}

fn step_kind_to_pb(k: StepKind) -> pb::StepKind {
    match k {
        StepKind::Call => pb::StepKind::PortCall,
        StepKind::Condition => pb::StepKind::Condition,
        StepKind::Loop => pb::StepKind::Loop,
        StepKind::Delay => pb::StepKind::Delay,
        StepKind::Delegate => pb::StepKind::Delegate,
        StepKind::ErrorHandler => pb::StepKind::ErrorHandler,
        // The contract has no kind for data steps; they report UNSPECIFIED.
        StepKind::Set | StepKind::Fail => pb::StepKind::Unspecified,
    }
}

fn step_state_to_pb(s: StepState) -> pb::StepRunState {
    match s {
        StepState::Running => pb::StepRunState::Running,
        StepState::Waiting => pb::StepRunState::Waiting,
        StepState::Succeeded => pb::StepRunState::Succeeded,
        StepState::Failed => pb::StepRunState::Failed,
        StepState::Skipped => pb::StepRunState::Skipped,
        StepState::Cancelled => pb::StepRunState::Cancelled,
    }
}

pub fn step_to_pb(r: &StepRunRecord) -> pb::StepRun {
    pb::StepRun {
        step_id: r.step_id.clone(),
        kind: step_kind_to_pb(r.kind) as i32,
        attempt: r.attempt as i32,
        state: step_state_to_pb(r.state) as i32,
        iteration_path: r.iteration.clone(),
        method: r.method.clone(),
        input: r.input.as_ref().map(json_to_struct),
        output: r.output.as_ref().map(json_to_struct),
        error: r.error.as_ref().map(error_to_pb),
        start_time: Some(timestamp(r.start_us)),
        end_time: ts(r.end_us),
        resume_time: ts(r.resume_us),
    }
}

pub fn execution_to_pb(e: &ExecutionRecord, steps: &[StepRunRecord]) -> pb::Execution {
    let flow = FlowName {
        tenant: e.tenant.clone(),
        flow: e.flow_id.clone(),
    };
    let t = &e.trigger;
    pb::Execution {
        name: execution_name(&e.tenant, &e.id),
        flow: flow.render(),
        flow_version: flow.version(e.version),
        state: exec_state_to_pb(e.state) as i32,
        trigger: Some(pb::ExecutionTrigger {
            kind: TriggerKind::parse(&t.kind)
                .map(trigger_kind_to_pb)
                .unwrap_or(pb::TriggerKind::Unspecified) as i32,
            trigger_id: t.trigger_id.clone(),
            event: t.event.clone(),
            event_id: t.event_id.clone(),
            event_type: t.event_type.clone(),
            schedule_time: ts(t.schedule_us),
            principal: t.principal.clone(),
        }),
        client: e.client.clone(),
        input: Some(json_to_struct(&e.input)),
        output: e.output.as_ref().map(json_to_struct),
        error: e.error.as_ref().map(error_to_pb),
        steps: steps.iter().map(step_to_pb).collect(),
        rerun_of: e.rerun_of.clone(),
        create_time: Some(timestamp(e.create_us)),
        start_time: ts(e.start_us),
        end_time: ts(e.end_us),
        update_time: Some(timestamp(e.update_us)),
    }
}

pub fn limits_to_pb(tenant: &str, l: Option<&LimitsRecord>) -> pb::ConcurrencyLimits {
    let lim = l.map(|r| r.limits).unwrap_or_default();
    pb::ConcurrencyLimits {
        name: format!("tenants/{tenant}/concurrencyLimits"),
        max_running_executions: lim.max_running as i32,
        max_running_executions_per_flow: lim.max_running_per_flow as i32,
        max_running_executions_per_client: lim.max_running_per_client as i32,
        max_pending_executions: lim.max_pending as i32,
        etag: etag(l.map(|r| r.revision).unwrap_or(0)),
        update_time: l.map(|r| timestamp(r.update_us)),
    }
}
