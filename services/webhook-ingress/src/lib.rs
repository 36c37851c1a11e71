//! Webhook ingress: verifies, validates, normalizes and stores provider webhooks, and hands the
//! stored events to their consumers through a durable outbox.
//!
//! | module | job |
//! | --- | --- |
//! | [`api`] | `WebhookIngressService`: the ingest pipeline and the operators' RPCs |
//! | [`config`] | `[webhook]` settings and the providers' own verification keys |
//! | [`dispatch`] | the dispatcher: leases outbox rows and calls each consumer's `EventConsumerService.ConsumeEvent` with backoff and jitter; dead letters after the retry budget |
//! | [`signature`] | authenticates an inbound webhook from GoHighLevel, Retell, Twilio, Stripe or PayPal against the raw request bytes, before anything parses the body |
//! | [`normalize`] | reads a verified body, names its provider account, validates it against its JSON Schema (`schemas/webhook/`) and maps it to one canonical event with CloudEvents attributes, a provider event id and an ordering key (catalogue: `docs/events.md`) |
//! | [`domain`] | what is stored, as plain values: canonical events, outbox deliveries and dead letters, quarantined payloads, endpoints and their secret versions, retention; retry backoff |
//! | [`retention`] | the retention job: purges each tenant's old records in small batches, destroys expired secrets |
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
//! The gateway's raw route `POST /v1/webhooks/{provider}` hands each webhook to
//! [`api`]'s `Ingest` untouched; [`start`] opens the store and returns the gRPC server, and the
//! composition root runs the dispatcher and the retention job beside it.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod normalize;
pub mod retention;
pub mod signature;
pub mod store;

use std::sync::Arc;

use maxai_kit::{config::StorageConfig, sealed::MasterKey, storage, storage::Migrations};
use maxai_proto::maxai::webhook::v1::webhook_ingress_service_server::WebhookIngressServiceServer;
use sqlx::migrate::Migrator;

/// Full gRPC name of the service, for health, reflection and the gateway.
pub const SERVICE_NAME: &str = "maxai.webhook.v1.WebhookIngressService";

/// Storage name: PostgreSQL schema `webhook`, SQLite file `webhook.db`.
pub const STORAGE_NAME: &str = "webhook";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/webhook/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/webhook/sqlite");

/// The webhook ingress migrations, one set per dialect.
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// What [`start`] gives the composition root.
pub struct Started {
    pub server: WebhookIngressServiceServer<api::WebhookApi>,
    /// For the dispatcher and the retention job.
    pub store: Arc<dyn store::EventStore>,
    /// Notified whenever an event is stored: the dispatcher's wake-up.
    pub stored: Arc<tokio::sync::Notify>,
}

/// Opens storage (running migrations), parses the providers' keys (a bad key stops the
/// process) and returns the gRPC server with the store behind it.
pub async fn start(
    config: &config::WebhookConfig,
    storage_config: &StorageConfig,
    master: MasterKey,
    max_message_bytes: usize,
) -> anyhow::Result<Started> {
    let keys = Arc::new(config::ProviderKeys::load(config)?);
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let store: Arc<dyn store::EventStore> = Arc::new(store::SqlEventStore::new(db));
    let committer = Arc::new(store::GroupCommitter::spawn(
        store.clone(),
        store::GroupCommitConfig::default(),
    ));
    let stored = Arc::new(tokio::sync::Notify::new());
    let api = api::WebhookApi::new(
        store.clone(),
        committer,
        Arc::new(master),
        Arc::new(config.clone()),
        keys,
        Some(stored.clone()),
    );
    Ok(Started {
        server: WebhookIngressServiceServer::new(api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        store,
        stored,
    })
}
