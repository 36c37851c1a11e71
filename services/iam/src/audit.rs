//! Recording sensitive actions in the tenant's audit chain, and `AuditService` to read, verify
//! and purge it.
use std::sync::Arc;

use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{micros, request_id, timestamp},
    storage::now_micros,
    telemetry::CORRELATION_HEADER,
    Error, Result,
};
use maxai_proto::maxai::iam::v1::{self as pb, audit_service_server::AuditService};
use tonic::{Request, Response, Status};

use crate::{
    api::names,
    domain::{first_break, AuditEntry, AuditRecord, Outcome, GENESIS_HASH},
    store::{AuditFilter, AuditStore, TenancyStore},
};
pub(crate) use maxai_kit::structs::{json_to_struct, struct_to_json};

/// Appends audit records; a failure to record is logged loudly and never undoes the action.
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
}

/// What happened, for [`AuditLog::refused`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub action: &'a str,
    pub permission: &'a str,
    pub resource: &'a str,
    pub outcome: Outcome,
    pub reason: &'a str,
}

/// Who made a request, as the audit trail records it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The verified principal, or "anonymous" on public methods.
    pub actor: String,
    pub request_id: String,
    pub ip_address: String,
    pub user_agent: String,
}

impl Caller {
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        let md = request.metadata();
        let text = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Caller {
            actor: request
                .extensions()
                .get::<maxai_kit::auth::Principal>()
                .map_or_else(|| "anonymous".to_owned(), |p| p.subject.clone()),
            request_id: text(CORRELATION_HEADER),
            ip_address: text("x-forwarded-for"),
            user_agent: text("user-agent"),
        }
    }
}

impl AuditLog {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        AuditLog { store }
    }

    /// Records a successful change made by `caller`; `action` is the RPC's name.
    pub async fn changed(
        &self,
        caller: &Caller,
        tenant_id: &str,
        action: &str,
        permission: &str,
        resource: &str,
        details: serde_json::Value,
    ) {
        let event = Event {
            action,
            permission,
            resource,
            outcome: Outcome::Succeeded,
            reason: "",
        };
        self.record(caller, tenant_id, &event, details).await
    }

    /// Records a refused or failed attempt (a failed sign-in, a reused refresh token).
    pub async fn refused(
        &self,
        caller: &Caller,
        tenant_id: &str,
        event: &Event<'_>,
        details: serde_json::Value,
    ) {
        self.record(caller, tenant_id, event, details).await
    }

    async fn record(
        &self,
        caller: &Caller,
        tenant_id: &str,
        event: &Event<'_>,
        details: serde_json::Value,
    ) {
        let Event {
            action,
            permission,
            resource,
            outcome,
            reason,
        } = *event;
        let client = resource.split('/').take(4).collect::<Vec<_>>();
        let record = AuditRecord {
            actor: caller.actor.clone(),
            action: action.into(),
            permission: permission.into(),
            resource: resource.into(),
            client: if client.len() == 4 && client[2] == "clients" {
                client.join("/")
            } else {
                String::new()
            },
            outcome: outcome.as_str().into(),
            status_code: match outcome {
                Outcome::Succeeded => "OK",
                Outcome::Denied => "UNAUTHENTICATED",
                Outcome::Failed => "FAILED_PRECONDITION",
            }
            .into(),
            reason: reason.into(),
            request_id: caller.request_id.clone(),
            ip_address: caller.ip_address.clone(),
            user_agent: caller.user_agent.clone(),
            details: details.to_string(),
        };
        if let Err(e) = self.store.append(tenant_id, now_micros(), &record).await {
            tracing::error!(error = %e, tenant = tenant_id, action, "audit entry could not be recorded");
        }
    }
}

fn outcome_to_pb(s: &str) -> pb::AuditOutcome {
    match Outcome::parse(s) {
        Some(Outcome::Succeeded) => pb::AuditOutcome::Succeeded,
        Some(Outcome::Denied) => pb::AuditOutcome::Denied,
        Some(Outcome::Failed) => pb::AuditOutcome::Failed,
        None => pb::AuditOutcome::Unspecified,
    }
}

fn entry_to_pb(e: &AuditEntry) -> pb::AuditEntry {
    let AuditEntry {
        tenant_id,
        seq,
        occur_at_us,
        record,
        previous_hash,
        hash,
    } = e;
    let AuditRecord {
        actor,
        action,
        permission,
        resource,
        client,
        outcome,
        status_code,
        reason,
        request_id,
        ip_address,
        user_agent,
        details,
    } = record;
    pb::AuditEntry {
        name: format!("tenants/{tenant_id}/auditEntries/{seq}"),
        sequence: *seq,
        occur_time: Some(timestamp(*occur_at_us)),
        actor: actor.clone(),
        action: action.clone(),
        permission: permission.clone(),
        resource: resource.clone(),
        client: client.clone(),
        outcome: outcome_to_pb(outcome) as i32,
        status_code: status_code.clone(),
        reason: reason.clone(),
        request_id: request_id.clone(),
        ip_address: ip_address.clone(),
        user_agent: user_agent.clone(),
        details: serde_json::from_str::<serde_json::Value>(details)
            .ok()
            .and_then(|v| json_to_struct(&v)),
        previous_hash: previous_hash.clone(),
        hash: hash.clone(),
    }
}

/// Entries verified per read while walking a chain.
const VERIFY_BATCH: i64 = 1000;

pub struct AuditApi {
    store: Arc<dyn AuditStore>,
    tenancy: Arc<dyn TenancyStore>,
}

impl AuditApi {
    pub fn new(store: Arc<dyn AuditStore>, tenancy: Arc<dyn TenancyStore>) -> Self {
        AuditApi { store, tenancy }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let pb::ListAuditEntriesRequest {
            parent,
            page_size: size,
            page_token,
            actor,
            start_time,
            end_time,
            resource,
            outcome,
            action,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        let outcome = match pb::AuditOutcome::try_from(outcome)
            .map_err(|_| Error::invalid("outcome", "is not a known outcome"))?
        {
            pb::AuditOutcome::Unspecified => None,
            pb::AuditOutcome::Succeeded => Some(Outcome::Succeeded.as_str().to_owned()),
            pb::AuditOutcome::Denied => Some(Outcome::Denied.as_str().to_owned()),
            pb::AuditOutcome::Failed => Some(Outcome::Failed.as_str().to_owned()),
        };
        let filter = AuditFilter {
            actor: (!actor.is_empty()).then_some(actor),
            start_us: start_time.as_ref().map(micros),
            end_us: end_time.as_ref().map(micros),
            resource: (!resource.is_empty()).then_some(resource),
            outcome,
            action: (!action.is_empty()).then_some(action),
        };
        if let (Some(s), Some(e)) = (filter.start_us, filter.end_us) {
            if s > e {
                return Err(Error::invalid("end_time", "must not be before start_time").into());
            }
        }
        let scope = format!("audit:{tenant}:{filter:?}");
        let before = decode_token(&scope, &page_token)?
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| Error::invalid("page_token", "is not a token this list issued"))
            })
            .transpose()?;
        let mut rows = self
            .store
            .list_entries(&tenant, &filter, before, limit + 1)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |e| e.seq.to_string());
        Ok(Response::new(pb::ListAuditEntriesResponse {
            audit_entries: rows.iter().map(entry_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_audit_entry(
        &self,
        request: Request<pb::GetAuditEntryRequest>,
    ) -> Result<Response<pb::GetAuditEntryResponse>, Status> {
        let pb::GetAuditEntryRequest { name } = request.into_inner();
        let parts: Vec<&str> = name.split('/').collect();
        let (tenant, seq) = match parts.as_slice() {
            ["tenants", t, "auditEntries", s] => (
                names::tenant(&format!("tenants/{t}"), "name")?,
                s.parse::<i64>()
                    .map_err(|_| Error::invalid("name", "the entry id is its sequence number"))?,
            ),
            _ => {
                return Err(
                    Error::invalid("name", "must be tenants/{tenant}/auditEntries/{entry}").into(),
                )
            }
        };
        let entry = self
            .store
            .get_entry(&tenant, seq)
            .await?
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Response::new(pb::GetAuditEntryResponse {
            audit_entry: Some(entry_to_pb(&entry)),
        }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let pb::VerifyAuditChainRequest {
            parent,
            start_sequence,
            end_sequence,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let mut v = Violations::new();
        v.check(
            start_sequence >= 0,
            "start_sequence",
            "must not be negative",
        );
        v.check(
            end_sequence >= 0 && (end_sequence == 0 || end_sequence >= start_sequence),
            "end_sequence",
            "must be 0 or at least start_sequence",
        );
        v.into_result()?;
        let anchor = self.store.anchor(&tenant).await?;
        let first_kept = anchor.as_ref().map_or(1, |(s, _)| s + 1);
        let from = start_sequence.max(first_kept);
        let to = if end_sequence == 0 {
            i64::MAX
        } else {
            end_sequence
        };
        // The hash the first verified entry must link to.
        let mut prev = if from == first_kept {
            anchor
                .as_ref()
                .map(|(_, h)| h.clone())
                .unwrap_or_else(|| GENESIS_HASH.to_owned())
        } else {
            match self.store.get_entry(&tenant, from - 1).await? {
                Some(e) => e.hash,
                None => {
                    return Err(Error::invalid(
                        "start_sequence",
                        "is before the oldest kept entry or after the newest",
                    )
                    .into())
                }
            }
        };
        let mut resp = pb::VerifyAuditChainResponse {
            valid: true,
            verified_count: 0,
            start_sequence: from,
            end_sequence: from - 1,
            head_hash: String::new(),
            first_invalid_sequence: 0,
            reason: String::new(),
            anchor_hash: anchor.map(|(_, h)| h).unwrap_or_default(),
        };
        let mut next = from;
        loop {
            let batch = self
                .store
                .chain_range(&tenant, next, to, VERIFY_BATCH)
                .await?;
            let Some(last) = batch.last().cloned() else {
                break;
            };
            // The first entry must carry the next sequence: a gap is a removal.
            if batch[0].seq != next {
                resp.valid = false;
                resp.first_invalid_sequence = batch[0].seq;
                resp.reason = format!("entry {next} is missing");
                break;
            }
            if let Some((seq, reason)) = first_break(&prev, &batch) {
                resp.valid = false;
                resp.first_invalid_sequence = seq;
                resp.reason = reason;
                resp.verified_count += seq - next;
                break;
            }
            resp.verified_count += batch.len() as i64;
            resp.end_sequence = last.seq;
            resp.head_hash = last.hash.clone();
            prev = last.hash;
            next = last.seq + 1;
            if (batch.len() as i64) < VERIFY_BATCH {
                break;
            }
        }
        Ok(Response::new(resp))
    }

    async fn purge_audit_entries(
        &self,
        request: Request<pb::PurgeAuditEntriesRequest>,
    ) -> Result<Response<pb::PurgeAuditEntriesResponse>, Status> {
        let pb::PurgeAuditEntriesRequest {
            parent,
            purge_before,
            validate_only,
            request_id: rid,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        request_id(&rid)?;
        let t = self
            .tenancy
            .get_tenant(&tenant)
            .await?
            .ok_or_else(|| Error::not_found(format!("tenant {tenant}")))?;
        // Never younger than the tenant's retention, whatever purge_before says.
        let retention_cutoff = now_micros() - t.audit_retention_secs.saturating_mul(1_000_000);
        let cutoff = purge_before
            .as_ref()
            .map_or(retention_cutoff, |ts| micros(ts).min(retention_cutoff));
        let (purged, last) = self.store.purge(&tenant, cutoff, validate_only).await?;
        if !validate_only && purged > 0 {
            tracing::info!(tenant = %tenant, purged, "audit entries purged");
        }
        let (last_purged_sequence, anchor_hash) = last.unwrap_or_default();
        Ok(Response::new(pb::PurgeAuditEntriesResponse {
            purged_count: purged,
            last_purged_sequence,
            anchor_hash,
        }))
    }
}
