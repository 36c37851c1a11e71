//! Retention settings and the purge: small batches, each its own short transaction, so old
//! payloads really go without holding locks that stall ingestion or delivery.
use maxai_kit::{on_db, storage::Db, Error, Result};

use super::stale;
use crate::domain::{Cutoffs, Purged, RetentionSettings};

const COLUMNS: &str = "tenant_id, event_retention_secs, quarantine_retention_secs, \
     dead_letter_retention_secs, revision, updated_at_us";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    event_retention_secs: Option<i64>,
    quarantine_retention_secs: Option<i64>,
    dead_letter_retention_secs: Option<i64>,
    revision: i64,
    updated_at_us: i64,
}

impl From<Row> for RetentionSettings {
    fn from(r: Row) -> RetentionSettings {
        let Row {
            tenant_id,
            event_retention_secs,
            quarantine_retention_secs,
            dead_letter_retention_secs,
            revision,
            updated_at_us,
        } = r;
        RetentionSettings {
            tenant_id,
            event_retention_secs,
            quarantine_retention_secs,
            dead_letter_retention_secs,
            revision,
            updated_at_us,
        }
    }
}

pub(super) async fn get(db: &Db, tenant_id: &str) -> Result<Option<RetentionSettings>> {
    let sql = format!("SELECT {COLUMNS} FROM retention_settings WHERE tenant_id = $1");
    let row: Option<Row> = on_db!(db, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row.map(Into::into))
}

pub(super) async fn put(
    db: &Db,
    s: &RetentionSettings,
    expected_revision: Option<i64>,
    now_us: i64,
) -> Result<RetentionSettings> {
    if s.tenant_id.is_empty() {
        return Err(Error::invalid(
            "event_retention_settings.name",
            "names no tenant",
        ));
    }
    let sql = match expected_revision {
        None => format!(
            "INSERT INTO retention_settings ({COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
             event_retention_secs = excluded.event_retention_secs, \
             quarantine_retention_secs = excluded.quarantine_retention_secs, \
             dead_letter_retention_secs = excluded.dead_letter_retention_secs, \
             revision = retention_settings.revision + 1, updated_at_us = excluded.updated_at_us \
             RETURNING {COLUMNS}"
        ),
        Some(0) => format!(
            "INSERT INTO retention_settings ({COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5) \
             ON CONFLICT (tenant_id) DO NOTHING RETURNING {COLUMNS}"
        ),
        Some(_) => format!(
            "UPDATE retention_settings SET event_retention_secs = $2, \
             quarantine_retention_secs = $3, dead_letter_retention_secs = $4, \
             revision = revision + 1, updated_at_us = $5 \
             WHERE tenant_id = $1 AND revision = $6 RETURNING {COLUMNS}"
        ),
    };
    let row: Option<Row> = on_db!(db, |pool| {
        let q = sqlx::query_as(&sql)
            .bind(&s.tenant_id)
            .bind(s.event_retention_secs)
            .bind(s.quarantine_retention_secs)
            .bind(s.dead_letter_retention_secs)
            .bind(now_us);
        match expected_revision {
            Some(r) if r != 0 => q.bind(r),
            _ => q,
        }
        .fetch_optional(pool)
        .await
    })?;
    row.map(Into::into)
        .ok_or_else(|| stale("the retention settings"))
}

pub(super) async fn purge(
    db: &Db,
    tenant_id: &str,
    cutoffs: &Cutoffs,
    batch_size: i64,
) -> Result<Purged> {
    let batch = batch_size.max(1);
    let mut purged = Purged::default();
    // An event goes once nothing is left to deliver: no pending row, and no dead letter that
    // is still within its own retention. Its outbox rows and attempts cascade with it.
    loop {
        let n = on_db!(db, |pool| sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e \
             WHERE e.tenant_id = $1 AND e.received_at_us < $2 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id \
                 AND (o.state = 'pending' OR (o.state = 'dead' AND o.updated_at_us >= $3))) \
             ORDER BY e.received_at_us LIMIT $4)"
        )
        .bind(tenant_id)
        .bind(cutoffs.events_before_us)
        .bind(cutoffs.dead_letters_before_us)
        .bind(batch)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        purged.events += n;
        if n < batch as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = on_db!(db, |pool| sqlx::query(
            "DELETE FROM quarantined_events WHERE id IN (SELECT id FROM quarantined_events \
             WHERE tenant_id = $1 AND received_at_us < $2 ORDER BY received_at_us LIMIT $3)"
        )
        .bind(tenant_id)
        .bind(cutoffs.quarantine_before_us)
        .bind(batch)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        purged.quarantined += n;
        if n < batch as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(purged)
}

/// Distinct tenants of `table` after `after` by a loose index scan: one index probe per tenant
/// instead of a scan of every row.
async fn tenants_of(db: &Db, table: &str, after: &str, limit: i64) -> Result<Vec<String>> {
    let sql = format!(
        "WITH RECURSIVE t(tenant_id, n) AS ( \
         SELECT (SELECT MIN(tenant_id) FROM {table} WHERE tenant_id > $1), 1 \
         UNION ALL \
         SELECT (SELECT MIN(x.tenant_id) FROM {table} x WHERE x.tenant_id > t.tenant_id), t.n + 1 \
         FROM t WHERE t.tenant_id IS NOT NULL AND t.n < $2) \
         SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL ORDER BY tenant_id"
    );
    let rows: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

pub(super) async fn tenants_with_records(
    db: &Db,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let limit = limit.max(0);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let after = after.unwrap_or("");
    let mut all = tenants_of(db, "events", after, limit).await?;
    all.extend(tenants_of(db, "quarantined_events", after, limit).await?);
    all.sort();
    all.dedup();
    all.truncate(limit as usize);
    Ok(all)
}
