//! Tenants and clients as the service understands them, validated once when they come in.
mod access;
mod accounts;
mod audit;
mod roles;

pub use access::{decide, Assignment, CustomRole, Decision};
pub use accounts::{new_secret, secret_hash, ApiKey, ServiceAccount};
pub use audit::{chain_hash, first_break, AuditEntry, AuditRecord, Outcome, GENESIS_HASH};
mod tenancy;
mod users;

pub use users::{User, UserState};

pub use roles::{
    built_in, built_in_roles, catalogue, scope_contains, scope_kind, BuiltInRole, PermissionInfo,
    ScopeKind, ANY_PRINCIPAL, PLATFORM_SERVICE,
};

pub use tenancy::{
    email_ok, time_zone_ok, validate_labels, Client, ClientState, RateLimitRule, RateLimits,
    Tenant, TenantState, DEFAULT_AUDIT_RETENTION_SECS, MIN_AUDIT_RETENTION_SECS,
};
