//! The gRPC surface of `OrchestratorService`: validate → convert → store → map errors. Every
//! call is scoped to the caller's tenant: a resource of another tenant answers NOT_FOUND, so
//! its existence does not leak. Platform operators (principals of tenant `platform`, whose
//! access the guard has already authorized) may act on any tenant.
//!
//! Saving a flow (CreateFlow, UpdateFlow) refuses a document the flow JSON Schema rejects —
//! nothing is stored — while the contract lets a draft be otherwise invalid (unknown port
//! method, CEL that does not compile, dangling reference); ValidateFlow lists those and
//! activation and test runs refuse them.
use std::sync::Arc;

use maxai_kit::{
    auth::Principal,
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{expected_revision, mask_paths, micros, request_id},
    storage::now_micros,
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::orchestrator::v1::{
    self as pb, orchestrator_service_server::OrchestratorService,
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::{
    config::OrchestratorConfig,
    convert::*,
    domain::{
        check_flow_id,
        flow::{Definition, MissedPolicy},
        parse_execution_name, parse_parent, parse_version_name,
        validate::{self, Violation, SCHEMA_URL},
        ExecState, FlowName, TriggerInfo, TriggerKind,
    },
    engine::Engine,
    schedule::next_slot,
    store::{
        ExecutionFilter, ExecutionRecord, Limits, NewExecution, OrchestratorStore, TriggerFilter,
        TriggerRecord, VersionRecord,
    },
};

/// Principals of this tenant operate the platform.
pub const PLATFORM_TENANT: &str = "platform";

pub struct OrchestratorApi {
    store: Arc<dyn OrchestratorStore>,
    engine: Arc<Engine>,
    config: OrchestratorConfig,
}

pub(crate) fn caller<T>(req: &Request<T>) -> Result<Principal> {
    Principal::of(req).cloned()
}

/// NOT_FOUND for another tenant's resource.
pub(crate) fn scope(p: &Principal, tenant: &str) -> Result<()> {
    if p.tenant == tenant || p.tenant == PLATFORM_TENANT {
        Ok(())
    } else {
        Err(Error::not_found("resource"))
    }
}

fn violations_error(kind: ErrorKind, message: &str, prefix: &str, vs: &[Violation]) -> Error {
    let mut v = Violations::new();
    for x in vs {
        v.add(
            format!("{prefix}{}", x.json_path.trim_start_matches('$')),
            format!("{} ({})", x.message, x.rule),
        );
    }
    let mut e = Error::new(kind, message);
    e.violations = v.into_fields();
    e
}

fn violation_to_pb(v: &Violation) -> pb::Violation {
    pb::Violation {
        json_path: v.json_path.clone(),
        message: v.message.clone(),
        rule: v.rule.clone(),
    }
}

fn schema_only(def: &Value) -> Vec<Violation> {
    validate::validate(def)
        .into_iter()
        .filter(|v| v.rule.starts_with("schema."))
        .collect()
}

/// A page key of several columns (JSON, so no separator can collide with a value).
fn key_token(parts: &[String]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

fn key_of(scope: &str, token: &str) -> Result<Option<Vec<String>>> {
    match decode_token(scope, token)? {
        None => Ok(None),
        Some(k) => serde_json::from_str(&k)
            .map(Some)
            .map_err(|_| Error::invalid("page_token", "is not a token this list issued")),
    }
}

fn pair(k: Option<Vec<String>>) -> Option<(String, String)> {
    k.and_then(|v| match v.as_slice() {
        [a, b] => Some((a.clone(), b.clone())),
        _ => None,
    })
}

/// The triggers an active version declares, with each schedule's next slot from `now`.
pub fn triggers_of(
    tenant: &str,
    flow_id: &str,
    version: i64,
    def: &Definition,
    now: i64,
) -> Vec<TriggerRecord> {
    def.triggers
        .iter()
        .map(|t| {
            let base = TriggerRecord {
                tenant: tenant.to_owned(),
                flow_id: flow_id.to_owned(),
                trigger_id: t.id.clone(),
                version,
                kind: TriggerKind::Manual,
                event_type: String::new(),
                filter: String::new(),
                schedule: String::new(),
                time_zone: String::new(),
                missed: MissedPolicy::Skip.as_str().to_owned(),
                next_fire_us: None,
            };
            if let Some(e) = &t.event {
                TriggerRecord {
                    kind: TriggerKind::Event,
                    event_type: e.event_type.clone(),
                    filter: e.filter.clone().unwrap_or_default(),
                    ..base
                }
            } else if let Some(s) = &t.schedule {
                let tz = s.time_zone.clone().unwrap_or_default();
                TriggerRecord {
                    kind: TriggerKind::Schedule,
                    next_fire_us: next_slot(&s.cron, &tz, now),
                    schedule: s.cron.clone(),
                    time_zone: tz,
                    missed: s.missed.unwrap_or_default().as_str().to_owned(),
                    ..base
                }
            } else {
                base
            }
        })
        .collect()
}

impl OrchestratorApi {
    pub fn new(
        store: Arc<dyn OrchestratorStore>,
        engine: Arc<Engine>,
        config: OrchestratorConfig,
    ) -> Self {
        OrchestratorApi {
            store,
            engine,
            config,
        }
    }

    async fn flow_view(&self, tenant: &str, flow_id: &str) -> Result<pb::Flow> {
        let f = self
            .store
            .get_flow(tenant, flow_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("flow {flow_id}")))?;
        let v = self
            .store
            .get_version(tenant, flow_id, f.draft_version.unwrap_or(f.latest_version))
            .await?;
        Ok(flow_to_pb(&f, v.as_ref()))
    }

    async fn max_pending(&self, tenant: &str) -> Result<i64> {
        let stored = self
            .store
            .get_limits(tenant)
            .await?
            .map(|l| l.limits.max_pending)
            .unwrap_or(0);
        Ok(if stored > 0 {
            stored
        } else {
            self.config.default_max_pending
        })
    }

    async fn execution_view(&self, e: &ExecutionRecord) -> Result<pb::Execution> {
        let steps = self.store.step_runs(&e.id).await?;
        Ok(execution_to_pb(e, &steps))
    }

    async fn version_for_run(&self, name: &FlowName, requested: &str) -> Result<VersionRecord> {
        let v = if requested.is_empty() {
            let f = self
                .store
                .get_flow(&name.tenant, &name.flow)
                .await?
                .ok_or_else(|| Error::not_found(format!("flow {}", name.flow)))?;
            f.active_version.ok_or_else(|| {
                Error::new(
                    ErrorKind::PreconditionFailed,
                    "the flow has no active version",
                )
            })?
        } else {
            let (vn, v) = parse_version_name(requested, "flow_version")?;
            if vn != *name {
                return Err(Error::invalid(
                    "flow_version",
                    "must be a version of the flow named",
                ));
            }
            v
        };
        let version = self
            .store
            .get_version(&name.tenant, &name.flow, v)
            .await?
            .ok_or_else(|| Error::not_found(format!("version {v}")))?;
        let problems = validate::validate_for_tenant(&version.definition, &name.tenant);
        if !problems.is_empty() {
            return Err(violations_error(
                ErrorKind::PreconditionFailed,
                "the version is not valid",
                "definition",
                &problems,
            ));
        }
        Ok(version)
    }
}

type R<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorApi {
    async fn create_flow(&self, req: Request<pb::CreateFlowRequest>) -> R<pb::CreateFlowResponse> {
        let p = caller(&req)?;
        let pb::CreateFlowRequest {
            parent,
            flow,
            flow_id,
            request_id: rid,
        } = req.into_inner();
        let tenant = parse_parent(&parent, "parent")?;
        scope(&p, &tenant)?;
        let rid = request_id(&rid)?.map(str::to_owned);
        let flow = flow.ok_or_else(|| Error::invalid("flow", "is required"))?;
        let pb::Flow {
            name: _,
            display_name,
            description,
            definition,
            schema_url,
            draft_version: _,
            active_version: _,
            etag: _,
            create_time: _,
            update_time: _,
        } = flow;
        let mut v = Violations::new();
        v.check(
            !display_name.trim().is_empty() && display_name.len() <= 200,
            "flow.display_name",
            "must be 1-200 characters",
        );
        v.check(
            description.len() <= 2000,
            "flow.description",
            "must be at most 2000 characters",
        );
        v.check(
            schema_url.is_empty() || schema_url == SCHEMA_URL,
            "flow.schema_url",
            format!("must be empty or {SCHEMA_URL}"),
        );
        v.into_result()?;
        let definition = definition
            .map(|s| struct_to_json(&s))
            .unwrap_or_else(|| json!({"steps": []}));
        let problems = schema_only(&definition);
        if !problems.is_empty() {
            return Err(violations_error(
                ErrorKind::InvalidArgument,
                "the definition does not follow the flow schema",
                "flow.definition",
                &problems,
            )
            .into());
        }
        let flow_id = if flow_id.is_empty() {
            format!("f{}", &uuid::Uuid::now_v7().simple().to_string()[..20])
        } else {
            check_flow_id(&flow_id)?;
            flow_id
        };
        let now = now_micros();
        let record = crate::store::FlowRecord {
            tenant: tenant.clone(),
            flow_id: flow_id.clone(),
            display_name,
            description,
            revision: 1,
            draft_version: Some(1),
            active_version: None,
            latest_version: 1,
            create_us: now,
            update_us: now,
        };
        let created = self
            .store
            .create_flow(&record, &definition, SCHEMA_URL, rid.as_deref())
            .await?;
        let flow = self.flow_view(&created.tenant, &created.flow_id).await?;
        Ok(Response::new(pb::CreateFlowResponse { flow: Some(flow) }))
    }

    async fn get_flow(&self, req: Request<pb::GetFlowRequest>) -> R<pb::GetFlowResponse> {
        let p = caller(&req)?;
        let name = FlowName::parse(&req.get_ref().name, "name")?;
        scope(&p, &name.tenant)?;
        let flow = self.flow_view(&name.tenant, &name.flow).await?;
        Ok(Response::new(pb::GetFlowResponse { flow: Some(flow) }))
    }

    async fn list_flows(&self, req: Request<pb::ListFlowsRequest>) -> R<pb::ListFlowsResponse> {
        let p = caller(&req)?;
        let pb::ListFlowsRequest {
            parent,
            page_size: ps,
            page_token,
            active_only,
        } = req.into_inner();
        let tenant = parse_parent(&parent, "parent")?;
        scope(&p, &tenant)?;
        let limit = page_size(ps)?;
        let token_scope = format!("flows:{tenant}:{active_only}");
        let after = pair(key_of(&token_scope, &page_token)?);
        let mut rows = self
            .store
            .list_flows(&tenant, after, limit + 1, active_only)
            .await?;
        let next = next_page(&mut rows, limit, &token_scope, |f| {
            key_token(&[f.display_name.clone(), f.flow_id.clone()])
        });
        let mut flows = Vec::with_capacity(rows.len());
        for f in &rows {
            let v = self
                .store
                .get_version(
                    &f.tenant,
                    &f.flow_id,
                    f.draft_version.unwrap_or(f.latest_version),
                )
                .await?;
            flows.push(flow_to_pb(f, v.as_ref()));
        }
        Ok(Response::new(pb::ListFlowsResponse {
            flows,
            next_page_token: next,
        }))
    }

    async fn update_flow(&self, req: Request<pb::UpdateFlowRequest>) -> R<pb::UpdateFlowResponse> {
        let p = caller(&req)?;
        let pb::UpdateFlowRequest { flow, update_mask } = req.into_inner();
        let flow = flow.ok_or_else(|| Error::invalid("flow", "is required"))?;
        let pb::Flow {
            name,
            display_name,
            description,
            definition,
            schema_url,
            draft_version: _,
            active_version: _,
            etag,
            create_time: _,
            update_time: _,
        } = flow;
        let name = FlowName::parse(&name, "flow.name")?;
        scope(&p, &name.tenant)?;
        let paths = mask_paths(
            update_mask.as_ref(),
            &["display_name", "description", "definition", "schema_url"],
        )?;
        let expected = expected_revision(&etag, "flow.etag")?;
        let current = self
            .store
            .get_flow(&name.tenant, &name.flow)
            .await?
            .ok_or_else(|| Error::not_found(format!("flow {}", name.flow)))?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut v = Violations::new();
        let new_name = if has("display_name") {
            display_name
        } else {
            current.display_name.clone()
        };
        let new_desc = if has("description") {
            description
        } else {
            current.description.clone()
        };
        v.check(
            !new_name.trim().is_empty() && new_name.len() <= 200,
            "flow.display_name",
            "must be 1-200 characters",
        );
        v.check(
            new_desc.len() <= 2000,
            "flow.description",
            "must be at most 2000 characters",
        );
        if has("schema_url") {
            v.check(
                schema_url.is_empty() || schema_url == SCHEMA_URL,
                "flow.schema_url",
                format!("must be empty or {SCHEMA_URL}"),
            );
        }
        v.into_result()?;
        let definition = if has("definition") {
            let def = definition.map(|s| struct_to_json(&s)).ok_or_else(|| {
                Error::invalid("flow.definition", "is required when in the update mask")
            })?;
            let problems = schema_only(&def);
            if !problems.is_empty() {
                return Err(violations_error(
                    ErrorKind::InvalidArgument,
                    "the definition does not follow the flow schema",
                    "flow.definition",
                    &problems,
                )
                .into());
            }
            Some((def, SCHEMA_URL.to_owned()))
        } else {
            None
        };
        let updated = self
            .store
            .update_flow(
                &name.tenant,
                &name.flow,
                expected,
                Some((new_name, new_desc)),
                definition,
                now_micros(),
            )
            .await?;
        let flow = self.flow_view(&updated.tenant, &updated.flow_id).await?;
        Ok(Response::new(pb::UpdateFlowResponse { flow: Some(flow) }))
    }

    async fn validate_flow(
        &self,
        req: Request<pb::ValidateFlowRequest>,
    ) -> R<pb::ValidateFlowResponse> {
        let p = caller(&req)?;
        let pb::ValidateFlowRequest {
            name,
            definition,
            schema_url,
        } = req.into_inner();
        let name = FlowName::parse(&name, "name")?;
        scope(&p, &name.tenant)?;
        if !schema_url.is_empty() && schema_url != SCHEMA_URL {
            return Err(
                Error::invalid("schema_url", format!("must be empty or {SCHEMA_URL}")).into(),
            );
        }
        let def = match definition {
            Some(s) => struct_to_json(&s),
            None => {
                let f = self
                    .store
                    .get_flow(&name.tenant, &name.flow)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("flow {}", name.flow)))?;
                self.store
                    .get_version(
                        &name.tenant,
                        &name.flow,
                        f.draft_version.unwrap_or(f.latest_version),
                    )
                    .await?
                    .map(|v| v.definition)
                    .unwrap_or(Value::Null)
            }
        };
        let problems = validate::validate_for_tenant(&def, &name.tenant);
        Ok(Response::new(pb::ValidateFlowResponse {
            valid: problems.is_empty(),
            violations: problems.iter().map(violation_to_pb).collect(),
        }))
    }

    async fn activate_flow_version(
        &self,
        req: Request<pb::ActivateFlowVersionRequest>,
    ) -> R<pb::ActivateFlowVersionResponse> {
        let p = caller(&req)?;
        let pb::ActivateFlowVersionRequest { name, etag } = req.into_inner();
        let (flow, v) = parse_version_name(&name, "name")?;
        scope(&p, &flow.tenant)?;
        let expected = expected_revision(&etag, "etag")?;
        let version = self
            .store
            .get_version(&flow.tenant, &flow.flow, v)
            .await?
            .ok_or_else(|| Error::not_found(format!("version {v}")))?;
        let problems = validate::validate_for_tenant(&version.definition, &flow.tenant);
        if !problems.is_empty() {
            return Err(violations_error(
                ErrorKind::PreconditionFailed,
                "the version is not valid",
                "definition",
                &problems,
            )
            .into());
        }
        let def = Definition::parse(&version.definition)
            .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
        let now = now_micros();
        let triggers = triggers_of(&flow.tenant, &flow.flow, v, &def, now);
        let activated = self
            .store
            .activate_version(
                &flow.tenant,
                &flow.flow,
                v,
                expected,
                &p.subject,
                &triggers,
                now,
            )
            .await?;
        Ok(Response::new(pb::ActivateFlowVersionResponse {
            flow_version: Some(version_to_pb(&activated, true)),
        }))
    }

    async fn get_flow_version(
        &self,
        req: Request<pb::GetFlowVersionRequest>,
    ) -> R<pb::GetFlowVersionResponse> {
        let p = caller(&req)?;
        let (flow, v) = parse_version_name(&req.get_ref().name, "name")?;
        scope(&p, &flow.tenant)?;
        let version = self
            .store
            .get_version(&flow.tenant, &flow.flow, v)
            .await?
            .ok_or_else(|| Error::not_found(format!("version {v}")))?;
        Ok(Response::new(pb::GetFlowVersionResponse {
            flow_version: Some(version_to_pb(&version, true)),
        }))
    }

    async fn list_flow_versions(
        &self,
        req: Request<pb::ListFlowVersionsRequest>,
    ) -> R<pb::ListFlowVersionsResponse> {
        let p = caller(&req)?;
        let pb::ListFlowVersionsRequest {
            parent,
            page_size: ps,
            page_token,
            state,
        } = req.into_inner();
        let flow = FlowName::parse(&parent, "parent")?;
        scope(&p, &flow.tenant)?;
        if self
            .store
            .get_flow(&flow.tenant, &flow.flow)
            .await?
            .is_none()
        {
            return Err(Error::not_found(format!("flow {}", flow.flow)).into());
        }
        let limit = page_size(ps)?;
        let token_scope = format!("versions:{}:{state}", flow.render());
        let before = match decode_token(&token_scope, &page_token)? {
            Some(k) => Some(
                k.parse::<i64>()
                    .map_err(|_| Error::invalid("page_token", "is not a token this list issued"))?,
            ),
            None => None,
        };
        let mut rows = self
            .store
            .list_versions(
                &flow.tenant,
                &flow.flow,
                before,
                limit + 1,
                version_state_from_pb(state),
            )
            .await?;
        let next = next_page(&mut rows, limit, &token_scope, |v| v.version.to_string());
        Ok(Response::new(pb::ListFlowVersionsResponse {
            flow_versions: rows.iter().map(|v| version_to_pb(v, false)).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_flow(&self, req: Request<pb::DeleteFlowRequest>) -> R<pb::DeleteFlowResponse> {
        let p = caller(&req)?;
        let pb::DeleteFlowRequest { name, etag, force } = req.into_inner();
        let flow = FlowName::parse(&name, "name")?;
        scope(&p, &flow.tenant)?;
        let expected = expected_revision(&etag, "etag")?;
        self.store
            .delete_flow(&flow.tenant, &flow.flow, expected, force, now_micros())
            .await?;
        self.engine.forget_flow(&flow.tenant, &flow.flow);
        Ok(Response::new(pb::DeleteFlowResponse {}))
    }

    async fn list_triggers(
        &self,
        req: Request<pb::ListTriggersRequest>,
    ) -> R<pb::ListTriggersResponse> {
        let p = caller(&req)?;
        let pb::ListTriggersRequest {
            parent,
            page_size: ps,
            page_token,
            flow,
            kind,
            event_type,
        } = req.into_inner();
        let tenant = parse_parent(&parent, "parent")?;
        scope(&p, &tenant)?;
        let flow_id = if flow.is_empty() {
            None
        } else {
            let f = FlowName::parse(&flow, "flow")?;
            if f.tenant != tenant {
                return Err(Error::invalid("flow", "must be a flow of parent").into());
            }
            Some(f.flow)
        };
        let filter = TriggerFilter {
            flow_id,
            kind: trigger_kind_from_pb(kind),
            event_type: (!event_type.is_empty()).then_some(event_type),
        };
        let limit = page_size(ps)?;
        let token_scope = format!("triggers:{tenant}:{flow}:{kind}:{:?}", filter.event_type);
        let after = pair(key_of(&token_scope, &page_token)?);
        let mut rows = self
            .store
            .list_triggers(&tenant, &filter, after, limit + 1)
            .await?;
        let next = next_page(&mut rows, limit, &token_scope, |t| {
            key_token(&[t.flow_id.clone(), t.trigger_id.clone()])
        });
        Ok(Response::new(pb::ListTriggersResponse {
            triggers: rows.iter().map(trigger_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn run_flow(&self, req: Request<pb::RunFlowRequest>) -> R<pb::RunFlowResponse> {
        let p = caller(&req)?;
        let pb::RunFlowRequest {
            name,
            input,
            flow_version,
            client,
            request_id: rid,
        } = req.into_inner();
        let flow = FlowName::parse(&name, "name")?;
        scope(&p, &flow.tenant)?;
        let rid = request_id(&rid)?.map(str::to_owned);
        if !client.is_empty() && !client.starts_with(&format!("tenants/{}/clients/", flow.tenant)) {
            return Err(Error::invalid(
                "client",
                "must be tenants/{tenant}/clients/{client} of the flow's tenant",
            )
            .into());
        }
        let version = self.version_for_run(&flow, &flow_version).await?;
        let new = NewExecution {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant: flow.tenant.clone(),
            flow_id: flow.flow.clone(),
            version: version.version,
            trigger: TriggerInfo {
                kind: TriggerKind::Manual.as_str().to_owned(),
                principal: p.subject.clone(),
                ..TriggerInfo::default()
            },
            client,
            input: input
                .map(|s| struct_to_json(&s))
                .unwrap_or_else(|| json!({})),
            rerun_of: String::new(),
            ctx: json!({"vars": {}, "steps": {}}),
            cursor: None,
        };
        let max_pending = self.max_pending(&flow.tenant).await?;
        let (exec, created) = self
            .store
            .create_execution(&new, rid.as_deref(), max_pending, now_micros())
            .await?;
        if created {
            metrics::counter!(crate::metrics::EXECUTIONS_STARTED_TOTAL, "trigger" => "manual")
                .increment(1);
            self.engine.notify();
        }
        let view = self.execution_view(&exec).await?;
        Ok(Response::new(pb::RunFlowResponse {
            execution: Some(view),
        }))
    }

    async fn get_execution(
        &self,
        req: Request<pb::GetExecutionRequest>,
    ) -> R<pb::GetExecutionResponse> {
        let p = caller(&req)?;
        let (tenant, id) = parse_execution_name(&req.get_ref().name, "name")?;
        scope(&p, &tenant)?;
        let e = self
            .store
            .get_execution(&tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("execution {id}")))?;
        let view = self.execution_view(&e).await?;
        Ok(Response::new(pb::GetExecutionResponse {
            execution: Some(view),
        }))
    }

    async fn list_executions(
        &self,
        req: Request<pb::ListExecutionsRequest>,
    ) -> R<pb::ListExecutionsResponse> {
        let p = caller(&req)?;
        let pb::ListExecutionsRequest {
            parent,
            page_size: ps,
            page_token,
            flow,
            state,
            client,
            trigger_kind,
            event,
            start_time,
            end_time,
        } = req.into_inner();
        let tenant = parse_parent(&parent, "parent")?;
        scope(&p, &tenant)?;
        let flow_id = if flow.is_empty() {
            None
        } else {
            Some(FlowName::parse(&flow, "flow")?.flow)
        };
        let filter = ExecutionFilter {
            flow_id,
            state: exec_state_from_pb(state),
            client: (!client.is_empty()).then_some(client),
            trigger_kind: trigger_kind_from_pb(trigger_kind),
            event: (!event.is_empty()).then_some(event),
            from_us: start_time.as_ref().map(micros),
            to_us: end_time.as_ref().map(micros),
        };
        let limit = page_size(ps)?;
        let token_scope = format!("executions:{tenant}:{filter:?}");
        let after = match key_of(&token_scope, &page_token)? {
            Some(v) => match v.as_slice() {
                [us, id] => Some((
                    us.parse::<i64>().map_err(|_| {
                        Error::invalid("page_token", "is not a token this list issued")
                    })?,
                    id.clone(),
                )),
                _ => {
                    return Err(
                        Error::invalid("page_token", "is not a token this list issued").into(),
                    )
                }
            },
            None => None,
        };
        let mut rows = self
            .store
            .list_executions(&tenant, &filter, after, limit + 1)
            .await?;
        let next = next_page(&mut rows, limit, &token_scope, |e| {
            key_token(&[e.create_us.to_string(), e.id.clone()])
        });
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: rows.iter().map(|e| execution_to_pb(e, &[])).collect(),
            next_page_token: next,
        }))
    }

    async fn cancel_execution(
        &self,
        req: Request<pb::CancelExecutionRequest>,
    ) -> R<pb::CancelExecutionResponse> {
        let p = caller(&req)?;
        let pb::CancelExecutionRequest { name, reason } = req.into_inner();
        let (tenant, id) = parse_execution_name(&name, "name")?;
        scope(&p, &tenant)?;
        if reason.len() > 1000 {
            return Err(Error::invalid("reason", "must be at most 1000 bytes").into());
        }
        if self.store.get_execution(&tenant, &id).await?.is_none() {
            return Err(Error::not_found(format!("execution {id}")).into());
        }
        let e = self
            .store
            .cancel_execution(&tenant, &id, &reason, now_micros())
            .await?;
        let view = self.execution_view(&e).await?;
        Ok(Response::new(pb::CancelExecutionResponse {
            execution: Some(view),
        }))
    }

    async fn rerun_execution(
        &self,
        req: Request<pb::RerunExecutionRequest>,
    ) -> R<pb::RerunExecutionResponse> {
        let p = caller(&req)?;
        let pb::RerunExecutionRequest {
            name,
            mode,
            use_active_version,
            request_id: rid,
        } = req.into_inner();
        let (tenant, id) = parse_execution_name(&name, "name")?;
        scope(&p, &tenant)?;
        let rid = request_id(&rid)?.map(str::to_owned);
        let old = self
            .store
            .get_execution(&tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("execution {id}")))?;
        if !old.state.is_finished() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "only a finished execution can be rerun",
            )
            .into());
        }
        let from_failed = pb::RerunMode::try_from(mode).unwrap_or(pb::RerunMode::Unspecified)
            == pb::RerunMode::FromFailedStep;
        if from_failed && use_active_version {
            return Err(Error::invalid(
                "use_active_version",
                "only applies to RERUN_MODE_FROM_START",
            )
            .into());
        }
        if from_failed && !matches!(old.state, ExecState::Failed | ExecState::Cancelled) {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "RERUN_MODE_FROM_FAILED_STEP needs a FAILED or CANCELLED execution",
            )
            .into());
        }
        let version = if use_active_version {
            let f = self
                .store
                .get_flow(&tenant, &old.flow_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("flow {}", old.flow_id)))?;
            f.active_version.ok_or_else(|| {
                Error::new(
                    ErrorKind::PreconditionFailed,
                    "the flow has no active version",
                )
            })?
        } else {
            old.version
        };
        let (ctx, cursor) = if from_failed {
            let mut ctx = old.ctx.clone();
            if let Value::Object(m) = &mut ctx {
                m.remove("_wait");
                m.remove("error");
            }
            (ctx, old.cursor.clone())
        } else {
            let event = old.ctx.get("event").cloned().unwrap_or(Value::Null);
            (json!({"vars": {}, "steps": {}, "event": event}), None)
        };
        let trigger = TriggerInfo {
            principal: p.subject.clone(),
            ..old.trigger.clone()
        };
        let new = NewExecution {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant: tenant.clone(),
            flow_id: old.flow_id.clone(),
            version,
            trigger,
            client: old.client.clone(),
            input: old.input.clone(),
            rerun_of: name,
            ctx,
            cursor,
        };
        let max_pending = self.max_pending(&tenant).await?;
        let (exec, created) = self
            .store
            .create_execution(&new, rid.as_deref(), max_pending, now_micros())
            .await?;
        if created {
            self.engine.notify();
        }
        let view = self.execution_view(&exec).await?;
        Ok(Response::new(pb::RerunExecutionResponse {
            execution: Some(view),
        }))
    }

    async fn get_concurrency_limits(
        &self,
        req: Request<pb::GetConcurrencyLimitsRequest>,
    ) -> R<pb::GetConcurrencyLimitsResponse> {
        let p = caller(&req)?;
        let tenant = limits_tenant(&req.get_ref().name, "name")?;
        scope(&p, &tenant)?;
        let l = self.store.get_limits(&tenant).await?;
        Ok(Response::new(pb::GetConcurrencyLimitsResponse {
            concurrency_limits: Some(limits_to_pb(&tenant, l.as_ref())),
        }))
    }

    async fn update_concurrency_limits(
        &self,
        req: Request<pb::UpdateConcurrencyLimitsRequest>,
    ) -> R<pb::UpdateConcurrencyLimitsResponse> {
        let p = caller(&req)?;
        let pb::UpdateConcurrencyLimitsRequest {
            concurrency_limits,
            update_mask,
        } = req.into_inner();
        let l = concurrency_limits
            .ok_or_else(|| Error::invalid("concurrency_limits", "is required"))?;
        let pb::ConcurrencyLimits {
            name,
            max_running_executions,
            max_running_executions_per_flow,
            max_running_executions_per_client,
            max_pending_executions,
            etag,
            update_time: _,
        } = l;
        let tenant = limits_tenant(&name, "concurrency_limits.name")?;
        scope(&p, &tenant)?;
        let fields = [
            "max_running_executions",
            "max_running_executions_per_flow",
            "max_running_executions_per_client",
            "max_pending_executions",
        ];
        let paths = mask_paths(update_mask.as_ref(), &fields)?;
        let expected = expected_revision(&etag, "concurrency_limits.etag")?;
        let current = self
            .store
            .get_limits(&tenant)
            .await?
            .map(|r| r.limits)
            .unwrap_or_default();
        let ceiling = self.config.max_limit;
        let mut v = Violations::new();
        let mut pick = |field: &str, value: i32, old: i64| -> i64 {
            if !paths.iter().any(|p| p == field) {
                return old;
            }
            let max = if field == "max_pending_executions" {
                ceiling.max(self.config.default_max_pending)
            } else {
                ceiling
            };
            v.check(
                (0..=max).contains(&i64::from(value)),
                format!("concurrency_limits.{field}"),
                format!("must be 0..={max} (0 means the platform default)"),
            );
            i64::from(value)
        };
        let limits = Limits {
            max_running: pick(fields[0], max_running_executions, current.max_running),
            max_running_per_flow: pick(
                fields[1],
                max_running_executions_per_flow,
                current.max_running_per_flow,
            ),
            max_running_per_client: pick(
                fields[2],
                max_running_executions_per_client,
                current.max_running_per_client,
            ),
            max_pending: pick(fields[3], max_pending_executions, current.max_pending),
        };
        v.into_result()?;
        let saved = self
            .store
            .put_limits(&tenant, limits, expected, now_micros())
            .await?;
        Ok(Response::new(pb::UpdateConcurrencyLimitsResponse {
            concurrency_limits: Some(limits_to_pb(&tenant, Some(&saved))),
        }))
    }
}

fn limits_tenant(name: &str, field: &str) -> Result<String> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["tenants", t, "concurrencyLimits"] if !t.is_empty() => Ok((*t).to_owned()),
        _ => Err(Error::invalid(
            field,
            "must be tenants/{tenant}/concurrencyLimits",
        )),
    }
}
