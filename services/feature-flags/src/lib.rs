//! Feature flags: the reference service every other service copies.
//!
//! Flags (`flags/{key}`) have a stage (alpha, beta, GA), a state per environment (on/off, a
//! percentage rollout by a stable hash of flag key and tenant or user), tenant and user
//! allowlists stored as indexed sets (edited by add/remove, evaluated in constant time), and
//! prerequisite flags. Evaluation is server-side, single or batch, and explains which rule
//! decided. Each replica evaluates from an in-memory snapshot that follows changes through the
//! kit's notifier (Redis pub/sub across replicas, memory in one process).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | `[flags]` settings |
//! | [`domain`] | flag model and evaluation rules (pure) |
//! | [`store`] | `FlagStore` trait, its SQL implementation and conformance suite |
//! | [`view`] | the replica's snapshot and its change following |
//! | [`convert`] | proto ⇄ domain |
//! | [`api`] | the tonic service |
//! | [`metrics`] | metric names |
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod convert;
pub mod domain;
pub mod metrics;
pub mod store;
pub mod view;

use std::{sync::Arc, time::Duration};

use maxai_kit::{
    config::StorageConfig,
    shared_state::SharedState,
    storage::{self, Migrations},
    CancellationToken,
};
use maxai_proto::maxai::flags::v1::feature_flags_service_server::FeatureFlagsServiceServer;
use sqlx::migrate::Migrator;

pub use config::FlagsConfig;

/// Full gRPC name of the service, for health and reflection.
pub const SERVICE_NAME: &str = "maxai.flags.v1.FeatureFlagsService";
/// Storage name: PostgreSQL schema `flags`, SQLite file `flags.db`.
pub const STORAGE_NAME: &str = "flags";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/flags/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/flags/sqlite");

pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// Opens storage (running migrations), loads the flag snapshot and returns the gRPC server.
pub async fn start(
    config: &FlagsConfig,
    storage_config: &StorageConfig,
    shared: &SharedState,
    max_message_bytes: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<FeatureFlagsServiceServer<api::FlagsApi>> {
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let store: Arc<dyn store::FlagStore> = Arc::new(store::SqlFlagStore::new(db));
    let refresh = Duration::from_secs(config.full_refresh_secs.max(1));
    let view =
        view::FlagView::start(store.clone(), shared.notifier.clone(), refresh, shutdown).await?;
    Ok(
        FeatureFlagsServiceServer::new(api::FlagsApi::new(store, view, config.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}
