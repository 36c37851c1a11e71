//! proto ⇄ domain, destructured without `..` so a new field breaks the build here.
use std::collections::BTreeMap;

use maxai_kit::{
    error::Violations,
    resource::{etag, timestamp},
};
use maxai_proto::maxai::iam::v1 as pb;

use crate::domain::{
    email_ok, time_zone_ok, validate_labels, Client, ClientState, RateLimitRule, RateLimits,
    Tenant, TenantState, DEFAULT_AUDIT_RETENTION_SECS, MIN_AUDIT_RETENTION_SECS,
};

pub fn tenant_state_to_pb(s: TenantState) -> pb::TenantState {
    match s {
        TenantState::Active => pb::TenantState::Active,
        TenantState::Suspended => pb::TenantState::Suspended,
        TenantState::Deleted => pb::TenantState::Deleted,
    }
}

pub fn tenant_state_from_pb(raw: i32) -> Option<TenantState> {
    match pb::TenantState::try_from(raw).ok()? {
        pb::TenantState::Unspecified => None,
        pb::TenantState::Active => Some(TenantState::Active),
        pb::TenantState::Suspended => Some(TenantState::Suspended),
        pb::TenantState::Deleted => Some(TenantState::Deleted),
    }
}

pub fn client_state_from_pb(raw: i32) -> Option<ClientState> {
    match pb::ClientState::try_from(raw).ok()? {
        pb::ClientState::Unspecified => None,
        pb::ClientState::Active => Some(ClientState::Active),
        pb::ClientState::Paused => Some(ClientState::Paused),
    }
}

fn client_state_to_pb(s: ClientState) -> pb::ClientState {
    match s {
        ClientState::Active => pb::ClientState::Active,
        ClientState::Paused => pb::ClientState::Paused,
    }
}

fn rate_limits_to_pb(r: &RateLimits) -> pb::RateLimitSettings {
    let RateLimits {
        requests_per_minute,
        burst,
        per_client_requests_per_minute,
        rules,
    } = r;
    pb::RateLimitSettings {
        requests_per_minute: *requests_per_minute,
        burst: *burst,
        per_client_requests_per_minute: *per_client_requests_per_minute,
        rules: rules
            .iter()
            .map(|r| {
                let RateLimitRule {
                    permission,
                    requests_per_minute,
                    burst,
                } = r;
                pb::RateLimitRule {
                    permission: permission.clone(),
                    requests_per_minute: *requests_per_minute,
                    burst: *burst,
                }
            })
            .collect(),
    }
}

fn rate_limits_from_pb(r: &pb::RateLimitSettings) -> RateLimits {
    let pb::RateLimitSettings {
        requests_per_minute,
        burst,
        per_client_requests_per_minute,
        rules,
    } = r;
    RateLimits {
        requests_per_minute: *requests_per_minute,
        burst: *burst,
        per_client_requests_per_minute: *per_client_requests_per_minute,
        rules: rules
            .iter()
            .map(|r| {
                let pb::RateLimitRule {
                    permission,
                    requests_per_minute,
                    burst,
                } = r;
                RateLimitRule {
                    permission: permission.clone(),
                    requests_per_minute: *requests_per_minute,
                    burst: *burst,
                }
            })
            .collect(),
    }
}

pub fn tenant_to_pb(t: &Tenant) -> pb::Tenant {
    let Tenant {
        id,
        display_name,
        state,
        contact_email,
        rate_limits,
        audit_retention_secs,
        labels,
        revision,
        created_at_us,
        updated_at_us,
        deleted_at_us,
    } = t;
    pb::Tenant {
        name: format!("tenants/{id}"),
        display_name: display_name.clone(),
        state: tenant_state_to_pb(*state) as i32,
        contact_email: contact_email.clone(),
        rate_limits: Some(rate_limits_to_pb(rate_limits)),
        audit_retention: Some(prost_types::Duration {
            seconds: *audit_retention_secs,
            nanos: 0,
        }),
        labels: labels.clone().into_iter().collect(),
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
        delete_time: deleted_at_us.map(timestamp),
    }
}

pub fn client_to_pb(c: &Client) -> pb::Client {
    let Client {
        tenant_id,
        id,
        display_name,
        state,
        time_zone,
        website,
        contact_email,
        labels,
        revision,
        created_at_us,
        updated_at_us,
    } = c;
    pb::Client {
        name: format!("tenants/{tenant_id}/clients/{id}"),
        display_name: display_name.clone(),
        state: client_state_to_pb(*state) as i32,
        time_zone: time_zone.clone(),
        website: website.clone(),
        contact_email: contact_email.clone(),
        labels: labels.clone().into_iter().collect(),
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

/// The writable fields of a proto tenant, validated (paths not in `paths` are not checked).
pub struct TenantFields {
    pub display_name: String,
    pub contact_email: String,
    pub rate_limits: RateLimits,
    pub audit_retention_secs: i64,
    pub labels: BTreeMap<String, String>,
}

pub fn tenant_fields(t: &pb::Tenant, paths: &[String], v: &mut Violations) -> TenantFields {
    let pb::Tenant {
        name: _,
        display_name,
        state: _,
        contact_email,
        rate_limits,
        audit_retention,
        labels,
        etag: _,
        create_time: _,
        update_time: _,
        delete_time: _,
    } = t;
    let wants = |p: &str| paths.iter().any(|x| x == p);
    if wants("display_name") {
        v.check(
            !display_name.trim().is_empty() && display_name.len() <= 200,
            "tenant.display_name",
            "must be 1-200 bytes",
        );
    }
    if wants("contact_email") {
        v.check(
            email_ok(contact_email),
            "tenant.contact_email",
            "must be an e-mail address",
        );
    }
    let rate_limits = rate_limits
        .as_ref()
        .map(rate_limits_from_pb)
        .unwrap_or_default();
    if wants("rate_limits") {
        rate_limits.validate("tenant.rate_limits", v);
    }
    let audit_retention_secs = audit_retention
        .as_ref()
        .map_or(DEFAULT_AUDIT_RETENTION_SECS, |d| d.seconds);
    if wants("audit_retention") {
        v.check(
            audit_retention_secs >= MIN_AUDIT_RETENTION_SECS,
            "tenant.audit_retention",
            "must be at least 30 days (2592000s)",
        );
    }
    let labels: BTreeMap<String, String> = labels.clone().into_iter().collect();
    if wants("labels") {
        validate_labels(&labels, "tenant.labels", v);
    }
    TenantFields {
        display_name: display_name.clone(),
        contact_email: contact_email.clone(),
        rate_limits,
        audit_retention_secs,
        labels,
    }
}

pub struct ClientFields {
    pub display_name: String,
    pub state: ClientState,
    pub time_zone: String,
    pub website: String,
    pub contact_email: String,
    pub labels: BTreeMap<String, String>,
}

pub fn client_fields(c: &pb::Client, paths: &[String], v: &mut Violations) -> ClientFields {
    let pb::Client {
        name: _,
        display_name,
        state,
        time_zone,
        website,
        contact_email,
        labels,
        etag: _,
        create_time: _,
        update_time: _,
    } = c;
    let wants = |p: &str| paths.iter().any(|x| x == p);
    if wants("display_name") {
        v.check(
            !display_name.trim().is_empty() && display_name.len() <= 200,
            "client.display_name",
            "must be 1-200 bytes",
        );
    }
    let state = if *state == 0 {
        Some(ClientState::Active)
    } else {
        client_state_from_pb(*state)
    };
    if wants("state") {
        v.check(
            state.is_some(),
            "client.state",
            "must be CLIENT_STATE_ACTIVE or CLIENT_STATE_PAUSED",
        );
    }
    if wants("time_zone") {
        v.check(
            time_zone_ok(time_zone),
            "client.time_zone",
            "must be an IANA time zone such as America/Chicago",
        );
    }
    if wants("website") {
        let ok = website.is_empty()
            || ((website.starts_with("https://") || website.starts_with("http://"))
                && website.len() <= 2048);
        v.check(ok, "client.website", "must be empty or an http(s) URL");
    }
    if wants("contact_email") {
        v.check(
            contact_email.is_empty() || email_ok(contact_email),
            "client.contact_email",
            "must be empty or an e-mail address",
        );
    }
    let labels: BTreeMap<String, String> = labels.clone().into_iter().collect();
    if wants("labels") {
        validate_labels(&labels, "client.labels", v);
    }
    ClientFields {
        display_name: display_name.clone(),
        state: state.unwrap_or(ClientState::Active),
        time_zone: time_zone.clone(),
        website: website.clone(),
        contact_email: contact_email.clone(),
        labels,
    }
}
