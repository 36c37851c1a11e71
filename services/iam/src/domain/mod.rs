//! Tenants and clients as the service understands them, validated once when they come in.
mod tenancy;

pub use tenancy::{
    email_ok, time_zone_ok, validate_labels, Client, ClientState, RateLimitRule, RateLimits,
    Tenant, TenantState, DEFAULT_AUDIT_RETENTION_SECS, MIN_AUDIT_RETENTION_SECS,
};
