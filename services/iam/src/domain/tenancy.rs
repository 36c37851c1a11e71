use std::collections::BTreeMap;

use maxai_kit::error::Violations;
use serde::{Deserialize, Serialize};

/// Audit entries are kept at least this long (30 days)…
pub const MIN_AUDIT_RETENTION_SECS: i64 = 30 * 24 * 3600;
/// …and 400 days unless the tenant says otherwise.
pub const DEFAULT_AUDIT_RETENTION_SECS: i64 = 400 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    Active,
    Suspended,
    Deleted,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TenantState::Active),
            "suspended" => Some(TenantState::Suspended),
            "deleted" => Some(TenantState::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Active,
    Paused,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Paused => "paused",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ClientState::Active),
            "paused" => Some(ClientState::Paused),
            _ => None,
        }
    }
}

/// Gateway rate limits of a tenant (enforced by the gateway once IAM enforcement lands).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests_per_minute: i32,
    pub burst: i32,
    pub per_client_requests_per_minute: i32,
    pub rules: Vec<RateLimitRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitRule {
    pub permission: String,
    pub requests_per_minute: i32,
    pub burst: i32,
}

impl RateLimits {
    pub fn validate(&self, field: &str, v: &mut Violations) {
        let limit = 0..=1_000_000;
        v.check(
            limit.contains(&self.requests_per_minute),
            format!("{field}.requests_per_minute"),
            "must be 0..=1000000",
        );
        v.check(
            limit.contains(&self.burst),
            format!("{field}.burst"),
            "must be 0..=1000000",
        );
        v.check(
            limit.contains(&self.per_client_requests_per_minute),
            format!("{field}.per_client_requests_per_minute"),
            "must be 0..=1000000",
        );
        v.check(
            self.rules.len() <= 50,
            format!("{field}.rules"),
            "at most 50 rules",
        );
        for (i, r) in self.rules.iter().enumerate() {
            let ok = r.permission.split('.').count() == 3 && r.permission.len() <= 128;
            v.check(
                ok,
                format!("{field}.rules[{i}].permission"),
                "must be a permission like iam.tokens.refresh",
            );
            v.check(
                limit.contains(&r.requests_per_minute),
                format!("{field}.rules[{i}].requests_per_minute"),
                "must be 0..=1000000",
            );
            v.check(
                limit.contains(&r.burst),
                format!("{field}.rules[{i}].burst"),
                "must be 0..=1000000",
            );
        }
    }
}

/// An agency using the platform: `tenants/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub state: TenantState,
    pub contact_email: String,
    pub rate_limits: RateLimits,
    pub audit_retention_secs: i64,
    pub labels: BTreeMap<String, String>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub deleted_at_us: Option<i64>,
}

/// A business an agency serves: `tenants/{tenant_id}/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub tenant_id: String,
    pub id: String,
    pub display_name: String,
    pub state: ClientState,
    pub time_zone: String,
    pub website: String,
    pub contact_email: String,
    pub labels: BTreeMap<String, String>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// Label keys are `a-z 0-9 _ -` (1-63), values at most 63 bytes, at most 64 labels.
pub fn validate_labels(labels: &BTreeMap<String, String>, field: &str, v: &mut Violations) {
    v.check(labels.len() <= 64, field.to_owned(), "at most 64 labels");
    for (k, val) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        v.check(
            key_ok,
            format!("{field}[{k}]"),
            "label keys are 1-63 characters of a-z, 0-9, '_' or '-'",
        );
        v.check(
            val.len() <= 63,
            format!("{field}[{k}]"),
            "label values are at most 63 bytes",
        );
    }
}

/// A plausible e-mail address (the provider confirms it; this only refuses obvious mistakes).
pub fn email_ok(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && s.len() <= 254
        && !s.contains(char::is_whitespace)
}

/// An IANA zone name such as `America/Chicago` or `UTC` (shape only; the zone database is not
/// linked into this service).
pub fn time_zone_ok(s: &str) -> bool {
    if s == "UTC" {
        return true;
    }
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() >= 2
        && s.len() <= 64
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_uppercase())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert!(email_ok("ops@acme.agency"));
        for bad in ["", "no-at", "a@b", "a @b.co", "@b.co", "a@.co"] {
            assert!(!email_ok(bad), "{bad}");
        }
        assert!(
            time_zone_ok("America/Chicago")
                && time_zone_ok("UTC")
                && time_zone_ok("America/Argentina/Buenos_Aires")
        );
        for bad in [
            "",
            "chicago",
            "America/",
            "america/chicago",
            "Mars Base/One",
        ] {
            assert!(!time_zone_ok(bad), "{bad}");
        }
        let mut v = Violations::new();
        let mut labels = BTreeMap::new();
        labels.insert("Bad Key".to_owned(), "x".to_owned());
        validate_labels(&labels, "tenant.labels", &mut v);
        assert!(!v.is_empty());
    }
}
