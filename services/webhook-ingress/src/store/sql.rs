//! [`EventStore`] over SQL: the same queries on PostgreSQL and SQLite where the SQL agrees, a
//! dialect-specific path where it pays (PostgreSQL appends a batch with `UNNEST` in two
//! statements and claims with `FOR UPDATE SKIP LOCKED`; SQLite, in-process and serial, takes
//! the write lock up front with `BEGIN IMMEDIATE` so a read-then-write transaction never fails
//! on a stale snapshot).

/// Runs `$body` in a write transaction and commits it; `?` or `return` inside rolls back.
/// SQLite transactions start with `BEGIN IMMEDIATE` (see the module header).
macro_rules! write_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            maxai_kit::storage::Db::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            maxai_kit::storage::Db::Sqlite(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Binds every [`Arg`] of a [`Sql`] to a query, in order.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                $crate::store::sql::Arg::Int(v) => q.bind(*v),
                $crate::store::sql::Arg::Text(v) => q.bind(v.as_str()),
                $crate::store::sql::Arg::Bool(v) => q.bind(*v),
            };
        }
        q
    }};
}

mod delivery;
mod endpoints;
mod events;
mod quarantine;
mod retention;

use async_trait::async_trait;
use maxai_kit::{storage::Db, Error, ErrorKind, Result};

use super::EventStore;
use crate::domain::{
    Appended, CanonicalEvent, Cutoffs, DeadLetter, DeadLetterFilter, Delivery, Endpoint,
    EndpointFilter, EndpointKey, EndpointUpdate, EventFilter, EventRecord, Failure, NewEndpoint,
    NewEvent, NewQuarantined, NewSecret, Next, Provider, Purged, QuarantineFailure,
    QuarantineFilter, QuarantinedEvent, ResolvedEndpoint, RetentionSettings, StoredEvent,
};

/// Webhook rows in the service's own PostgreSQL schema or SQLite file.
#[derive(Clone, Debug)]
pub struct SqlEventStore {
    db: Db,
}

impl SqlEventStore {
    pub fn new(db: Db) -> Self {
        SqlEventStore { db }
    }
    pub fn db(&self) -> &Db {
        &self.db
    }
}

// ---- helpers shared by the submodules ------------------------------------------------------

/// A bind value of a query built at run time.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    Bool(bool),
}

/// SQL text with `$n` placeholders numbered as arguments are added (both dialects accept `$n`).
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }
    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }
    /// Adds an argument and returns its placeholder.
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }
    /// Pushes `text` followed by the placeholder of a new argument.
    pub fn bind(&mut self, text: &str, a: Arg) -> &mut Sql {
        let p = self.arg(a);
        self.text.push_str(text);
        self.text.push_str(&p);
        self
    }
    pub fn int(&mut self, v: i64) -> String {
        self.arg(Arg::Int(v))
    }
    pub fn text(&mut self, v: &str) -> String {
        self.arg(Arg::Text(v.to_owned()))
    }
    /// `(p1, p2, ...)` for an IN list of text values (never empty: callers check).
    pub fn text_list<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) -> String {
        let ps: Vec<String> = values.into_iter().map(|v| self.text(v)).collect();
        format!("({})", ps.join(", "))
    }
    pub fn int_list(&mut self, values: impl IntoIterator<Item = i64>) -> String {
        let ps: Vec<String> = values.into_iter().map(|v| self.int(v)).collect();
        format!("({})", ps.join(", "))
    }
}

pub(crate) fn corrupt(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("stored row has an unreadable {what}"))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn bad_page_token() -> Error {
    Error::invalid("page_token", "is not a token this list issued")
}

pub(crate) fn stale(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("{what} was changed by someone else; read it again"),
    )
}

pub(crate) fn parse_provider(s: &str) -> Result<Provider> {
    Provider::parse(s).ok_or_else(|| corrupt("provider"))
}

/// Event columns, read through the alias `e`.
pub(crate) const EVENT_COLUMNS: &str =
    "e.id, e.tenant_id, e.client_id, e.endpoint_id, e.provider, \
     e.provider_event_id, e.cloud_event_id, e.source, e.event_type, e.subject, e.time_us, e.data, \
     e.ordering_key, e.received_at_us, e.replayed_from";

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: String,
    tenant_id: String,
    client_id: String,
    endpoint_id: String,
    provider: String,
    provider_event_id: String,
    cloud_event_id: String,
    source: String,
    event_type: String,
    subject: String,
    time_us: i64,
    data: String,
    ordering_key: String,
    received_at_us: i64,
    replayed_from: Option<String>,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<StoredEvent> {
        let EventRow {
            id,
            tenant_id,
            client_id,
            endpoint_id,
            provider,
            provider_event_id,
            cloud_event_id,
            source,
            event_type,
            subject,
            time_us,
            data,
            ordering_key,
            received_at_us,
            replayed_from,
        } = r;
        Ok(StoredEvent {
            id,
            event: CanonicalEvent {
                cloud_event_id,
                source,
                event_type,
                subject,
                time_us,
                data,
                tenant_id,
                client_id,
                provider: parse_provider(&provider)?,
                provider_event_id,
                ordering_key,
            },
            endpoint_id,
            received_at_us,
            replayed_from,
        })
    }
}

#[async_trait]
impl EventStore for SqlEventStore {
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<Appended>> {
        events::append(&self.db, batch).await
    }
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<EventRecord>> {
        events::get(&self.db, tenant_id, id).await
    }
    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        events::list(&self.db, tenant_id, filter, after, limit).await
    }

    async fn claim(
        &self,
        owner: &str,
        now_us: i64,
        lease_us: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        delivery::claim(&self.db, owner, now_us, lease_us, limit).await
    }
    async fn delivered(
        &self,
        outbox_id: i64,
        owner: &str,
        duplicate: bool,
        now_us: i64,
    ) -> Result<()> {
        delivery::delivered(&self.db, outbox_id, owner, duplicate, now_us).await
    }
    async fn failed(
        &self,
        outbox_id: i64,
        owner: &str,
        failure: &Failure,
        next: Next,
    ) -> Result<()> {
        delivery::failed(&self.db, outbox_id, owner, failure, next).await
    }
    async fn get_dead_letter(&self, tenant_id: &str, id: i64) -> Result<Option<DeadLetter>> {
        delivery::get_dead_letter(&self.db, tenant_id, id).await
    }
    async fn list_dead_letters(
        &self,
        tenant_id: &str,
        filter: &DeadLetterFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>> {
        delivery::list_dead_letters(&self.db, tenant_id, filter, after, limit).await
    }
    async fn replay_dead_letter(
        &self,
        tenant_id: &str,
        id: i64,
        now_us: i64,
    ) -> Result<DeadLetter> {
        delivery::replay_dead_letter(&self.db, tenant_id, id, now_us).await
    }

    async fn quarantine(&self, entry: &NewQuarantined) -> Result<QuarantinedEvent> {
        quarantine::insert(&self.db, entry).await
    }
    async fn get_quarantined(&self, tenant_id: &str, id: &str) -> Result<Option<QuarantinedEvent>> {
        quarantine::get(&self.db, tenant_id, id).await
    }
    async fn list_quarantined(
        &self,
        tenant_id: &str,
        filter: &QuarantineFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<QuarantinedEvent>> {
        quarantine::list(&self.db, tenant_id, filter, after, limit).await
    }
    async fn mark_replayed(
        &self,
        tenant_id: &str,
        id: &str,
        event_id: &str,
        now_us: i64,
    ) -> Result<QuarantinedEvent> {
        quarantine::mark_replayed(&self.db, tenant_id, id, event_id, now_us).await
    }
    async fn record_replay_failure(
        &self,
        tenant_id: &str,
        id: &str,
        failure: &QuarantineFailure,
        now_us: i64,
    ) -> Result<QuarantinedEvent> {
        quarantine::record_failure(&self.db, tenant_id, id, failure, now_us).await
    }

    async fn create_endpoint(
        &self,
        endpoint: &NewEndpoint,
        secret: Option<&NewSecret>,
        request_id: Option<&str>,
        now_us: i64,
    ) -> Result<Endpoint> {
        endpoints::create(&self.db, endpoint, secret, request_id, now_us).await
    }
    async fn get_endpoint(&self, key: &EndpointKey) -> Result<Option<Endpoint>> {
        endpoints::get(&self.db, key).await
    }
    async fn list_endpoints(
        &self,
        tenant_id: &str,
        filter: &EndpointFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Endpoint>> {
        endpoints::list(&self.db, tenant_id, filter, after, limit).await
    }
    async fn update_endpoint(
        &self,
        update: &EndpointUpdate,
        expected_revision: Option<i64>,
        now_us: i64,
    ) -> Result<Endpoint> {
        endpoints::update(&self.db, update, expected_revision, now_us).await
    }
    async fn delete_endpoint(
        &self,
        key: &EndpointKey,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        endpoints::delete(&self.db, key, expected_revision).await
    }
    async fn rotate_secret(
        &self,
        key: &EndpointKey,
        secret: &NewSecret,
        previous_ttl_us: i64,
        request_id: Option<&str>,
        now_us: i64,
    ) -> Result<Endpoint> {
        endpoints::rotate(&self.db, key, secret, previous_ttl_us, request_id, now_us).await
    }
    async fn resolve(
        &self,
        provider: Provider,
        account_keys: &[String],
        now_us: i64,
    ) -> Result<Option<ResolvedEndpoint>> {
        endpoints::resolve(&self.db, provider, account_keys, now_us).await
    }
    async fn resolve_endpoint(
        &self,
        key: &EndpointKey,
        now_us: i64,
    ) -> Result<Option<ResolvedEndpoint>> {
        endpoints::resolve_key(&self.db, key, now_us).await
    }
    async fn destroy_expired_secrets(&self, now_us: i64) -> Result<u64> {
        endpoints::destroy_expired(&self.db, now_us).await
    }

    async fn get_retention(&self, tenant_id: &str) -> Result<Option<RetentionSettings>> {
        retention::get(&self.db, tenant_id).await
    }
    async fn put_retention(
        &self,
        settings: &RetentionSettings,
        expected_revision: Option<i64>,
        now_us: i64,
    ) -> Result<RetentionSettings> {
        retention::put(&self.db, settings, expected_revision, now_us).await
    }
    async fn purge(&self, tenant_id: &str, cutoffs: &Cutoffs, batch_size: i64) -> Result<Purged> {
        retention::purge(&self.db, tenant_id, cutoffs, batch_size).await
    }
    async fn tenants_with_records(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        retention::tenants_with_records(&self.db, after, limit).await
    }
}
