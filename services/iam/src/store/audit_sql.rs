//! The audit chain in SQL (both dialects).
use async_trait::async_trait;
use maxai_kit::{on_db, Error, ErrorKind, Result};

use super::{sql::SqlIamStore, AuditFilter, AuditStore};
use crate::domain::{chain_hash, AuditEntry, AuditRecord, GENESIS_HASH};

const COLUMNS: &str = "tenant_id, seq, occur_at_us, actor, action, permission, resource, client, outcome, status_code, reason, \
                       request_id, ip_address, user_agent, details, previous_hash, hash";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    seq: i64,
    occur_at_us: i64,
    actor: String,
    action: String,
    permission: String,
    resource: String,
    client: String,
    outcome: String,
    status_code: String,
    reason: String,
    request_id: String,
    ip_address: String,
    user_agent: String,
    details: String,
    previous_hash: String,
    hash: String,
}

impl From<Row> for AuditEntry {
    fn from(r: Row) -> AuditEntry {
        let Row {
            tenant_id,
            seq,
            occur_at_us,
            actor,
            action,
            permission,
            resource,
            client,
            outcome,
            status_code,
            reason,
            request_id,
            ip_address,
            user_agent,
            details,
            previous_hash,
            hash,
        } = r;
        AuditEntry {
            tenant_id,
            seq,
            occur_at_us,
            record: AuditRecord {
                actor,
                action,
                permission,
                resource,
                client,
                outcome,
                status_code,
                reason,
                request_id,
                ip_address,
                user_agent,
                details,
            },
            previous_hash,
            hash,
        }
    }
}

/// Appends racing for the same sequence retry this many times before giving up.
const APPEND_ATTEMPTS: usize = 8;

#[async_trait]
impl AuditStore for SqlIamStore {
    async fn append(
        &self,
        tenant_id: &str,
        occur_at_us: i64,
        r: &AuditRecord,
    ) -> Result<AuditEntry> {
        for _ in 0..APPEND_ATTEMPTS {
            let last: Option<(i64, String)> = on_db!(self.db(), |pool| {
                sqlx::query_as(
                "SELECT seq, hash FROM audit_entries WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1"
            )
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
            })?;
            let last = match last {
                Some(l) => Some(l),
                None => self.anchor(tenant_id).await?,
            };
            let (seq, prev) = match last {
                Some((s, h)) => (s + 1, h),
                None => (1, GENESIS_HASH.to_owned()),
            };
            let hash = chain_hash(&prev, tenant_id, seq, occur_at_us, r);
            let sql = format!("INSERT INTO audit_entries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)");
            let inserted = on_db!(self.db(), |pool| sqlx::query(&sql)
                .bind(tenant_id)
                .bind(seq)
                .bind(occur_at_us)
                .bind(&r.actor)
                .bind(&r.action)
                .bind(&r.permission)
                .bind(&r.resource)
                .bind(&r.client)
                .bind(&r.outcome)
                .bind(&r.status_code)
                .bind(&r.reason)
                .bind(&r.request_id)
                .bind(&r.ip_address)
                .bind(&r.user_agent)
                .bind(&r.details)
                .bind(&prev)
                .bind(&hash)
                .execute(pool)
                .await
                .map(|_| ()));
            match inserted {
                Ok(()) => {
                    return Ok(AuditEntry {
                        tenant_id: tenant_id.to_owned(),
                        seq,
                        occur_at_us,
                        record: r.clone(),
                        previous_hash: prev,
                        hash,
                    })
                }
                // Another writer took this sequence: read the new head and link to it.
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "the audit chain is busy; try again",
        ))
    }

    async fn get_entry(&self, tenant_id: &str, seq: i64) -> Result<Option<AuditEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq = $2");
        let row: Option<Row> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(seq)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(AuditEntry::from))
    }

    async fn list_entries(
        &self,
        tenant_id: &str,
        f: &AuditFilter,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq < $2 \
             AND ($3 = '' OR actor = $3) AND occur_at_us >= $4 AND occur_at_us < $5 \
             AND ($6 = '' OR resource = $6 OR resource LIKE $7 ESCAPE '\\') AND ($8 = '' OR outcome = $8) \
             AND ($9 = '' OR action = $9 OR permission = $9) ORDER BY seq DESC LIMIT $10"
        );
        let resource = f.resource.clone().unwrap_or_default();
        // Escape LIKE wildcards in names so the prefix match is literal.
        let inside = format!(
            "{}/%",
            resource
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows: Vec<Row> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(f.actor.as_deref().unwrap_or(""))
            .bind(f.start_us.unwrap_or(i64::MIN))
            .bind(f.end_us.unwrap_or(i64::MAX))
            .bind(&resource)
            .bind(&inside)
            .bind(f.outcome.as_deref().unwrap_or(""))
            .bind(f.action.as_deref().unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    async fn chain_range(
        &self,
        tenant_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4");
        let rows: Vec<Row> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    async fn anchor(&self, tenant_id: &str) -> Result<Option<(i64, String)>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT seq, hash FROM audit_anchors WHERE tenant_id = $1"
        )
        .bind(tenant_id)
        .fetch_optional(pool)
        .await)?)
    }

    async fn purge(
        &self,
        tenant_id: &str,
        before_us: i64,
        dry_run: bool,
    ) -> Result<(i64, Option<(i64, String)>)> {
        // Only a prefix of the chain goes: up to the entry before the first one that is young
        // enough to keep, so the remaining chain stays contiguous.
        let first_kept: Option<i64> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MIN(seq) FROM audit_entries WHERE tenant_id = $1 AND occur_at_us >= $2"
        )
        .bind(tenant_id)
        .bind(before_us)
        .fetch_one(pool)
        .await)?;
        let last: Option<(i64, String)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT seq, hash FROM audit_entries WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1"
        )
        .bind(tenant_id)
        .bind(first_kept.unwrap_or(i64::MAX))
        .fetch_optional(pool)
        .await
        })?;
        let Some((last_seq, last_hash)) = last else {
            return Ok((0, None));
        };
        let count: i64 = on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_entries WHERE tenant_id = $1 AND seq <= $2"
        )
        .bind(tenant_id)
        .bind(last_seq)
        .fetch_one(pool)
        .await)?;
        if dry_run {
            return Ok((count, Some((last_seq, last_hash))));
        }
        let outcome: std::result::Result<(), sqlx::Error> = on_db!(self.db(), |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO audit_anchors (tenant_id, seq, hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(tenant_id)
            .bind(last_seq)
            .bind(&last_hash)
            .execute(&mut *tx)
            .await?;
            // Anchor and removal commit together, so the chain always verifies.
            sqlx::query("DELETE FROM audit_entries WHERE tenant_id = $1 AND seq <= $2")
                .bind(tenant_id)
                .bind(last_seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await);
        outcome?;
        Ok((count, Some((last_seq, last_hash))))
    }
}
