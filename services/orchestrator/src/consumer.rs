//! `EventConsumerService`: canonical events from the webhook dispatcher start executions of the
//! active flows whose event triggers match (type, then CEL filter over `event`) in the event's
//! tenant. Idempotent by (source, id): the dedupe row and the executions are written in one
//! transaction, so a redelivery after a crash either finds both or neither.
use std::sync::Arc;

use maxai_kit::{storage::now_micros, Error, Result};
use maxai_proto::maxai::{
    common::v1::CanonicalEvent,
    webhook::v1::{
        event_consumer_service_server::EventConsumerService, ConsumeEventRequest,
        ConsumeEventResponse,
    },
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::{
    api::{caller, scope},
    config::OrchestratorConfig,
    convert::struct_to_json,
    domain::{cel, parse_parent, TriggerInfo, TriggerKind},
    engine::Engine,
    store::{NewExecution, OrchestratorStore, TriggerFilter},
};

pub struct Consumer {
    store: Arc<dyn OrchestratorStore>,
    engine: Arc<Engine>,
    config: OrchestratorConfig,
}

/// The event as flows see it (`event` in CEL): CloudEvents attributes in lowerCamelCase.
pub fn event_json(e: &CanonicalEvent) -> Value {
    let time = e.time.as_ref().and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32).map(|d| d.to_rfc3339())
    });
    json!({
        "id": e.id,
        "source": e.source,
        "type": e.r#type,
        "subject": e.subject,
        "time": time,
        "data": e.data.as_ref().map(struct_to_json).unwrap_or_else(|| json!({})),
        "specVersion": e.spec_version,
        "tenant": e.tenant,
        "client": e.client,
        "provider": e.provider,
        "providerEventId": e.provider_event_id,
        "orderingKey": e.ordering_key,
    })
}

impl Consumer {
    pub fn new(
        store: Arc<dyn OrchestratorStore>,
        engine: Arc<Engine>,
        config: OrchestratorConfig,
    ) -> Self {
        Consumer {
            store,
            engine,
            config,
        }
    }

    /// Consumes one event; `true` when it had been consumed before.
    pub async fn consume(&self, event: &CanonicalEvent) -> Result<bool> {
        let tenant = parse_parent(&event.tenant, "event.tenant")?;
        let mut v = maxai_kit::error::Violations::new();
        v.check(!event.id.is_empty(), "event.id", "is required");
        v.check(!event.source.is_empty(), "event.source", "is required");
        v.check(!event.r#type.is_empty(), "event.type", "is required");
        v.into_result()?;
        let ev = event_json(event);
        let filter = TriggerFilter {
            flow_id: None,
            kind: Some(TriggerKind::Event),
            event_type: Some(event.r#type.clone()),
        };
        let triggers = self
            .store
            .list_triggers(&tenant, &filter, None, 1000)
            .await?;
        let scope_value = json!({"event": ev});
        let mut executions = Vec::new();
        for t in triggers {
            if !t.filter.is_empty() {
                match cel::eval_bool(&t.filter, &scope_value) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        // Data the filter did not expect: this trigger does not match; the event
                        // is not refused (a retry would fail the same way).
                        tracing::info!(flow = %t.flow_id, trigger = %t.trigger_id, error = %e, "trigger filter failed on event");
                        continue;
                    }
                }
            }
            executions.push(NewExecution {
                id: uuid::Uuid::now_v7().simple().to_string(),
                tenant: tenant.clone(),
                flow_id: t.flow_id.clone(),
                version: t.version,
                trigger: TriggerInfo {
                    kind: TriggerKind::Event.as_str().to_owned(),
                    trigger_id: t.trigger_id.clone(),
                    event: format!("tenants/{tenant}/events/{}", event.id),
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    schedule_us: None,
                    principal: String::new(),
                },
                client: event.client.clone(),
                input: ev.get("data").cloned().unwrap_or_else(|| json!({})),
                rerun_of: String::new(),
                ctx: json!({"vars": {}, "steps": {}, "event": ev}),
                cursor: None,
            });
        }
        let max_pending = match self
            .store
            .get_limits(&tenant)
            .await?
            .map(|l| l.limits.max_pending)
        {
            Some(n) if n > 0 => n,
            _ => self.config.default_max_pending,
        };
        let outcome = self
            .store
            .consume_event(
                &event.source,
                &event.id,
                &tenant,
                &executions,
                max_pending,
                now_micros(),
            )
            .await?;
        metrics::counter!(crate::metrics::EVENTS_CONSUMED_TOTAL, "duplicate" => outcome.is_none().to_string()).increment(1);
        match outcome {
            None => Ok(true),
            Some(started) => {
                if !started.is_empty() {
                    metrics::counter!(crate::metrics::EXECUTIONS_STARTED_TOTAL, "trigger" => "event").increment(started.len() as u64);
                    self.engine.notify();
                }
                Ok(false)
            }
        }
    }
}

#[tonic::async_trait]
impl EventConsumerService for Consumer {
    async fn consume_event(
        &self,
        req: Request<ConsumeEventRequest>,
    ) -> std::result::Result<Response<ConsumeEventResponse>, Status> {
        let p = caller(&req)?;
        let ConsumeEventRequest { event, attempt: _ } = req.into_inner();
        let event = event.ok_or_else(|| Error::invalid("event", "is required"))?;
        let tenant = parse_parent(&event.tenant, "event.tenant")?;
        scope(&p, &tenant)?;
        let duplicate = self.consume(&event).await?;
        Ok(Response::new(ConsumeEventResponse { duplicate }))
    }
}
