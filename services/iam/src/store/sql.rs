use std::collections::BTreeMap;

use async_trait::async_trait;
use maxai_kit::{
    on_db,
    storage::{now_micros, Db},
    Error, ErrorKind, Result,
};

use super::TenancyStore;
use crate::domain::{Client, ClientState, RateLimits, Tenant, TenantState};

/// IAM rows in the service's own PostgreSQL schema or SQLite file.
#[derive(Clone, Debug)]
pub struct SqlIamStore {
    db: Db,
}

impl SqlIamStore {
    pub fn new(db: Db) -> Self {
        SqlIamStore { db }
    }
    pub(super) fn db(&self) -> &Db {
        &self.db
    }
}

fn corrupt(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("stored row has an unreadable {what}"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn stale(what: String) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("{what} was changed by someone else; read it again"),
    )
}

const TENANT_COLUMNS: &str =
    "id, display_name, state, contact_email, rate_limits, audit_retention_secs, labels, revision, created_at_us, updated_at_us, deleted_at_us";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    display_name: String,
    state: String,
    contact_email: String,
    rate_limits: String,
    audit_retention_secs: i64,
    labels: String,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
    deleted_at_us: Option<i64>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = Error;
    fn try_from(r: TenantRow) -> Result<Tenant> {
        let TenantRow {
            id,
            display_name,
            state,
            contact_email,
            rate_limits,
            audit_retention_secs,
            labels,
            revision,
            created_at_us,
            updated_at_us,
            deleted_at_us,
        } = r;
        Ok(Tenant {
            id,
            display_name,
            state: TenantState::parse(&state).ok_or_else(|| corrupt("tenant state"))?,
            contact_email,
            rate_limits: serde_json::from_str::<RateLimits>(&rate_limits)
                .map_err(|_| corrupt("rate limits"))?,
            audit_retention_secs,
            labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)
                .map_err(|_| corrupt("labels"))?,
            revision,
            created_at_us,
            updated_at_us,
            deleted_at_us,
        })
    }
}

const CLIENT_COLUMNS: &str =
    "tenant_id, id, display_name, state, time_zone, website, contact_email, labels, revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct ClientRow {
    tenant_id: String,
    id: String,
    display_name: String,
    state: String,
    time_zone: String,
    website: String,
    contact_email: String,
    labels: String,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl TryFrom<ClientRow> for Client {
    type Error = Error;
    fn try_from(r: ClientRow) -> Result<Client> {
        let ClientRow {
            tenant_id,
            id,
            display_name,
            state,
            time_zone,
            website,
            contact_email,
            labels,
            revision,
            created_at_us,
            updated_at_us,
        } = r;
        Ok(Client {
            tenant_id,
            id,
            display_name,
            state: ClientState::parse(&state).ok_or_else(|| corrupt("client state"))?,
            time_zone,
            website,
            contact_email,
            labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)
                .map_err(|_| corrupt("labels"))?,
            revision,
            created_at_us,
            updated_at_us,
        })
    }
}

#[async_trait]
impl TenancyStore for SqlIamStore {
    async fn create_tenant(&self, t: &Tenant, request_id: Option<&str>) -> Result<Tenant> {
        if let Some(rid) = request_id {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE create_request_id = $1");
            let row: Option<TenantRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return row.try_into();
            }
        }
        let now = now_micros();
        let inserted = on_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO tenants (id, display_name, state, contact_email, rate_limits, audit_retention_secs, labels, revision, \
             create_request_id, created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9)"
        )
        .bind(&t.id)
        .bind(&t.display_name)
        .bind(TenantState::Active.as_str())
        .bind(&t.contact_email)
        .bind(json(&t.rate_limits)?)
        .bind(t.audit_retention_secs)
        .bind(json(&t.labels)?)
        .bind(request_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                if let Some(rid) = request_id {
                    // A concurrent retry of the same request won: answer as it did.
                    let sql = format!(
                        "SELECT {TENANT_COLUMNS} FROM tenants WHERE create_request_id = $1"
                    );
                    let row: Option<TenantRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
                        .bind(rid)
                        .fetch_optional(pool)
                        .await)?;
                    if let Some(row) = row {
                        return row.try_into();
                    }
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("tenant {} already exists", t.id),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_tenant(&t.id)
            .await?
            .ok_or_else(|| Error::not_found(format!("tenant {}", t.id)))
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row: Option<TenantRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(Tenant::try_from).transpose()
    }

    async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: i64,
        state: Option<TenantState>,
    ) -> Result<Vec<Tenant>> {
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 AND (($2 = '' AND state <> 'deleted') OR state = $2) ORDER BY id LIMIT $3"
        );
        let state = state.map(TenantState::as_str).unwrap_or("");
        let rows: Vec<TenantRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(after.unwrap_or(""))
            .bind(state)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    async fn update_tenant(&self, t: &Tenant, expected_revision: i64) -> Result<Tenant> {
        let updated = on_db!(&self.db, |pool| {
            sqlx::query(
            "UPDATE tenants SET display_name = $2, state = $3, contact_email = $4, rate_limits = $5, audit_retention_secs = $6, \
             labels = $7, deleted_at_us = $8, revision = revision + 1, updated_at_us = $9 WHERE id = $1 AND revision = $10"
        )
        .bind(&t.id)
        .bind(&t.display_name)
        .bind(t.state.as_str())
        .bind(&t.contact_email)
        .bind(json(&t.rate_limits)?)
        .bind(t.audit_retention_secs)
        .bind(json(&t.labels)?)
        .bind(t.deleted_at_us)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        match (updated, self.get_tenant(&t.id).await?) {
            (1, Some(t)) => Ok(t),
            (_, Some(_)) => Err(stale(format!("tenant {}", t.id))),
            (_, None) => Err(Error::not_found(format!("tenant {}", t.id))),
        }
    }

    async fn create_client(&self, c: &Client, request_id: Option<&str>) -> Result<Client> {
        let by_request = format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 AND create_request_id = $2"
        );
        if let Some(rid) = request_id {
            let row: Option<ClientRow> = on_db!(&self.db, |pool| sqlx::query_as(&by_request)
                .bind(&c.tenant_id)
                .bind(rid)
                .fetch_optional(pool)
                .await)?;
            if let Some(row) = row {
                return row.try_into();
            }
        }
        match self.get_tenant(&c.tenant_id).await? {
            Some(t) if t.state == TenantState::Active => {}
            Some(t) => {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("tenant {} is {}", t.id, t.state.as_str()),
                ));
            }
            None => return Err(Error::not_found(format!("tenant {}", c.tenant_id))),
        }
        let now = now_micros();
        let inserted = on_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO clients (tenant_id, id, display_name, state, time_zone, website, contact_email, labels, revision, \
             create_request_id, created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $10)"
        )
        .bind(&c.tenant_id)
        .bind(&c.id)
        .bind(&c.display_name)
        .bind(c.state.as_str())
        .bind(&c.time_zone)
        .bind(&c.website)
        .bind(&c.contact_email)
        .bind(json(&c.labels)?)
        .bind(request_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        });
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                if let Some(rid) = request_id {
                    let row: Option<ClientRow> =
                        on_db!(&self.db, |pool| sqlx::query_as(&by_request)
                            .bind(&c.tenant_id)
                            .bind(rid)
                            .fetch_optional(pool)
                            .await)?;
                    if let Some(row) = row {
                        return row.try_into();
                    }
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("client {} already exists", c.id),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_client(&c.tenant_id, &c.id)
            .await?
            .ok_or_else(|| Error::not_found(format!("client {}", c.id)))
    }

    async fn get_client(&self, tenant_id: &str, id: &str) -> Result<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 AND id = $2");
        let row: Option<ClientRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(Client::try_from).transpose()
    }

    async fn list_clients(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
        state: Option<ClientState>,
    ) -> Result<Vec<Client>> {
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 AND id > $2 AND ($3 = '' OR state = $3) ORDER BY id LIMIT $4"
        );
        let state = state.map(ClientState::as_str).unwrap_or("");
        let rows: Vec<ClientRow> = on_db!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(after.unwrap_or(""))
            .bind(state)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Client::try_from).collect()
    }

    async fn update_client(&self, c: &Client, expected_revision: i64) -> Result<Client> {
        let updated = on_db!(&self.db, |pool| {
            sqlx::query(
            "UPDATE clients SET display_name = $3, state = $4, time_zone = $5, website = $6, contact_email = $7, labels = $8, \
             revision = revision + 1, updated_at_us = $9 WHERE tenant_id = $1 AND id = $2 AND revision = $10"
        )
        .bind(&c.tenant_id)
        .bind(&c.id)
        .bind(&c.display_name)
        .bind(c.state.as_str())
        .bind(&c.time_zone)
        .bind(&c.website)
        .bind(&c.contact_email)
        .bind(json(&c.labels)?)
        .bind(now_micros())
        .bind(expected_revision)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        match (updated, self.get_client(&c.tenant_id, &c.id).await?) {
            (1, Some(c)) => Ok(c),
            (_, Some(_)) => Err(stale(format!("client {}", c.id))),
            (_, None) => Err(Error::not_found(format!("client {}", c.id))),
        }
    }

    async fn delete_client(
        &self,
        tenant_id: &str,
        id: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let deleted = on_db!(&self.db, |pool| {
            sqlx::query(
            "DELETE FROM clients WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR revision = $3)"
        )
        .bind(tenant_id)
        .bind(id)
        .bind(expected_revision.unwrap_or(-1))
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        match (deleted, self.get_client(tenant_id, id).await?) {
            (1, _) => Ok(()),
            (_, Some(_)) => Err(stale(format!("client {id}"))),
            (_, None) => Err(Error::not_found(format!("client {id}"))),
        }
    }
}
