//! Orchestrator: declarative flows, triggers and durable executions.
//!
//! A flow is a JSON definition (`schemas/orchestrator/flow.schema.json`, documented in
//! `docs/flows.md`): triggers (canonical event type + CEL filter, cron schedule in a time zone,
//! manual) and steps (port `call`, `if`/`switch`, `set`, `fail`, `foreach`, `delay`/`waitUntil`,
//! `delegate` to n8n) that run in order or jump forward by id. Versions go draft → active →
//! retired; an active version is immutable and every execution is pinned to the version it
//! started on.
//!
//! Fidelity choices: executions are rows, not tasks — workers claim them with expiring leases,
//! checkpoint after every step and sleep in the database, so any replica resumes any execution
//! from its last finished step. Port calls carry an idempotency key derived from execution,
//! step and loop index, the same on every retry and resume, so a port that honours it performs
//! the operation once even when a worker died after sending. Claims are fair across tenants
//! (fewest running first) and respect per-tenant, per-flow, per-client and global caps.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | `[orchestrator]` settings |
//! | [`domain`] | flow model, validation with JSONPaths, CEL, names and states (pure) |
//! | [`store`] | `OrchestratorStore`, its SQL implementation and conformance suite |
//! | [`engine`] | workers, leases, step execution, port calls |
//! | [`schedule`] | cron slots and the once-per-slot scheduler |
//! | [`api`] | `OrchestratorService` |
//! | [`consumer`] | `EventConsumerService` |
//! | [`convert`] | proto ⇄ domain |
//! | [`metrics`] | metric names |
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod consumer;
pub mod convert;
pub mod domain;
pub mod engine;
pub mod metrics;
pub mod schedule;
pub mod store;

use std::sync::Arc;

use maxai_kit::{
    config::StorageConfig,
    storage::{self, Migrations},
    CancellationToken,
};
use maxai_proto::maxai::{
    orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer,
    webhook::v1::event_consumer_service_server::EventConsumerServiceServer,
};
use sqlx::migrate::Migrator;

pub use config::OrchestratorConfig;
pub use engine::{Credential, Engine, PortCaller};

/// Full gRPC names of the services, for health and reflection.
pub const SERVICE_NAMES: [&str; 2] = [
    "maxai.orchestrator.v1.OrchestratorService",
    "maxai.webhook.v1.EventConsumerService",
];
/// Storage name: PostgreSQL schema `orchestrator`, SQLite file `orchestrator.db`; migrations
/// live in `migrations/orchestrator/{postgres,sqlite}`.
pub const STORAGE_NAME: &str = "orchestrator";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/orchestrator/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/orchestrator/sqlite");

pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// What `start` hands the composition root.
pub struct Servers {
    pub orchestrator: OrchestratorServiceServer<api::OrchestratorApi>,
    pub consumer: EventConsumerServiceServer<consumer::Consumer>,
    pub engine: Arc<Engine>,
    /// Workers and the scheduler; they stop at `shutdown` (workers after draining, up to
    /// `drain_ms`), so await them before exiting.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens storage (running migrations) and starts the workers and the scheduler.
pub async fn start(
    config: &OrchestratorConfig,
    storage_config: &StorageConfig,
    ports: PortCaller,
    shutdown: CancellationToken,
) -> anyhow::Result<Servers> {
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let store: Arc<dyn store::OrchestratorStore> = Arc::new(store::SqlStore::new(db));
    Ok(start_with_store(config, store, ports, shutdown, true))
}

/// Like [`start`] on an open store; `background: false` starts no workers or scheduler (tests
/// drive the engine themselves).
pub fn start_with_store(
    config: &OrchestratorConfig,
    store: Arc<dyn store::OrchestratorStore>,
    ports: PortCaller,
    shutdown: CancellationToken,
    background: bool,
) -> Servers {
    let engine = Engine::new(store.clone(), ports, config.clone());
    let mut tasks = Vec::new();
    if background {
        tasks.extend(engine.spawn_workers(shutdown.clone()));
        tasks.push(tokio::spawn(schedule::run(
            store.clone(),
            config.clone(),
            shutdown,
        )));
    }
    let max = config.max_message_bytes;
    Servers {
        orchestrator: OrchestratorServiceServer::new(api::OrchestratorApi::new(
            store.clone(),
            engine.clone(),
            config.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
        consumer: EventConsumerServiceServer::new(consumer::Consumer::new(
            store,
            engine.clone(),
            config.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max),
        engine,
        tasks,
    }
}
