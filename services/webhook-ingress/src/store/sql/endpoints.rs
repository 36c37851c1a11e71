//! Webhook endpoints, their secret versions, and resolving an inbound webhook to one.
use std::collections::HashMap;

use maxai_kit::{on_db, storage::Db, Error, ErrorKind, Result};

use super::{
    bad_page_token, corrupt, is_unique_violation, parse_provider, stale, to_json, Arg, Sql,
};
use crate::domain::{
    Account, ActiveSecret, Endpoint, EndpointFilter, EndpointKey, EndpointUpdate, NewEndpoint,
    NewSecret, Provider, ResolvedEndpoint, SecretVersion,
};

const COLUMNS: &str = "tenant_id, client_id, id, display_name, provider, account, disabled, \
     revision, created_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    client_id: String,
    id: String,
    display_name: String,
    provider: String,
    account: String,
    disabled: bool,
    revision: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

const SECRET_COLUMNS: &str =
    "client_id, endpoint_id, version, ciphertext, fingerprint, created_at_us, expire_at_us";

#[derive(sqlx::FromRow)]
struct SecretRow {
    client_id: String,
    endpoint_id: String,
    version: i64,
    ciphertext: Option<String>,
    fingerprint: String,
    created_at_us: i64,
    expire_at_us: Option<i64>,
}

impl SecretRow {
    fn version(&self) -> SecretVersion {
        SecretVersion {
            version: self.version,
            fingerprint: self.fingerprint.clone(),
            created_at_us: self.created_at_us,
            expire_at_us: self.expire_at_us,
            destroyed: self.ciphertext.is_none(),
        }
    }
}

fn endpoint(row: Row, secrets: &[SecretRow]) -> Result<Endpoint> {
    let Row {
        tenant_id,
        client_id,
        id,
        display_name,
        provider,
        account,
        disabled,
        revision,
        created_at_us,
        updated_at_us,
    } = row;
    let account: Account = serde_json::from_str(&account).map_err(|_| corrupt("account"))?;
    if account.provider() != parse_provider(&provider)? {
        return Err(corrupt("account"));
    }
    Ok(Endpoint {
        key: EndpointKey {
            tenant_id,
            client_id,
            id,
        },
        display_name,
        account,
        disabled,
        revision,
        created_at_us,
        updated_at_us,
        secret_versions: secrets.iter().map(SecretRow::version).collect(),
    })
}

/// The secrets of the tenant's endpoints named by (client, id), newest version first.
async fn secrets_of(
    db: &Db,
    tenant_id: &str,
    endpoints: &[(&str, &str)],
) -> Result<HashMap<(String, String), Vec<SecretRow>>> {
    let mut out: HashMap<(String, String), Vec<SecretRow>> = HashMap::new();
    if endpoints.is_empty() {
        return Ok(out);
    }
    let mut sql = Sql::new(&format!(
        "SELECT {SECRET_COLUMNS} FROM webhook_endpoint_secrets WHERE "
    ));
    sql.bind("tenant_id = ", Arg::Text(tenant_id.to_owned()))
        .push(" AND endpoint_id IN ");
    let list = sql.text_list(endpoints.iter().map(|(_, id)| *id));
    sql.push(&list)
        .push(" ORDER BY client_id, endpoint_id, version DESC");
    let rows: Vec<SecretRow> = on_db!(db, |pool| bind_all!(sqlx::query_as(&sql.text), &sql.args)
        .fetch_all(pool)
        .await)?;
    for r in rows {
        // The IN list matched ids only; keep the rows of the named clients.
        if endpoints
            .iter()
            .any(|(c, id)| *c == r.client_id && *id == r.endpoint_id)
        {
            out.entry((r.client_id.clone(), r.endpoint_id.clone()))
                .or_default()
                .push(r);
        }
    }
    Ok(out)
}

async fn load(db: &Db, key: &EndpointKey) -> Result<Option<(Row, Vec<SecretRow>)>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND client_id = $2 AND id = $3"
    );
    let row: Option<Row> = on_db!(db, |pool| sqlx::query_as(&sql)
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .fetch_optional(pool)
        .await)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut secrets = secrets_of(db, &key.tenant_id, &[(&key.client_id, &key.id)]).await?;
    let secrets = secrets
        .remove(&(key.client_id.clone(), key.id.clone()))
        .unwrap_or_default();
    Ok(Some((row, secrets)))
}

pub(super) async fn get(db: &Db, key: &EndpointKey) -> Result<Option<Endpoint>> {
    load(db, key)
        .await?
        .map(|(row, secrets)| endpoint(row, &secrets))
        .transpose()
}

fn missing(key: &EndpointKey) -> Error {
    Error::not_found(format!("webhook endpoint {}", key.id))
}

async fn by_request_id(db: &Db, tenant_id: &str, request_id: &str) -> Result<Option<Endpoint>> {
    let found: Option<(String, String)> = on_db!(db, |pool| {
        sqlx::query_as(
        "SELECT client_id, id FROM webhook_endpoints WHERE tenant_id = $1 AND create_request_id = $2"
    )
    .bind(tenant_id)
    .bind(request_id)
    .fetch_optional(pool)
    .await
    })?;
    match found {
        Some((client_id, id)) => {
            get(
                db,
                &EndpointKey {
                    tenant_id: tenant_id.to_owned(),
                    client_id,
                    id,
                },
            )
            .await
        }
        None => Ok(None),
    }
}

/// Inserts the endpoint and its first secret; `false` when a unique key is taken.
async fn insert(
    db: &Db,
    e: &NewEndpoint,
    secret: Option<&NewSecret>,
    request_id: Option<&str>,
    now_us: i64,
) -> Result<bool> {
    let account = to_json(&e.account)?;
    let provider = e.account.provider().as_str();
    let account_key = e.account.key();
    Ok(write_tx!(db, |tx| {
        let inserted = sqlx::query(
            "INSERT INTO webhook_endpoints (tenant_id, client_id, id, display_name, provider, \
             account_key, account, disabled, revision, create_request_id, created_at_us, \
             updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $10)",
        )
        .bind(&e.key.tenant_id)
        .bind(&e.key.client_id)
        .bind(&e.key.id)
        .bind(&e.display_name)
        .bind(provider)
        .bind(&account_key)
        .bind(&account)
        .bind(e.disabled)
        .bind(request_id)
        .bind(now_us)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Dropping the transaction rolls it back.
            Err(err) if is_unique_violation(&err) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
        if let Some(s) = secret {
            sqlx::query(
                "INSERT INTO webhook_endpoint_secrets (tenant_id, client_id, endpoint_id, version, \
                 ciphertext, fingerprint, created_at_us) VALUES ($1, $2, $3, 1, $4, $5, $6)",
            )
            .bind(&e.key.tenant_id)
            .bind(&e.key.client_id)
            .bind(&e.key.id)
            .bind(&s.ciphertext)
            .bind(&s.fingerprint)
            .bind(now_us)
            .execute(&mut *tx)
            .await?;
        }
        true
    }))
}

pub(super) async fn create(
    db: &Db,
    e: &NewEndpoint,
    secret: Option<&NewSecret>,
    request_id: Option<&str>,
    now_us: i64,
) -> Result<Endpoint> {
    let EndpointKey {
        tenant_id,
        client_id,
        id,
    } = &e.key;
    if tenant_id.is_empty() || client_id.is_empty() || id.is_empty() {
        return Err(Error::invalid(
            "webhook_endpoint.name",
            "tenant, client and id are required",
        ));
    }
    if let Some(rid) = request_id {
        if let Some(found) = by_request_id(db, tenant_id, rid).await? {
            return Ok(found);
        }
    }
    if !insert(db, e, secret, request_id, now_us).await? {
        if let Some(rid) = request_id {
            // A concurrent retry of the same request won: answer as it did.
            if let Some(found) = by_request_id(db, tenant_id, rid).await? {
                return Ok(found);
            }
        }
        if get(db, &e.key).await?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("webhook endpoint {id} already exists"),
            ));
        }
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "another webhook endpoint already receives the webhooks of this {} account",
                e.account.provider().as_str()
            ),
        ));
    }
    get(db, &e.key).await?.ok_or_else(|| missing(&e.key))
}

pub(super) async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &EndpointFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Endpoint>> {
    let EndpointFilter {
        client_id,
        provider,
    } = filter;
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE "));
    sql.bind("tenant_id = ", Arg::Text(tenant_id.to_owned()));
    if let Some(v) = client_id {
        sql.bind(" AND client_id = ", Arg::Text(v.clone()));
    }
    if let Some(v) = provider {
        sql.bind(" AND provider = ", Arg::Text(v.as_str().to_owned()));
    }
    if let Some(after) = after {
        let (c, id) = after.split_once('/').ok_or_else(bad_page_token)?;
        sql.bind(" AND (client_id, id) > (", Arg::Text(c.to_owned()))
            .bind(", ", Arg::Text(id.to_owned()))
            .push(")");
    }
    sql.bind(" ORDER BY client_id, id LIMIT ", Arg::Int(limit.max(0)));
    let rows: Vec<Row> = on_db!(db, |pool| bind_all!(sqlx::query_as(&sql.text), &sql.args)
        .fetch_all(pool)
        .await)?;
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.client_id.as_str(), r.id.as_str()))
        .collect();
    let mut secrets = secrets_of(db, tenant_id, &names).await?;
    rows.into_iter()
        .map(|r| {
            let s = secrets
                .remove(&(r.client_id.clone(), r.id.clone()))
                .unwrap_or_default();
            endpoint(r, &s)
        })
        .collect()
}

pub(super) async fn update(
    db: &Db,
    u: &EndpointUpdate,
    expected_revision: Option<i64>,
    now_us: i64,
) -> Result<Endpoint> {
    let account = to_json(&u.account)?;
    let mut sql = Sql::new("UPDATE webhook_endpoints SET ");
    sql.bind("display_name = ", Arg::Text(u.display_name.clone()))
        .bind(", account_key = ", Arg::Text(u.account.key()))
        .bind(", account = ", Arg::Text(account))
        .bind(", disabled = ", Arg::Bool(u.disabled))
        .bind(", updated_at_us = ", Arg::Int(now_us))
        .push(", revision = revision + 1 WHERE ")
        .bind("tenant_id = ", Arg::Text(u.key.tenant_id.clone()))
        .bind(" AND client_id = ", Arg::Text(u.key.client_id.clone()))
        .bind(" AND id = ", Arg::Text(u.key.id.clone()))
        .bind(
            " AND provider = ",
            Arg::Text(u.account.provider().as_str().to_owned()),
        );
    if let Some(r) = expected_revision {
        sql.bind(" AND revision = ", Arg::Int(r));
    }
    let updated = on_db!(db, |pool| bind_all!(sqlx::query(&sql.text), &sql.args)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()));
    match updated {
        Ok(0) => {
            let current = get(db, &u.key).await?.ok_or_else(|| missing(&u.key))?;
            if current.provider() != u.account.provider() {
                return Err(Error::invalid(
                    "webhook_endpoint.account",
                    "the provider of a webhook endpoint cannot change",
                ));
            }
            return Err(stale(format!("webhook endpoint {}", u.key.id)));
        }
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "another webhook endpoint already receives the webhooks of this {} account",
                    u.account.provider().as_str()
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    get(db, &u.key).await?.ok_or_else(|| missing(&u.key))
}

pub(super) async fn delete(
    db: &Db,
    key: &EndpointKey,
    expected_revision: Option<i64>,
) -> Result<()> {
    let deleted = write_tx!(db, |tx| {
        let n = sqlx::query(
            "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND client_id = $2 AND id = $3 \
             AND ($4 IS NULL OR revision = $4)",
        )
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .bind(expected_revision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // The foreign key cascades; deleting explicitly keeps "secrets are destroyed" true even
        // where foreign keys are not enforced.
        sqlx::query(
            "DELETE FROM webhook_endpoint_secrets WHERE tenant_id = $1 AND client_id = $2 \
             AND endpoint_id = $3 AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w \
             WHERE w.tenant_id = $1 AND w.client_id = $2 AND w.id = $3)",
        )
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .execute(&mut *tx)
        .await?;
        n
    });
    if deleted == 0 {
        return match get(db, key).await? {
            Some(_) => Err(stale(format!("webhook endpoint {}", key.id))),
            None => Err(missing(key)),
        };
    }
    Ok(())
}

enum Rotation {
    Rotated,
    AlreadyDone,
    Missing,
}

pub(super) async fn rotate(
    db: &Db,
    key: &EndpointKey,
    secret: &NewSecret,
    previous_ttl_us: i64,
    request_id: Option<&str>,
    now_us: i64,
) -> Result<Endpoint> {
    match rotate_tx(db, key, secret, previous_ttl_us, request_id, now_us).await? {
        Rotation::Missing => Err(missing(key)),
        Rotation::Rotated | Rotation::AlreadyDone => {
            get(db, key).await?.ok_or_else(|| missing(key))
        }
    }
}

async fn rotate_tx(
    db: &Db,
    key: &EndpointKey,
    secret: &NewSecret,
    previous_ttl_us: i64,
    request_id: Option<&str>,
    now_us: i64,
) -> Result<Rotation> {
    let previous_until = now_us.saturating_add(previous_ttl_us.max(0));
    Ok(write_tx!(db, |tx| {
        // Bumping the revision first locks the endpoint row: rotations of one endpoint queue.
        let revision: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET revision = revision + 1, updated_at_us = $4 \
             WHERE tenant_id = $1 AND client_id = $2 AND id = $3 RETURNING revision",
        )
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .bind(now_us)
        .fetch_optional(&mut *tx)
        .await?;
        if revision.is_none() {
            return Ok(Rotation::Missing);
        }
        if let Some(rid) = request_id {
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM webhook_endpoint_secrets WHERE tenant_id = $1 \
                 AND client_id = $2 AND endpoint_id = $3 AND request_id = $4",
            )
            .bind(&key.tenant_id)
            .bind(&key.client_id)
            .bind(&key.id)
            .bind(rid)
            .fetch_optional(&mut *tx)
            .await?;
            if done.is_some() {
                // Dropping the transaction rolls the revision bump back.
                return Ok(Rotation::AlreadyDone);
            }
        }
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM webhook_endpoint_secrets WHERE tenant_id = $1 \
             AND client_id = $2 AND endpoint_id = $3",
        )
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(newest) = newest {
            // Older versions stop now and lose their material: at most two ever verify.
            sqlx::query(
                "UPDATE webhook_endpoint_secrets SET ciphertext = NULL, \
                 expire_at_us = CASE WHEN expire_at_us IS NULL OR expire_at_us > $5 THEN $5 \
                 ELSE expire_at_us END, destroyed_at_us = $5 \
                 WHERE tenant_id = $1 AND client_id = $2 AND endpoint_id = $3 AND version < $4 \
                 AND ciphertext IS NOT NULL",
            )
            .bind(&key.tenant_id)
            .bind(&key.client_id)
            .bind(&key.id)
            .bind(newest)
            .bind(now_us)
            .execute(&mut *tx)
            .await?;
            // The newest so far keeps verifying until the switch-over ends (or stops now).
            let (ciphertext_kept, destroyed_at) = if previous_until > now_us {
                (true, None)
            } else {
                (false, Some(now_us))
            };
            sqlx::query(
                "UPDATE webhook_endpoint_secrets SET expire_at_us = $5, \
                 ciphertext = CASE WHEN $6 THEN ciphertext ELSE NULL END, destroyed_at_us = $7 \
                 WHERE tenant_id = $1 AND client_id = $2 AND endpoint_id = $3 AND version = $4 \
                 AND ciphertext IS NOT NULL",
            )
            .bind(&key.tenant_id)
            .bind(&key.client_id)
            .bind(&key.id)
            .bind(newest)
            .bind(previous_until)
            .bind(ciphertext_kept)
            .bind(destroyed_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (tenant_id, client_id, endpoint_id, version, \
             ciphertext, fingerprint, created_at_us, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.tenant_id)
        .bind(&key.client_id)
        .bind(&key.id)
        .bind(newest.unwrap_or(0) + 1)
        .bind(&secret.ciphertext)
        .bind(&secret.fingerprint)
        .bind(now_us)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        Rotation::Rotated
    }))
}

fn resolved(row: Row, secrets: Vec<SecretRow>, now_us: i64) -> Result<ResolvedEndpoint> {
    let endpoint = endpoint(row, &secrets)?;
    let secrets = secrets
        .into_iter()
        .filter(|s| s.expire_at_us.is_none_or(|at| at > now_us))
        .filter_map(|s| {
            s.ciphertext.map(|ciphertext| ActiveSecret {
                version: s.version,
                ciphertext,
                expire_at_us: s.expire_at_us,
            })
        })
        .collect();
    Ok(ResolvedEndpoint { endpoint, secrets })
}

pub(super) async fn resolve(
    db: &Db,
    provider: Provider,
    account_keys: &[String],
    now_us: i64,
) -> Result<Option<ResolvedEndpoint>> {
    if account_keys.is_empty() {
        return Ok(None);
    }
    let mut sql = Sql::new(&format!(
        "SELECT {COLUMNS}, account_key FROM webhook_endpoints WHERE "
    ));
    sql.bind("provider = ", Arg::Text(provider.as_str().to_owned()))
        .push(" AND account_key IN ");
    let list = sql.text_list(account_keys.iter().map(String::as_str));
    sql.push(&list);
    let rows: Vec<(String, Row)> = on_db!(db, |pool| bind_all!(
        sqlx::query_as::<_, KeyedRow>(&sql.text),
        &sql.args
    )
    .fetch_all(pool)
    .await)?
    .into_iter()
    .map(|k| (k.account_key, k.row))
    .collect();
    let mut rows: HashMap<String, Row> = rows.into_iter().collect();
    let Some(row) = account_keys.iter().find_map(|k| rows.remove(k)) else {
        return Ok(None);
    };
    let mut secrets = secrets_of(db, &row.tenant_id, &[(&row.client_id, &row.id)]).await?;
    let secrets = secrets
        .remove(&(row.client_id.clone(), row.id.clone()))
        .unwrap_or_default();
    resolved(row, secrets, now_us).map(Some)
}

#[derive(sqlx::FromRow)]
struct KeyedRow {
    account_key: String,
    #[sqlx(flatten)]
    row: Row,
}

pub(super) async fn resolve_key(
    db: &Db,
    key: &EndpointKey,
    now_us: i64,
) -> Result<Option<ResolvedEndpoint>> {
    match load(db, key).await? {
        Some((row, secrets)) => resolved(row, secrets, now_us).map(Some),
        None => Ok(None),
    }
}

pub(super) async fn destroy_expired(db: &Db, now_us: i64) -> Result<u64> {
    Ok(on_db!(db, |pool| sqlx::query(
        "UPDATE webhook_endpoint_secrets SET ciphertext = NULL, destroyed_at_us = $1 \
         WHERE ciphertext IS NOT NULL AND expire_at_us <= $1"
    )
    .bind(now_us)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?)
}
