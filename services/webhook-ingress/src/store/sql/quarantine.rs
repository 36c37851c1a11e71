//! Quarantined events: stored byte for byte, listed and replayed by operators.
use maxai_kit::{on_db, storage::Db, Error, Result};

use super::{bad_page_token, corrupt, parse_provider, to_json, Arg, Sql};
use crate::domain::{
    new_id, split_time_key, Header, NewQuarantined, QuarantineFailure, QuarantineFilter,
    QuarantineReason, QuarantineState, QuarantinedEvent, SchemaError,
};

const COLUMNS: &str = "id, tenant_id, client_id, endpoint_id, provider, raw_body, headers, \
     provider_event_type, provider_event_id, reason, schema_errors, error_message, schema_url, \
     received_at_us, replayed_event_id, replayed_at_us, updated_at_us";

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: String,
    client_id: String,
    endpoint_id: String,
    provider: String,
    raw_body: Vec<u8>,
    headers: String,
    provider_event_type: String,
    provider_event_id: String,
    reason: String,
    schema_errors: String,
    error_message: String,
    schema_url: String,
    received_at_us: i64,
    replayed_event_id: Option<String>,
    replayed_at_us: Option<i64>,
    updated_at_us: i64,
}

impl TryFrom<Row> for QuarantinedEvent {
    type Error = Error;
    fn try_from(r: Row) -> Result<QuarantinedEvent> {
        let Row {
            id,
            tenant_id,
            client_id,
            endpoint_id,
            provider,
            raw_body,
            headers,
            provider_event_type,
            provider_event_id,
            reason,
            schema_errors,
            error_message,
            schema_url,
            received_at_us,
            replayed_event_id,
            replayed_at_us,
            updated_at_us,
        } = r;
        Ok(QuarantinedEvent {
            id,
            entry: NewQuarantined {
                tenant_id,
                client_id,
                endpoint_id,
                provider: parse_provider(&provider)?,
                raw_body,
                headers: serde_json::from_str::<Vec<Header>>(&headers)
                    .map_err(|_| corrupt("header list"))?,
                provider_event_type,
                provider_event_id,
                failure: QuarantineFailure {
                    reason: QuarantineReason::parse(&reason)
                        .ok_or_else(|| corrupt("quarantine reason"))?,
                    schema_errors: serde_json::from_str::<Vec<SchemaError>>(&schema_errors)
                        .map_err(|_| corrupt("schema error list"))?,
                    error_message,
                    schema_url,
                },
                received_at_us,
            },
            state: if replayed_at_us.is_some() {
                QuarantineState::Replayed
            } else {
                QuarantineState::Quarantined
            },
            replayed_event_id,
            replayed_at_us,
            updated_at_us,
        })
    }
}

pub(super) async fn insert(db: &Db, q: &NewQuarantined) -> Result<QuarantinedEvent> {
    if q.tenant_id.is_empty() {
        return Err(Error::invalid("tenant", "is required"));
    }
    let id = new_id();
    let headers = to_json(&q.headers)?;
    let errors = to_json(&q.failure.schema_errors)?;
    on_db!(db, |pool| {
        sqlx::query(
        "INSERT INTO quarantined_events (id, tenant_id, client_id, endpoint_id, provider, raw_body, \
         headers, provider_event_type, provider_event_id, reason, schema_errors, error_message, \
         schema_url, received_at_us, updated_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)"
    )
    .bind(&id)
    .bind(&q.tenant_id)
    .bind(&q.client_id)
    .bind(&q.endpoint_id)
    .bind(q.provider.as_str())
    .bind(&q.raw_body)
    .bind(&headers)
    .bind(&q.provider_event_type)
    .bind(&q.provider_event_id)
    .bind(q.failure.reason.as_str())
    .bind(&errors)
    .bind(&q.failure.error_message)
    .bind(&q.failure.schema_url)
    .bind(q.received_at_us)
    .execute(pool)
    .await
    .map(|_| ())
    })?;
    Ok(QuarantinedEvent {
        id,
        entry: q.clone(),
        state: QuarantineState::Quarantined,
        replayed_event_id: None,
        replayed_at_us: None,
        updated_at_us: q.received_at_us,
    })
}

pub(super) async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<Option<QuarantinedEvent>> {
    let sql = format!("SELECT {COLUMNS} FROM quarantined_events WHERE tenant_id = $1 AND id = $2");
    let row: Option<Row> = on_db!(db, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    row.map(QuarantinedEvent::try_from).transpose()
}

pub(super) async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &QuarantineFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<QuarantinedEvent>> {
    let QuarantineFilter {
        client_id,
        provider,
        state,
        start_us,
        end_us,
    } = filter;
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM quarantined_events WHERE "));
    sql.bind("tenant_id = ", Arg::Text(tenant_id.to_owned()));
    if let Some(v) = client_id {
        sql.bind(" AND client_id = ", Arg::Text(v.clone()));
    }
    if let Some(v) = provider {
        sql.bind(" AND provider = ", Arg::Text(v.as_str().to_owned()));
    }
    match state {
        None => {}
        Some(QuarantineState::Quarantined) => {
            sql.push(" AND replayed_at_us IS NULL");
        }
        Some(QuarantineState::Replayed) => {
            sql.push(" AND replayed_at_us IS NOT NULL");
        }
    }
    if let Some(v) = start_us {
        sql.bind(" AND received_at_us >= ", Arg::Int(*v));
    }
    if let Some(v) = end_us {
        sql.bind(" AND received_at_us < ", Arg::Int(*v));
    }
    if let Some(after) = after {
        let (t, id) = split_time_key(after).ok_or_else(bad_page_token)?;
        sql.bind(" AND (received_at_us, id) < (", Arg::Int(t))
            .bind(", ", Arg::Text(id.to_owned()))
            .push(")");
    }
    sql.bind(
        " ORDER BY received_at_us DESC, id DESC LIMIT ",
        Arg::Int(limit.max(0)),
    );
    let rows: Vec<Row> = on_db!(db, |pool| bind_all!(sqlx::query_as(&sql.text), &sql.args)
        .fetch_all(pool)
        .await)?;
    rows.into_iter().map(QuarantinedEvent::try_from).collect()
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("quarantined event {id}"))
}

pub(super) async fn mark_replayed(
    db: &Db,
    tenant_id: &str,
    id: &str,
    event_id: &str,
    now_us: i64,
) -> Result<QuarantinedEvent> {
    let n = on_db!(db, |pool| sqlx::query(
        "UPDATE quarantined_events SET replayed_event_id = $3, replayed_at_us = $4, \
         updated_at_us = $4 WHERE tenant_id = $1 AND id = $2"
    )
    .bind(tenant_id)
    .bind(id)
    .bind(event_id)
    .bind(now_us)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(missing(id));
    }
    get(db, tenant_id, id).await?.ok_or_else(|| missing(id))
}

pub(super) async fn record_failure(
    db: &Db,
    tenant_id: &str,
    id: &str,
    failure: &QuarantineFailure,
    now_us: i64,
) -> Result<QuarantinedEvent> {
    let errors = to_json(&failure.schema_errors)?;
    let n = on_db!(db, |pool| sqlx::query(
        "UPDATE quarantined_events SET reason = $3, schema_errors = $4, error_message = $5, \
         schema_url = $6, updated_at_us = $7 WHERE tenant_id = $1 AND id = $2"
    )
    .bind(tenant_id)
    .bind(id)
    .bind(failure.reason.as_str())
    .bind(&errors)
    .bind(&failure.error_message)
    .bind(&failure.schema_url)
    .bind(now_us)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(missing(id));
    }
    get(db, tenant_id, id).await?.ok_or_else(|| missing(id))
}
