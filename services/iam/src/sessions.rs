//! Refresh tokens: opaque, single-use, rotated on every refresh within a family that expires
//! at a fixed time. Presenting a spent token again means it leaked: the whole family is
//! revoked, so neither the thief nor the owner can go on with it (OAuth 2.0 Security BCP §4.14).
use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use maxai_kit::{on_db, storage::now_micros, storage::Db, Error, ErrorKind, Result};
use rand::RngCore;

use crate::domain::secret_hash;

/// A refresh token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub family_expires_at_us: i64,
}

/// Who a spent refresh token was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub tenant_id: String,
    pub principal: String,
}

/// What presenting a refresh token came to.
#[derive(Debug)]
pub enum Refresh {
    Rotated(Holder, Issued),
    /// The token had been spent before: its family is now revoked.
    Reused(Holder),
}

pub struct RefreshTokens {
    db: Db,
    lifetime: Duration,
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("mxr_{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn refused() -> Error {
    Error::new(ErrorKind::Unauthenticated, "the refresh token is not valid")
}

type Row = (String, String, String, i64, Option<i64>, Option<i64>);

impl RefreshTokens {
    pub fn new(db: Db, lifetime: Duration) -> Self {
        RefreshTokens { db, lifetime }
    }

    /// Starts a new family for `principal` (a sign-in).
    pub async fn issue(&self, tenant_id: &str, principal: &str) -> Result<Issued> {
        let now = now_micros();
        let family_expires_at_us =
            now + i64::try_from(self.lifetime.as_micros()).unwrap_or(i64::MAX);
        let family = uuid::Uuid::now_v7().to_string();
        self.insert(&family, tenant_id, principal, now, family_expires_at_us)
            .await
    }

    async fn insert(
        &self,
        family: &str,
        tenant_id: &str,
        principal: &str,
        now: i64,
        family_expires_at_us: i64,
    ) -> Result<Issued> {
        let token = new_token();
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, principal, issued_at_us, family_expires_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(secret_hash(&token))
            .bind(family)
            .bind(tenant_id)
            .bind(principal)
            .bind(now)
            .bind(family_expires_at_us)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(Issued {
            token,
            family_expires_at_us,
        })
    }

    /// Spends `token` and issues its successor, or detects reuse and revokes the family.
    pub async fn refresh(&self, token: &str) -> Result<Refresh> {
        let hash = secret_hash(token);
        let now = now_micros();
        let row: Option<Row> = on_db!(&self.db, |pool| {
            // Revoked is a property of the family: a successor written while its family was
            // being revoked (two refreshes of one token racing) carries no mark of its own.
            sqlx::query_as(
                "SELECT t.family_id, t.tenant_id, t.principal, t.family_expires_at_us, t.used_at_us, \
                 (SELECT MAX(f.revoked_at_us) FROM refresh_tokens f WHERE f.family_id = t.family_id) \
                 FROM refresh_tokens t WHERE t.token_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await
        })?;
        let (family, tenant_id, principal, family_expires, used, revoked) =
            row.ok_or_else(refused)?;
        let holder = Holder {
            tenant_id,
            principal,
        };
        if revoked.is_some() || family_expires <= now {
            return Err(refused());
        }
        // The conditional update decides between two concurrent refreshes of one token: the
        // loser finds it spent, exactly as a replay would.
        let spent = match used {
            Some(_) => 0,
            None => on_db!(&self.db, |pool| {
                sqlx::query(
                    "UPDATE refresh_tokens SET used_at_us = $1 WHERE token_hash = $2 AND used_at_us IS NULL",
                )
                .bind(now)
                .bind(&hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?,
        };
        if spent == 0 {
            self.revoke_family(&family).await?;
            return Ok(Refresh::Reused(holder));
        }
        let next = self
            .insert(
                &family,
                &holder.tenant_id,
                &holder.principal,
                now,
                family_expires,
            )
            .await?;
        Ok(Refresh::Rotated(holder, next))
    }

    /// Revokes the family `token` belongs to; `None` when the token is unknown.
    pub async fn revoke(&self, token: &str) -> Result<Option<Holder>> {
        let row: Option<(String, String, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT family_id, tenant_id, principal FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(secret_hash(token))
            .fetch_optional(pool)
            .await
        })?;
        let Some((family, tenant_id, principal)) = row else {
            return Ok(None);
        };
        self.revoke_family(&family).await?;
        Ok(Some(Holder {
            tenant_id,
            principal,
        }))
    }

    async fn revoke_family(&self, family: &str) -> Result<()> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at_us = $1 WHERE family_id = $2 AND revoked_at_us IS NULL",
            )
            .bind(now_micros())
            .bind(family)
            .execute(pool)
            .await
            .map(|_| ())
        })?)
    }
}
