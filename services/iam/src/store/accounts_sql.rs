//! Service accounts and API keys in SQL (both dialects).
use async_trait::async_trait;
use maxai_kit::{on_db, storage::now_micros, Error, ErrorKind, Result};

use super::{sql::SqlIamStore, AccountStore};
use crate::domain::{ApiKey, ServiceAccount};

const ACCOUNT_COLUMNS: &str =
    "tenant_id, id, display_name, description, disabled, revision, created_at_us, updated_at_us";
const KEY_COLUMNS: &str = "tenant_id, account_id, id, display_name, secret_prefix, secret_hash, expire_at_us, last_use_at_us, created_at_us";

#[derive(sqlx::FromRow)]
struct AccountRow {
    tenant_id: String,
    id: String,
    display_name: String,
    description: String,
    disabled: bool,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl From<AccountRow> for ServiceAccount {
    fn from(r: AccountRow) -> Self {
        let AccountRow {
            tenant_id,
            id,
            display_name,
            description,
            disabled,
            revision,
            created_at_us,
            updated_at_us,
        } = r;
        ServiceAccount {
            tenant_id,
            id,
            display_name,
            description,
            disabled,
            revision,
            created_at_us,
            updated_at_us,
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    tenant_id: String,
    account_id: String,
    id: String,
    display_name: String,
    secret_prefix: String,
    secret_hash: String,
    expire_at_us: Option<i64>,
    last_use_at_us: Option<i64>,
    created_at_us: i64,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        let KeyRow {
            tenant_id,
            account_id,
            id,
            display_name,
            secret_prefix,
            secret_hash,
            expire_at_us,
            last_use_at_us,
            created_at_us,
        } = r;
        ApiKey {
            tenant_id,
            account_id,
            id,
            display_name,
            secret_prefix,
            secret_hash,
            expire_at_us,
            last_use_at_us,
            created_at_us,
        }
    }
}

#[async_trait]
impl AccountStore for SqlIamStore {
    async fn create_account(
        &self,
        a: &ServiceAccount,
        request_id: Option<&str>,
    ) -> Result<ServiceAccount> {
        let by_request = format!("SELECT {ACCOUNT_COLUMNS} FROM service_accounts WHERE tenant_id = $1 AND create_request_id = $2");
        if let Some(rid) = request_id {
            let row: Option<AccountRow> = on_db!(self.db(), |pool| sqlx::query_as(&by_request)
                .bind(&a.tenant_id)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return Ok(row.into());
            }
        }
        let inserted = on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO service_accounts (tenant_id, id, display_name, description, disabled, revision, create_request_id, created_at_us, updated_at_us) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)"
        )
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(&a.display_name)
        .bind(&a.description)
        .bind(a.disabled)
        .bind(request_id)
        .bind(now_micros())
        .execute(pool)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(()) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("service account {} already exists", a.name()),
                ))
            }
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(Error::not_found(format!("tenant {}", a.tenant_id)))
            }
            Err(e) => return Err(e.into()),
        }
        self.get_account(&a.tenant_id, &a.id)
            .await?
            .ok_or_else(|| Error::not_found(a.name()))
    }

    async fn get_account(&self, tenant_id: &str, id: &str) -> Result<Option<ServiceAccount>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM service_accounts WHERE tenant_id = $1 AND id = $2"
        );
        let row: Option<AccountRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    async fn list_accounts(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ServiceAccount>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM service_accounts WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3");
        let rows: Vec<AccountRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn update_account(
        &self,
        a: &ServiceAccount,
        expected_revision: i64,
    ) -> Result<ServiceAccount> {
        let n = on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE service_accounts SET display_name = $3, description = $4, disabled = $5, revision = revision + 1, updated_at_us = $6 \
             WHERE tenant_id = $1 AND id = $2 AND revision = $7"
        )
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(&a.display_name)
        .bind(&a.description)
        .bind(a.disabled)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|x| x.rows_affected())
        })?;
        match (n, self.get_account(&a.tenant_id, &a.id).await?) {
            (1, Some(x)) => Ok(x),
            (_, Some(_)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("{} was changed by someone else; read it again", a.name()),
            )),
            (_, None) => Err(Error::not_found(a.name())),
        }
    }

    async fn delete_account(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let principal = format!("tenants/{tenant_id}/serviceAccounts/{id}");
        let deleted: std::result::Result<u64, sqlx::Error> = on_db!(self.db(), |pool| {
            async {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1 AND account_id = $2").bind(tenant_id).bind(id).execute(&mut *tx).await?;
            let n = sqlx::query("DELETE FROM service_accounts WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR revision = $3)")
                .bind(tenant_id)
                .bind(id)
                .bind(expected_revision.unwrap_or(-1))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                // Keep the keys: the account stays.
                tx.rollback().await?;
                return Ok(n);
            }
            sqlx::query("DELETE FROM role_assignments WHERE tenant_id = $1 AND principal = $2").bind(tenant_id).bind(&principal).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n)
        }
        .await
        });
        match (deleted?, self.get_account(tenant_id, id).await?) {
            (1, _) => Ok(()),
            (_, Some(_)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("{principal} was changed by someone else; read it again"),
            )),
            (_, None) => Err(Error::not_found(principal)),
        }
    }

    async fn create_key(&self, k: &ApiKey, request_id: Option<&str>) -> Result<(ApiKey, bool)> {
        let by_request = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND account_id = $2 AND create_request_id = $3");
        let earlier = |rid: &str| {
            let sql = by_request.clone();
            let (t, a, rid) = (k.tenant_id.clone(), k.account_id.clone(), rid.to_owned());
            async move {
                let row: Option<KeyRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
                    .bind(&t)
                    .bind(&a)
                    .bind(&rid)
                    .fetch_optional(pool)
                    .await)?;
                Ok::<_, Error>(row.map(ApiKey::from))
            }
        };
        if let Some(rid) = request_id {
            if let Some(found) = earlier(rid).await? {
                return Ok((found, false));
            }
        }
        let sql = format!("INSERT INTO api_keys ({KEY_COLUMNS}, create_request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9)");
        let inserted = on_db!(self.db(), |pool| sqlx::query(&sql)
            .bind(&k.tenant_id)
            .bind(&k.account_id)
            .bind(&k.id)
            .bind(&k.display_name)
            .bind(&k.secret_prefix)
            .bind(&k.secret_hash)
            .bind(k.expire_at_us)
            .bind(now_micros())
            .bind(request_id)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => {}
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(Error::not_found(format!(
                    "tenants/{}/serviceAccounts/{}",
                    k.tenant_id, k.account_id
                )))
            }
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                // A concurrent retry of the same request made it.
                if let Some(found) = match request_id {
                    Some(rid) => earlier(rid).await?,
                    None => None,
                } {
                    return Ok((found, false));
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "an API key with this secret already exists",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let made = self
            .get_key(&k.tenant_id, &k.account_id, &k.id)
            .await?
            .ok_or_else(|| Error::not_found(k.name()))?;
        Ok((made, true))
    }

    async fn get_key(&self, tenant_id: &str, account_id: &str, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND account_id = $2 AND id = $3");
        let row: Option<KeyRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(account_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    async fn list_keys(
        &self,
        tenant_id: &str,
        account_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND account_id = $2 AND id > $3 ORDER BY id LIMIT $4");
        let rows: Vec<KeyRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(account_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn delete_key(&self, tenant_id: &str, account_id: &str, id: &str) -> Result<()> {
        let n = on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM api_keys WHERE tenant_id = $1 AND account_id = $2 AND id = $3"
        )
        .bind(tenant_id)
        .bind(account_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|x| x.rows_affected()))?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "tenants/{tenant_id}/serviceAccounts/{account_id}/apiKeys/{id}"
            )))
        }
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1");
        let row: Option<KeyRow> = on_db!(self.db(), |pool| sqlx::query_as(&sql)
            .bind(hash)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }
}
