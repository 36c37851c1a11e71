//! Persistence of tenants and clients: one trait, one SQL implementation for PostgreSQL and
//! SQLite, one conformance suite run against both.
mod access_sql;
mod accounts_sql;
mod audit_sql;
#[doc(hidden)]
pub mod conformance;
mod sql;
mod users_sql;

use async_trait::async_trait;
use maxai_kit::Result;

use crate::domain::{
    ApiKey, Assignment, AuditEntry, AuditRecord, Client, ClientState, CustomRole, ServiceAccount,
    Tenant, TenantState, User, UserState,
};

pub use sql::SqlIamStore;

#[async_trait]
pub trait TenancyStore: Send + Sync + 'static {
    /// Inserts at revision 1; the same `request_id` again returns what it created.
    async fn create_tenant(&self, tenant: &Tenant, request_id: Option<&str>) -> Result<Tenant>;
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Tenants with id > `after`, by id. Without a state filter, deleted tenants are left out.
    async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: i64,
        state: Option<TenantState>,
    ) -> Result<Vec<Tenant>>;
    /// Replaces the mutable fields (and state), bumps the revision; `Conflict` on a stale revision.
    async fn update_tenant(&self, tenant: &Tenant, expected_revision: i64) -> Result<Tenant>;

    /// `PreconditionFailed` when the tenant is missing, suspended or deleted.
    async fn create_client(&self, client: &Client, request_id: Option<&str>) -> Result<Client>;
    async fn get_client(&self, tenant_id: &str, id: &str) -> Result<Option<Client>>;
    async fn list_clients(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
        state: Option<ClientState>,
    ) -> Result<Vec<Client>>;
    async fn update_client(&self, client: &Client, expected_revision: i64) -> Result<Client>;
    async fn delete_client(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()>;
}

/// Filters of ListRoleAssignments.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    pub principal: Option<String>,
    pub role: Option<String>,
    pub scope: Option<String>,
    /// Leave out assignments expired at this time (UTC µs), when set.
    pub active_at_us: Option<i64>,
}

#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    async fn create_role(&self, role: &CustomRole, request_id: Option<&str>) -> Result<CustomRole>;
    async fn get_role(&self, tenant_id: &str, id: &str) -> Result<Option<CustomRole>>;
    async fn list_roles(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CustomRole>>;
    async fn update_role(&self, role: &CustomRole, expected_revision: i64) -> Result<CustomRole>;
    /// `PreconditionFailed` while an assignment names the role.
    async fn delete_role(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()>;

    async fn create_assignment(
        &self,
        a: &Assignment,
        request_id: Option<&str>,
    ) -> Result<Assignment>;
    async fn get_assignment(&self, tenant_id: &str, id: &str) -> Result<Option<Assignment>>;
    async fn list_assignments(
        &self,
        tenant_id: &str,
        filter: &AssignmentFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Assignment>>;
    async fn update_assignment(&self, a: &Assignment, expected_revision: i64)
        -> Result<Assignment>;
    async fn delete_assignment(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()>;
    /// Every assignment of a principal, expired ones included (the policy engine decides).
    async fn assignments_of(&self, principal: &str) -> Result<Vec<Assignment>>;
}

/// Filters of ListAuditEntries.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    /// Entries on this resource or inside it.
    pub resource: Option<String>,
    pub outcome: Option<String>,
    /// Matches the action or the permission.
    pub action: Option<String>,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends to the tenant's chain (the next sequence, linked to the previous hash).
    async fn append(
        &self,
        tenant_id: &str,
        occur_at_us: i64,
        record: &AuditRecord,
    ) -> Result<AuditEntry>;
    async fn get_entry(&self, tenant_id: &str, seq: i64) -> Result<Option<AuditEntry>>;
    /// Newest first: sequences below `before_seq` (all when `None`).
    async fn list_entries(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>>;
    /// Oldest first, sequences in `from..=to`, at most `limit`.
    async fn chain_range(
        &self,
        tenant_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>>;
    /// The anchor left by the last purge: (last purged sequence, its hash).
    async fn anchor(&self, tenant_id: &str) -> Result<Option<(i64, String)>>;
    /// Removes the oldest entries written before `before_us`, keeping the chain's anchor.
    /// Returns (removed, last removed sequence and hash). `dry_run` only counts.
    async fn purge(
        &self,
        tenant_id: &str,
        before_us: i64,
        dry_run: bool,
    ) -> Result<(i64, Option<(i64, String)>)>;
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// `AlreadyExists` for a taken id or email in the tenant; `NotFound` without the tenant.
    async fn create_user(&self, user: &User, request_id: Option<&str>) -> Result<User>;
    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>>;
    async fn list_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
        state: Option<UserState>,
        email_prefix: &str,
    ) -> Result<Vec<User>>;
    async fn update_user(&self, user: &User, expected_revision: i64) -> Result<User>;
    /// Removes the user and every role assignment naming them, in one transaction.
    async fn delete_user(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()>;
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn create_account(
        &self,
        a: &ServiceAccount,
        request_id: Option<&str>,
    ) -> Result<ServiceAccount>;
    async fn get_account(&self, tenant_id: &str, id: &str) -> Result<Option<ServiceAccount>>;
    async fn list_accounts(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ServiceAccount>>;
    async fn update_account(
        &self,
        a: &ServiceAccount,
        expected_revision: i64,
    ) -> Result<ServiceAccount>;
    /// Removes the account, its keys and its role assignments in one transaction.
    async fn delete_account(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()>;
    /// Inserts a key; with a `request_id`, one made for the same request is returned instead
    /// (`true` when it was made now).
    async fn create_key(&self, k: &ApiKey, request_id: Option<&str>) -> Result<(ApiKey, bool)>;
    async fn get_key(&self, tenant_id: &str, account_id: &str, id: &str) -> Result<Option<ApiKey>>;
    async fn list_keys(
        &self,
        tenant_id: &str,
        account_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiKey>>;
    async fn delete_key(&self, tenant_id: &str, account_id: &str, id: &str) -> Result<()>;
    /// The key whose secret hashes to `hash` (for the API-key exchange).
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
}
