//! Validation of a flow definition: the published JSON Schema first, then what a schema cannot
//! say — unique ids, CEL that compiles, port methods and input fields that exist in the
//! contracts, step references that exist and point forward (so no cycle can be written), and
//! no unreachable step. Every problem is reported with its JSONPath, all at once.
use std::{collections::HashSet, sync::OnceLock};

use jsonschema::{error::ValidationErrorKind, Validator};
use prost_reflect::MethodDescriptor;
use serde_json::Value;

use super::{
    cel,
    flow::{Definition, Kind, Step, END},
};

/// The schema every definition is checked against.
pub const SCHEMA_TEXT: &str = include_str!("../../../../schemas/orchestrator/flow.schema.json");
/// Its `$id`, reported as a flow's `schema_url`.
pub const SCHEMA_URL: &str = "https://schemas.maxai.dev/orchestrator/flow.schema.json";
/// Only ports may be called from a flow: the platform's own services are not automation targets.
pub const PORT_PACKAGE_PREFIX: &str = "maxai.ports.";

/// One problem in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub json_path: String,
    pub message: String,
    pub rule: String,
}

fn violation(path: impl Into<String>, rule: &str, message: impl Into<String>) -> Violation {
    Violation {
        json_path: path.into(),
        message: message.into(),
        rule: rule.to_owned(),
    }
}

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(SCHEMA_TEXT).expect("flow.schema.json is JSON (unit-tested)");
        jsonschema::draft202012::options()
            .build(&schema)
            .expect("flow.schema.json is a JSON Schema (unit-tested)")
    })
}

/// JSON pointer (`/steps/2/input/to`) → JSONPath (`$.steps[2].input.to`).
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::from("$");
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else if seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            out.push('.');
            out.push_str(&seg);
        } else {
            out.push_str(&format!("['{}']", seg.replace('\'', "\\'")));
        }
    }
    out
}

/// The port method a `call` names (`package.Service/Method`), if the contracts have it.
pub fn resolve_method(name: &str) -> Option<MethodDescriptor> {
    let (service, method) = name.split_once('/')?;
    maxai_kit::descriptors::pool()
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)
}

/// [`validate`], plus what needs the owning tenant: every connection a step acts through must
/// be one of that tenant's (the engine calls ports with the platform's own identity, so the
/// port cannot tell one tenant's flow from another's).
pub fn validate_for_tenant(definition: &Value, tenant: &str) -> Vec<Violation> {
    let mut out = validate(definition);
    if out.iter().any(|v| v.rule.starts_with("schema.")) {
        return out;
    }
    let Ok(def) = Definition::parse(definition) else {
        return out;
    };
    let prefix = format!("tenants/{tenant}/");
    for (path, conn) in connections(&def) {
        if !conn.starts_with(&prefix) {
            out.push(violation(
                path,
                "port.foreign_connection",
                format!("must be a connection of tenants/{tenant}"),
            ));
        }
    }
    out
}

/// Every connection the definition names (call and delegate steps, at any depth of foreach
/// bodies), with its JSONPath: one walk over every step container, so a new container or step
/// kind cannot be missed by one check and not another.
pub fn connections(def: &Definition) -> Vec<(String, &str)> {
    fn walk<'a>(steps: &'a [Step], base: &str, out: &mut Vec<(String, &'a str)>) {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{base}[{i}]");
            if let Some(c) = step.call.as_ref().and_then(|c| c.connection.as_deref()) {
                out.push((format!("{at}.call.connection"), c));
            }
            if let Some(d) = &step.delegate {
                out.push((format!("{at}.delegate.connection"), d.connection.as_str()));
            }
            if let Some(f) = &step.foreach {
                walk(&f.steps, &format!("{at}.foreach.steps"), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&def.steps, "$.steps", &mut out);
    out
}

/// Every violation of `definition`; empty means valid.
pub fn validate(definition: &Value) -> Vec<Violation> {
    let mut out: Vec<Violation> = validator()
        .iter_errors(definition)
        .take(50)
        .map(|e| {
            let mut pointer = e.instance_path().as_str().to_owned();
            if let ValidationErrorKind::Required {
                property: Value::String(name),
            } = e.kind()
            {
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
            violation(
                pointer_to_path(&pointer),
                &format!("schema.{}", e.kind().keyword()),
                e.masked().to_string(),
            )
        })
        .collect();
    if !out.is_empty() {
        return out;
    }
    let def = match Definition::parse(definition) {
        Ok(d) => d,
        Err(e) => return vec![violation("$", "schema.type", e)],
    };
    semantic(&def, &mut out);
    out
}

fn semantic(def: &Definition, out: &mut Vec<Violation>) {
    let mut trigger_ids = HashSet::new();
    for (i, t) in def.triggers.iter().enumerate() {
        let path = format!("$.triggers[{i}]");
        if !trigger_ids.insert(t.id.as_str()) {
            out.push(violation(
                format!("{path}.id"),
                "trigger.duplicate_id",
                "trigger ids must be unique",
            ));
        }
        if let Some(f) = t.event.as_ref().and_then(|e| e.filter.as_deref()) {
            cel_check(f, format!("{path}.event.filter"), out);
        }
        if let Some(s) = &t.schedule {
            if let Err(e) = crate::schedule::parse_cron(&s.cron) {
                out.push(violation(
                    format!("{path}.schedule.cron"),
                    "schedule.invalid_cron",
                    e,
                ));
            }
            if let Some(tz) = s.time_zone.as_deref().filter(|z| !z.is_empty()) {
                if tz.parse::<chrono_tz::Tz>().is_err() {
                    out.push(violation(
                        format!("{path}.schedule.timeZone"),
                        "schedule.invalid_time_zone",
                        "is not an IANA time zone",
                    ));
                }
            }
        }
    }

    let mut step_ids = HashSet::new();
    for (i, step) in def.steps.iter().enumerate() {
        let path = format!("$.steps[{i}]");
        id_check(step, &path, &mut step_ids, out);
        kind_checks(step, &path, out);
        if let Some(Kind::Foreach(f)) = step.kind() {
            for (j, body) in f.steps.iter().enumerate() {
                let bpath = format!("{path}.foreach.steps[{j}]");
                id_check(body, &bpath, &mut step_ids, out);
                kind_checks(body, &bpath, out);
            }
        }
        for (suffix, target) in step.targets() {
            reference_check(def, i, target, &format!("{path}.{suffix}"), true, out);
        }
        if let Some(h) = &step.on_error {
            reference_check(def, i, h, &format!("{path}.onError"), false, out);
        }
    }
    if let Some(m) = &def.output {
        let mut exprs = Vec::new();
        cel::mapping_expressions(m, "$.output", &mut exprs);
        for (p, src) in exprs {
            cel_check(&src, p, out);
        }
    }
    if let Some(h) = &def.on_error {
        if def.index_of(h).is_none() {
            out.push(violation(
                "$.onError",
                "step.unknown_reference",
                format!("no step {h:?}"),
            ));
        }
    }
    reachability(def, out);
}

fn id_check<'a>(step: &'a Step, path: &str, ids: &mut HashSet<&'a str>, out: &mut Vec<Violation>) {
    if step.id == END {
        out.push(violation(
            format!("{path}.id"),
            "step.reserved_id",
            "\"end\" names the end of the flow",
        ));
    } else if !ids.insert(step.id.as_str()) {
        out.push(violation(
            format!("{path}.id"),
            "step.duplicate_id",
            "step ids must be unique",
        ));
    }
}

fn cel_check(source: &str, path: String, out: &mut Vec<Violation>) {
    if let Err(e) = cel::check(source) {
        out.push(violation(path, "cel.compile", e));
    }
}

fn mapping_check(m: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    let mut exprs = Vec::new();
    cel::mapping_expressions(m, path, &mut exprs);
    for (p, src) in exprs {
        cel_check(&src, p, out);
    }
}

fn kind_checks(step: &Step, path: &str, out: &mut Vec<Violation>) {
    match step.kind() {
        Some(Kind::Call(c)) => {
            let mpath = format!("{path}.call.method");
            match resolve_method(&c.method) {
                None => out.push(violation(
                    mpath,
                    "port.unknown_method",
                    format!("no method {:?} in the contracts", c.method),
                )),
                Some(m)
                    if !m
                        .parent_service()
                        .full_name()
                        .starts_with(PORT_PACKAGE_PREFIX) =>
                {
                    out.push(violation(
                        mpath,
                        "port.not_a_port",
                        "only maxai.ports.* methods can be called",
                    ))
                }
                Some(m) => {
                    let input = m.input();
                    for key in c.input.keys() {
                        let field = input
                            .get_field_by_json_name(key)
                            .or_else(|| input.get_field_by_name(key));
                        let kpath = format!("{path}.call.input.{key}");
                        match field {
                            None => out.push(violation(
                                kpath,
                                "port.unknown_field",
                                format!("{} has no field {key:?}", input.full_name()),
                            )),
                            Some(f) if f.name() == "context" => out.push(violation(
                                kpath,
                                "port.reserved_field",
                                "the engine sets context (connection, idempotency key)",
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
            mapping_check(&c.input, &format!("{path}.call.input"), out);
        }
        Some(Kind::If(i)) => cel_check(&i.condition, format!("{path}.if.condition"), out),
        Some(Kind::Switch(s)) => {
            for (j, c) in s.cases.iter().enumerate() {
                cel_check(&c.when, format!("{path}.switch.cases[{j}].when"), out);
            }
        }
        Some(Kind::Set(s)) => mapping_check(&s.vars, &format!("{path}.set.vars"), out),
        Some(Kind::Fail(_)) | Some(Kind::Delay(_)) | None => {}
        Some(Kind::Foreach(f)) => cel_check(&f.items, format!("{path}.foreach.items"), out),
        Some(Kind::WaitUntil(w)) => cel_check(&w.time, format!("{path}.waitUntil.time"), out),
        Some(Kind::Delegate(d)) => {
            mapping_check(&d.payload, &format!("{path}.delegate.payload"), out)
        }
    }
}

/// Successors must exist and lie after the step, which rules out cycles by construction.
fn reference_check(
    def: &Definition,
    from: usize,
    target: &str,
    path: &str,
    allow_end: bool,
    out: &mut Vec<Violation>,
) {
    if allow_end && target == END {
        return;
    }
    match def.index_of(target) {
        None => out.push(violation(path, "step.unknown_reference", format!("no top-level step {target:?}"))),
        Some(to) if to <= from => out.push(violation(
            path,
            "step.cycle",
            format!("{target:?} is not after this step: references must point forward, so a flow cannot loop"),
        )),
        Some(_) => {}
    }
}

fn reachability(def: &Definition, out: &mut Vec<Violation>) {
    let n = def.steps.len();
    let mut seen = vec![false; n];
    let mut stack = vec![0usize];
    if let Some(h) = def.on_error.as_deref().and_then(|h| def.index_of(h)) {
        stack.push(h);
    }
    while let Some(i) = stack.pop() {
        if i >= n || seen[i] {
            continue;
        }
        seen[i] = true;
        let step = &def.steps[i];
        if step.falls_through() {
            stack.push(i + 1);
        }
        for (_, t) in step.targets() {
            if let Some(j) = def.index_of(t) {
                stack.push(j);
            }
        }
        if let Some(j) = step.on_error.as_deref().and_then(|h| def.index_of(h)) {
            stack.push(j);
        }
    }
    for (i, s) in seen.iter().enumerate() {
        if !s {
            out.push(violation(
                format!("$.steps[{i}]"),
                "step.unreachable",
                format!("step {:?} can never run", def.steps[i].id),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_compiles_and_pointers_become_paths() {
        let _ = validator();
        assert_eq!(pointer_to_path("/steps/2/input/to"), "$.steps[2].input.to");
        assert_eq!(pointer_to_path(""), "$");
    }

    #[test]
    fn a_good_definition_is_valid() {
        let def = json!({
            "triggers": [{"id": "t", "event": {"type": "voice.call.ended", "filter": "event.data.x > 1"}}],
            "steps": [
                {"id": "a", "set": {"vars": {"x": "1"}}},
                {"id": "b", "if": {"condition": "vars.x == 1", "then": "d"}},
                {"id": "c", "fail": {"message": "no"}},
                {"id": "d", "call": {"method": "maxai.ports.messaging.v1.MessagingService/SendSms", "connection": "tenants/t/clients/c/connections/x", "input": {"toNumber": "'+1555'"}}}
            ]
        });
        assert_eq!(validate(&def), vec![]);
    }

    #[test]
    fn the_connection_walk_reaches_delegates_and_calls_in_foreach_bodies() {
        // The schema refuses a delegate inside a foreach body today; the walk must still see
        // one (defence in depth if the schema grows), so parse without the schema.
        let def = Definition::parse(&json!({
            "steps": [
                {"id": "a", "call": {"method": "m.S/M", "connection": "tenants/t/clients/c/connections/own"}},
                {"id": "b", "foreach": {"items": "[1]", "steps": [
                    {"id": "b1", "call": {"method": "m.S/M", "connection": "tenants/evil/clients/c/connections/x"}},
                    {"id": "b2", "delegate": {"connection": "tenants/evil/clients/c/connections/n8n", "webhookPath": "p"}}
                ]}},
                {"id": "c", "delegate": {"connection": "tenants/evil/clients/c/connections/top", "webhookPath": "p"}}
            ]
        }))
        .unwrap();
        let found: Vec<(String, &str)> = connections(&def);
        assert_eq!(
            found,
            vec![
                (
                    "$.steps[0].call.connection".to_owned(),
                    "tenants/t/clients/c/connections/own"
                ),
                (
                    "$.steps[1].foreach.steps[0].call.connection".to_owned(),
                    "tenants/evil/clients/c/connections/x"
                ),
                (
                    "$.steps[1].foreach.steps[1].delegate.connection".to_owned(),
                    "tenants/evil/clients/c/connections/n8n"
                ),
                (
                    "$.steps[2].delegate.connection".to_owned(),
                    "tenants/evil/clients/c/connections/top"
                ),
            ]
        );
    }
}
