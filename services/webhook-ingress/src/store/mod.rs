//! Persistence of events, their outbox, quarantine, dead letters, endpoints and retention: one
//! trait, one SQL implementation for PostgreSQL and SQLite, one conformance suite run on both.
//!
//! Tenancy: every operation is scoped to a tenant except the ones that are global by nature —
//! [`EventStore::append`] (the events name their tenant), [`EventStore::resolve`] (finding the
//! tenant is its job), the dispatcher's [`EventStore::claim`] / [`EventStore::delivered`] /
//! [`EventStore::failed`] and the maintenance [`EventStore::destroy_expired_secrets`] /
//! [`EventStore::tenants_with_records`].
//!
//! Pages: list methods return up to `limit` items after the item whose `page_key()` is `after`;
//! ask for `limit + 1` and let `maxai_kit::paging::next_page` cut the page and mint the token.
#[doc(hidden)]
pub mod conformance;
mod group;
mod sql;

use async_trait::async_trait;
use maxai_kit::Result;

use crate::domain::{
    Appended, Cutoffs, DeadLetter, DeadLetterFilter, Delivery, Endpoint, EndpointFilter,
    EndpointKey, EndpointUpdate, EventFilter, EventRecord, Failure, NewEndpoint, NewEvent,
    NewQuarantined, NewSecret, Next, Provider, Purged, QuarantineFailure, QuarantineFilter,
    QuarantinedEvent, ResolvedEndpoint, RetentionSettings,
};

pub use group::{GroupCommitConfig, GroupCommitStats, GroupCommitter};
pub use sql::SqlEventStore;

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    // ---- events and their outbox -------------------------------------------------------------

    /// Stores each event with one outbox row per consumer, all in ONE transaction (group
    /// commit). An event whose (provider, provider event id) is already stored — earlier or
    /// earlier in the same batch — writes nothing and is reported as [`Appended::Duplicate`];
    /// the rest of the batch still commits. The answer has one entry per input, in order.
    /// An error means nothing of the batch was stored.
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<Appended>>;
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<EventRecord>>;
    /// Newest first (received time, then id).
    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>>;

    // ---- delivery (the dispatcher) -----------------------------------------------------------

    /// Leases up to `limit` due outbox rows to `owner` until `now_us + lease_us`: pending, next
    /// attempt due, not leased (or the lease expired), and the first pending row of its
    /// (consumer, ordering key) — so events of one call or conversation go out one at a time, in
    /// the order they were stored. Concurrent claimers never get the same row. Each claim counts
    /// as an attempt. The lease must outlast the consumer call's deadline.
    async fn claim(
        &self,
        owner: &str,
        now_us: i64,
        lease_us: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>>;
    /// The consumer accepted the row's event. `Conflict` unless `owner` holds the lease on a
    /// pending row (another replica took over after the lease expired).
    async fn delivered(
        &self,
        outbox_id: i64,
        owner: &str,
        duplicate: bool,
        now_us: i64,
    ) -> Result<()>;
    /// An attempt failed: records it and schedules the next one or makes the row a dead letter.
    /// `Conflict` unless `owner` holds the lease on a pending row.
    async fn failed(
        &self,
        outbox_id: i64,
        owner: &str,
        failure: &Failure,
        next: Next,
    ) -> Result<()>;
    async fn get_dead_letter(&self, tenant_id: &str, id: i64) -> Result<Option<DeadLetter>>;
    /// Newest first (when delivery first gave up, then id).
    async fn list_dead_letters(
        &self,
        tenant_id: &str,
        filter: &DeadLetterFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>>;
    /// Queues the dead letter again with a fresh retry budget (REPLAYING). A dead letter already
    /// replaying is returned unchanged; a replayed (delivered) one is queued again. `NotFound`
    /// when the tenant has no such dead letter.
    async fn replay_dead_letter(&self, tenant_id: &str, id: i64, now_us: i64)
        -> Result<DeadLetter>;

    // ---- quarantine --------------------------------------------------------------------------

    async fn quarantine(&self, entry: &NewQuarantined) -> Result<QuarantinedEvent>;
    async fn get_quarantined(&self, tenant_id: &str, id: &str) -> Result<Option<QuarantinedEvent>>;
    /// Newest first (received time, then id).
    async fn list_quarantined(
        &self,
        tenant_id: &str,
        filter: &QuarantineFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<QuarantinedEvent>>;
    /// A replay stored (or found stored) `event_id`: the entry becomes REPLAYED. `NotFound`
    /// when the tenant has no such entry.
    async fn mark_replayed(
        &self,
        tenant_id: &str,
        id: &str,
        event_id: &str,
        now_us: i64,
    ) -> Result<QuarantinedEvent>;
    /// A replay failed again: the entry keeps its payload and shows the new errors.
    async fn record_replay_failure(
        &self,
        tenant_id: &str,
        id: &str,
        failure: &QuarantineFailure,
        now_us: i64,
    ) -> Result<QuarantinedEvent>;

    // ---- endpoints ---------------------------------------------------------------------------

    /// Inserts at revision 1 with `secret` as version 1 (when given). The same `request_id`
    /// again returns what it created. `AlreadyExists` for a taken id or an account another
    /// endpoint already has.
    async fn create_endpoint(
        &self,
        endpoint: &NewEndpoint,
        secret: Option<&NewSecret>,
        request_id: Option<&str>,
        now_us: i64,
    ) -> Result<Endpoint>;
    async fn get_endpoint(&self, key: &EndpointKey) -> Result<Option<Endpoint>>;
    /// Ordered by (client, id).
    async fn list_endpoints(
        &self,
        tenant_id: &str,
        filter: &EndpointFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Endpoint>>;
    /// Replaces the mutable fields and bumps the revision. `Conflict` on a stale revision,
    /// `InvalidArgument` for an account of another provider, `AlreadyExists` for a taken account.
    async fn update_endpoint(
        &self,
        update: &EndpointUpdate,
        expected_revision: Option<i64>,
        now_us: i64,
    ) -> Result<Endpoint>;
    /// Removes the endpoint and destroys its secrets; its events stay until retention.
    async fn delete_endpoint(
        &self,
        key: &EndpointKey,
        expected_revision: Option<i64>,
    ) -> Result<()>;
    /// Adds the next secret version. The newest version so far keeps verifying for
    /// `previous_ttl_us` (0: expires at once); older active versions expire at once and are
    /// destroyed, so at most two verify. The same `request_id` again returns the endpoint
    /// without rotating.
    async fn rotate_secret(
        &self,
        key: &EndpointKey,
        secret: &NewSecret,
        previous_ttl_us: i64,
        request_id: Option<&str>,
        now_us: i64,
    ) -> Result<Endpoint>;
    /// The endpoint of `provider` whose account key is the first of `account_keys` that any
    /// endpoint has (see the `Account::*_lookup` helpers), with its active secrets. Disabled
    /// endpoints are returned too: refusing them is the caller's decision.
    async fn resolve(
        &self,
        provider: Provider,
        account_keys: &[String],
        now_us: i64,
    ) -> Result<Option<ResolvedEndpoint>>;
    /// The endpoint named in an ingest URL, with its active secrets.
    async fn resolve_endpoint(
        &self,
        key: &EndpointKey,
        now_us: i64,
    ) -> Result<Option<ResolvedEndpoint>>;
    /// Erases the ciphertext of every expired secret version; returns how many.
    async fn destroy_expired_secrets(&self, now_us: i64) -> Result<u64>;

    // ---- retention ---------------------------------------------------------------------------

    async fn get_retention(&self, tenant_id: &str) -> Result<Option<RetentionSettings>>;
    /// Stores the settings. With `expected_revision`, only if the stored revision is that (0:
    /// only if none is stored), else `Conflict`.
    async fn put_retention(
        &self,
        settings: &RetentionSettings,
        expected_revision: Option<i64>,
        now_us: i64,
    ) -> Result<RetentionSettings>;
    /// Deletes the tenant's records older than the cut-offs in transactions of at most
    /// `batch_size` rows (no long locks): events with no pending delivery and no recent dead
    /// letter (their outbox rows and attempts go with them), and quarantined events.
    async fn purge(&self, tenant_id: &str, cutoffs: &Cutoffs, batch_size: i64) -> Result<Purged>;
    /// Tenants holding events or quarantined events, by id, after `after`.
    async fn tenants_with_records(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>>;
}
