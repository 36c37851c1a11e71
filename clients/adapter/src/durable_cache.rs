//! A [`Cache`] kept in the adapters' own database (SQLite file or PostgreSQL schema
//! `adapters`), for processes without Redis: the embedded default would otherwise keep the
//! Twilio adapter's at-most-once records in memory, and a restart between a send and the
//! orchestrator's record of it would send the same SMS again.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use maxai_kit::{
    config::StorageConfig,
    on_db,
    shared_state::Cache,
    storage::{self, now_micros, Db, Migrations},
};
use sqlx::migrate::Migrator;

/// The database's name among the platform's services.
pub const STORAGE_NAME: &str = "adapters";
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/adapters/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/adapters/sqlite");
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};
/// Expired entries are swept on one write in this many.
const SWEEP_EVERY: u64 = 1_000;

pub struct SqlCache {
    db: Db,
    writes: AtomicU64,
}

impl SqlCache {
    /// Opens (and migrates) the adapters' database.
    pub async fn connect(storage: &StorageConfig) -> anyhow::Result<Self> {
        Ok(Self::new(
            storage::connect(storage, STORAGE_NAME, &MIGRATIONS).await?,
        ))
    }

    pub fn new(db: Db) -> Self {
        SqlCache {
            db,
            writes: AtomicU64::new(0),
        }
    }

    fn expiry(ttl: Duration) -> i64 {
        now_micros().saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX))
    }

    async fn sweep_now_and_then(&self) -> anyhow::Result<()> {
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return Ok(());
        }
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM cache_entries WHERE expires_us <= $1")
                .bind(now_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Cache for SqlCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT value FROM cache_entries WHERE key = $1 AND expires_us > $2")
                .bind(key)
                .bind(now_micros())
                .fetch_optional(pool)
                .await
        })?)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO cache_entries (key, value, expires_us) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_us = excluded.expires_us",
            )
            .bind(key)
            .bind(value)
            .bind(Self::expiry(ttl))
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        self.sweep_now_and_then().await
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<bool> {
        // One statement: the row is taken when it is new or its holder expired, atomically on
        // both engines.
        let taken = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO cache_entries (key, value, expires_us) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_us = excluded.expires_us \
                 WHERE cache_entries.expires_us <= $4",
            )
            .bind(key)
            .bind(value)
            .bind(Self::expiry(ttl))
            .bind(now_micros())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        self.sweep_now_and_then().await?;
        Ok(taken == 1)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM cache_entries WHERE key = $1")
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }
}
