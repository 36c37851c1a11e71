//! Storage: one sqlx pool per service, chosen by URL scheme — PostgreSQL (one schema per
//! service) or SQLite (one WAL file per service) — with the service's embedded migrations for
//! that dialect applied before the pool is handed out.
use std::{str::FromStr, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions, Connection, PgPool, SqlitePool,
};

use crate::config::StorageConfig;

/// A service's database.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    pub fn dialect(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }
    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}

/// Runs the same expression against whichever pool a [`Db`] holds. Queries written once work
/// on both dialects when their SQL does (`$1` placeholders, `ON CONFLICT`, `RETURNING` do).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::storage::Db::Postgres($pool) => $body,
            $crate::storage::Db::Sqlite($pool) => $body,
        }
    };
}

/// A service's migrations, one set per dialect, with the same names in both.
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// Opens (and migrates) the database of `service`.
pub async fn connect(
    cfg: &StorageConfig,
    service: &str,
    migrations: &Migrations,
) -> anyhow::Result<Db> {
    let url = cfg.database_url.expose_secret();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        connect_postgres(url, service, cfg.max_connections, migrations.postgres).await
    } else if url.is_empty() || url.starts_with("sqlite://") {
        let dir = match url.strip_prefix("sqlite://") {
            Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
            _ => cfg.data_dir.clone(),
        };
        connect_sqlite(&dir, service, cfg.max_connections, migrations.sqlite).await
    } else {
        anyhow::bail!("storage.database_url: unsupported scheme (use postgres://, postgresql:// or sqlite://)")
    }
}

fn schema_name(service: &str) -> String {
    service.replace('-', "_")
}

async fn connect_postgres(
    url: &str,
    service: &str,
    max: u32,
    migrator: &Migrator,
) -> anyhow::Result<Db> {
    let schema = schema_name(service);
    let base = PgConnectOptions::from_str(url)?.disable_statement_logging();
    let mut conn = base.connect().await?;
    // Two replicas starting together both try this; IF NOT EXISTS can still race on the catalog.
    if let Err(e) = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut conn)
        .await
    {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            return Err(e.into());
        }
    }
    conn.close().await?;
    let opts = base.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(max.max(2))
        .acquire_timeout(Duration::from_secs(5))
        // No ping before every acquire (a round trip per query): a broken connection fails one
        // query and is dropped, and idle connections are recycled before servers drop them.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
        .connect_with(opts)
        .await?;
    migrator.run(&pool).await?;
    Ok(Db::Postgres(pool))
}

async fn connect_sqlite(
    dir: &std::path::Path,
    service: &str,
    max: u32,
    migrator: &Migrator,
) -> anyhow::Result<Db> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!("{}.db", schema_name(service)));
    let opts = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode is durable against process crashes, which is what the embedded
        // default promises; power-loss durability is PostgreSQL's job.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(max.clamp(1, 16))
        .acquire_timeout(Duration::from_secs(5))
        // A local file cannot go away under an open connection; the ping is pure overhead.
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    migrator.run(&pool).await?;
    Ok(Db::Sqlite(pool))
}

/// Microseconds since the Unix epoch (UTC): how timestamps are stored, identically in both dialects.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
