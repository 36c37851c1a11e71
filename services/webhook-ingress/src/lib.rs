//! Webhook ingress: verifies, validates, normalizes and stores provider webhooks, and hands the
//! stored events to their consumers through a durable outbox.
//!
//! | module | job |
//! | --- | --- |
//! | [`signature`] | authenticates an inbound webhook from GoHighLevel, Retell, Twilio, Stripe or PayPal against the raw request bytes, before anything parses the body |
//! | [`normalize`] | reads a verified body, names its provider account, validates it against its JSON Schema (`schemas/webhook/`) and maps it to one canonical event with CloudEvents attributes, a provider event id and an ordering key (catalogue: `docs/events.md`) |
//! | [`domain`] | what is stored, as plain values: canonical events, outbox deliveries and dead letters, quarantined payloads, endpoints and their secret versions, retention; retry backoff |
//! | [`store`] | [`store::EventStore`] and its SQL implementation (PostgreSQL schema `webhook` / SQLite file `webhook.db`), the [`store::GroupCommitter`] that batches many webhooks into one transaction, and the conformance suite both backends pass |
//!
//! Durability contract: an event and its outbox rows (one per consumer) commit in one
//! transaction before the provider is answered; the same (provider, provider event id) again is
//! acknowledged as a duplicate and stores nothing. Concurrent webhooks share transactions
//! through the group committer, so commits grow far slower than traffic. Dispatcher replicas
//! lease outbox rows (`claim`), so no two deliver the same row at once, and only the first
//! pending row of each (consumer, ordering key) is leased, so the events of one call or
//! conversation reach a consumer in the order they were stored.
//!
//! Validation, normalization, the dispatcher and the gRPC API come next and build on these.
#![forbid(unsafe_code)]

pub mod domain;
pub mod normalize;
pub mod signature;
pub mod store;

use maxai_kit::storage::Migrations;
use sqlx::migrate::Migrator;

/// Storage name: PostgreSQL schema `webhook`, SQLite file `webhook.db`.
pub const STORAGE_NAME: &str = "webhook";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/webhook/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/webhook/sqlite");

/// The webhook ingress migrations, one set per dialect.
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};
