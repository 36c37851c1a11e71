//! Appending events with their outbox rows, and reading them back with their deliveries.
use std::collections::{hash_map::Entry, HashMap, HashSet};

use maxai_kit::{
    on_db,
    storage::{now_micros, Db},
    Error, ErrorKind, Result,
};

use super::{bad_page_token, corrupt, Arg, EventRow, Sql, EVENT_COLUMNS};
use crate::domain::{
    new_id, split_time_key, Appended, ConsumerDelivery, DeliveryState, EventFilter, EventRecord,
    EventRef, NewEvent, OutboxState, StoredEvent,
};

/// One distinct event of a batch, ready to insert.
struct Prepared<'a> {
    new: &'a NewEvent,
    id: String,
    /// The outbox ordering key: the event's, or its own id when it has none (no constraint).
    outbox_key: String,
    consumers: Vec<&'a str>,
}

fn prepare(new: &NewEvent) -> Result<Prepared<'_>> {
    let e = &new.event;
    if e.tenant_id.is_empty() || e.provider_event_id.is_empty() || e.cloud_event_id.is_empty() {
        return Err(Error::invalid(
            "event",
            "tenant, provider event id and CloudEvents id are required",
        ));
    }
    let id = new_id();
    let outbox_key = if e.ordering_key.is_empty() {
        format!("event/{id}")
    } else {
        e.ordering_key.clone()
    };
    let mut consumers: Vec<&str> = Vec::with_capacity(new.consumers.len());
    for c in &new.consumers {
        if !consumers.contains(&c.as_str()) {
            consumers.push(c);
        }
    }
    Ok(Prepared {
        new,
        id,
        outbox_key,
        consumers,
    })
}

fn event_ref(p: &Prepared<'_>) -> EventRef {
    EventRef {
        tenant_id: p.new.event.tenant_id.clone(),
        id: p.id.clone(),
        cloud_event_id: p.new.event.cloud_event_id.clone(),
    }
}

fn vanished() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "a duplicate event disappeared while it was looked up; retry",
    )
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    tenant_id: String,
    id: String,
    cloud_event_id: String,
    provider: String,
    provider_event_id: String,
}

pub(super) async fn append(db: &Db, batch: &[NewEvent]) -> Result<Vec<Appended>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    // Duplicates inside the batch are resolved here: each (provider, provider event id) is
    // inserted once and later copies answer with the first one's outcome.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut unique: Vec<Prepared<'_>> = Vec::new();
    let mut slots: Vec<(usize, bool)> = Vec::with_capacity(batch.len());
    for new in batch {
        let key = (
            new.event.provider.as_str(),
            new.event.provider_event_id.as_str(),
        );
        match first.entry(key) {
            Entry::Occupied(o) => slots.push((*o.get(), true)),
            Entry::Vacant(v) => {
                v.insert(unique.len());
                slots.push((unique.len(), false));
                unique.push(prepare(new)?);
            }
        }
    }
    let now = now_micros();
    let outcomes = match db {
        Db::Postgres(pool) => append_postgres(pool, &unique, now).await?,
        Db::Sqlite(pool) => append_sqlite(pool, &unique, now).await?,
    };
    Ok(slots
        .into_iter()
        .map(|(i, copy)| {
            if copy {
                Appended::Duplicate(outcomes[i].event().clone())
            } else {
                outcomes[i].clone()
            }
        })
        .collect())
}

/// Two statements whatever the batch size: events through `UNNEST` (in key order, so two
/// concurrent batches lock the unique index in the same order and cannot deadlock), then the
/// outbox rows in submission order, so their ids — the delivery order — follow it.
async fn append_postgres(
    pool: &sqlx::PgPool,
    unique: &[Prepared<'_>],
    now: i64,
) -> Result<Vec<Appended>> {
    let mut by_key: Vec<&Prepared<'_>> = unique.iter().collect();
    by_key.sort_by(|a, b| {
        (
            a.new.event.provider.as_str(),
            &a.new.event.provider_event_id,
        )
            .cmp(&(
                b.new.event.provider.as_str(),
                &b.new.event.provider_event_id,
            ))
    });
    let col = |f: fn(&Prepared<'_>) -> String| by_key.iter().map(|p| f(p)).collect::<Vec<_>>();
    let ids = col(|p| p.id.clone());
    let tenants = col(|p| p.new.event.tenant_id.clone());
    let clients = col(|p| p.new.event.client_id.clone());
    let endpoints = col(|p| p.new.endpoint_id.clone());
    let providers = col(|p| p.new.event.provider.as_str().to_owned());
    let provider_ids = col(|p| p.new.event.provider_event_id.clone());
    let ce_ids = col(|p| p.new.event.cloud_event_id.clone());
    let sources = col(|p| p.new.event.source.clone());
    let types = col(|p| p.new.event.event_type.clone());
    let subjects = col(|p| p.new.event.subject.clone());
    let times: Vec<i64> = by_key.iter().map(|p| p.new.event.time_us).collect();
    let data = col(|p| p.new.event.data.clone());
    let keys = col(|p| p.new.event.ordering_key.clone());
    let received: Vec<i64> = by_key.iter().map(|p| p.new.received_at_us).collect();
    let replayed: Vec<Option<String>> =
        by_key.iter().map(|p| p.new.replayed_from.clone()).collect();

    let mut tx = pool.begin().await?;
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO events (id, tenant_id, client_id, endpoint_id, provider, provider_event_id, \
         cloud_event_id, source, event_type, subject, time_us, data, ordering_key, received_at_us, \
         replayed_from) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], \
         $13::text[], $14::bigint[], $15::text[]) \
         ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&clients)
    .bind(&endpoints)
    .bind(&providers)
    .bind(&provider_ids)
    .bind(&ce_ids)
    .bind(&sources)
    .bind(&types)
    .bind(&subjects)
    .bind(&times)
    .bind(&data)
    .bind(&keys)
    .bind(&received)
    .bind(&replayed)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<String> = inserted.into_iter().collect();

    let (mut o_tenants, mut o_events, mut o_consumers, mut o_keys) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in unique.iter().filter(|p| inserted.contains(&p.id)) {
        for c in &p.consumers {
            o_tenants.push(p.new.event.tenant_id.as_str());
            o_events.push(p.id.as_str());
            o_consumers.push(*c);
            o_keys.push(p.outbox_key.as_str());
        }
    }
    if !o_events.is_empty() {
        sqlx::query(
            "INSERT INTO outbox (tenant_id, event_id, consumer, ordering_key, state, attempts, \
             round_attempts, next_attempt_at_us, duplicate, created_at_us, updated_at_us) \
             SELECT t.tenant_id, t.event_id, t.consumer, t.ordering_key, 'pending', 0, 0, $5, \
             FALSE, $5, $5 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
             AS t(tenant_id, event_id, consumer, ordering_key, n) ORDER BY t.n",
        )
        .bind(&o_tenants)
        .bind(&o_events)
        .bind(&o_consumers)
        .bind(&o_keys)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }

    let dup: Vec<&Prepared<'_>> = unique
        .iter()
        .filter(|p| !inserted.contains(&p.id))
        .collect();
    let mut existing: HashMap<(String, String), EventRef> = HashMap::new();
    if !dup.is_empty() {
        let d_providers: Vec<&str> = dup.iter().map(|p| p.new.event.provider.as_str()).collect();
        let d_ids: Vec<&str> = dup
            .iter()
            .map(|p| p.new.event.provider_event_id.as_str())
            .collect();
        let rows: Vec<ExistingRow> = sqlx::query_as(
            "SELECT tenant_id, id, cloud_event_id, provider, provider_event_id FROM events \
             WHERE (provider, provider_event_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(&d_providers)
        .bind(&d_ids)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            existing.insert(
                (r.provider, r.provider_event_id),
                EventRef {
                    tenant_id: r.tenant_id,
                    id: r.id,
                    cloud_event_id: r.cloud_event_id,
                },
            );
        }
    }
    tx.commit().await?;

    unique
        .iter()
        .map(|p| {
            if inserted.contains(&p.id) {
                return Ok(Appended::Stored(event_ref(p)));
            }
            let key = (
                p.new.event.provider.as_str().to_owned(),
                p.new.event.provider_event_id.clone(),
            );
            existing
                .get(&key)
                .cloned()
                .map(Appended::Duplicate)
                .ok_or_else(vanished)
        })
        .collect()
}

/// Row by row inside one `BEGIN IMMEDIATE` transaction: SQLite statements cost microseconds,
/// the commit is what is shared.
async fn append_sqlite(
    pool: &sqlx::SqlitePool,
    unique: &[Prepared<'_>],
    now: i64,
) -> Result<Vec<Appended>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(unique.len());
    for p in unique {
        let e = &p.new.event;
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO events (id, tenant_id, client_id, endpoint_id, provider, \
             provider_event_id, cloud_event_id, source, event_type, subject, time_us, data, \
             ordering_key, received_at_us, replayed_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING id",
        )
        .bind(&p.id)
        .bind(&e.tenant_id)
        .bind(&e.client_id)
        .bind(&p.new.endpoint_id)
        .bind(e.provider.as_str())
        .bind(&e.provider_event_id)
        .bind(&e.cloud_event_id)
        .bind(&e.source)
        .bind(&e.event_type)
        .bind(&e.subject)
        .bind(e.time_us)
        .bind(&e.data)
        .bind(&e.ordering_key)
        .bind(p.new.received_at_us)
        .bind(&p.new.replayed_from)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            let r: Option<(String, String, String)> = sqlx::query_as(
                "SELECT tenant_id, id, cloud_event_id FROM events \
                 WHERE provider = $1 AND provider_event_id = $2",
            )
            .bind(e.provider.as_str())
            .bind(&e.provider_event_id)
            .fetch_optional(&mut *tx)
            .await?;
            let (tenant_id, id, cloud_event_id) = r.ok_or_else(vanished)?;
            out.push(Appended::Duplicate(EventRef {
                tenant_id,
                id,
                cloud_event_id,
            }));
            continue;
        }
        for c in &p.consumers {
            sqlx::query(
                "INSERT INTO outbox (tenant_id, event_id, consumer, ordering_key, state, attempts, \
                 round_attempts, next_attempt_at_us, duplicate, created_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, 0, $5, FALSE, $5, $5)",
            )
            .bind(&e.tenant_id)
            .bind(&p.id)
            .bind(*c)
            .bind(&p.outbox_key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        out.push(Appended::Stored(event_ref(p)));
    }
    tx.commit().await?;
    Ok(out)
}

// ---- reading -------------------------------------------------------------------------------

pub(super) const OUTBOX_COLUMNS: &str = "id, event_id, consumer, state, attempts, \
     next_attempt_at_us, last_attempt_at_us, delivered_at_us, duplicate, last_error, dead_at_us";

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    id: i64,
    event_id: String,
    consumer: String,
    state: String,
    attempts: i64,
    next_attempt_at_us: i64,
    last_attempt_at_us: Option<i64>,
    delivered_at_us: Option<i64>,
    duplicate: bool,
    last_error: Option<String>,
    dead_at_us: Option<i64>,
}

impl OutboxRow {
    fn into_delivery(self) -> Result<(String, ConsumerDelivery)> {
        let OutboxRow {
            id,
            event_id,
            consumer,
            state,
            attempts,
            next_attempt_at_us,
            last_attempt_at_us,
            delivered_at_us,
            duplicate,
            last_error,
            dead_at_us,
        } = self;
        let stored = OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state"))?;
        let state = match stored {
            OutboxState::Pending if last_error.is_some() => DeliveryState::Retrying,
            OutboxState::Pending => DeliveryState::Pending,
            OutboxState::Delivered => DeliveryState::Delivered,
            OutboxState::Dead => DeliveryState::DeadLettered,
        };
        Ok((
            event_id,
            ConsumerDelivery {
                outbox_id: id,
                consumer,
                state,
                attempts,
                last_attempt_at_us,
                next_attempt_at_us: (stored == OutboxState::Pending).then_some(next_attempt_at_us),
                delivered_at_us,
                duplicate,
                last_error,
                dead_letter: dead_at_us.is_some(),
            },
        ))
    }
}

/// The deliveries of `event_ids`, by event, each in outbox order.
async fn deliveries_of(
    db: &Db,
    event_ids: &[&str],
) -> Result<HashMap<String, Vec<ConsumerDelivery>>> {
    let mut out: HashMap<String, Vec<ConsumerDelivery>> = HashMap::new();
    if event_ids.is_empty() {
        return Ok(out);
    }
    let mut sql = Sql::new(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE event_id IN "
    ));
    let list = sql.text_list(event_ids.iter().copied());
    sql.push(&list).push(" ORDER BY id");
    let rows: Vec<OutboxRow> = on_db!(db, |pool| bind_all!(sqlx::query_as(&sql.text), &sql.args)
        .fetch_all(pool)
        .await)?;
    for r in rows {
        let (event_id, d) = r.into_delivery()?;
        out.entry(event_id).or_default().push(d);
    }
    Ok(out)
}

async fn with_deliveries(db: &Db, events: Vec<StoredEvent>) -> Result<Vec<EventRecord>> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let mut deliveries = deliveries_of(db, &ids).await?;
    Ok(events
        .into_iter()
        .map(|event| EventRecord {
            deliveries: deliveries.remove(&event.id).unwrap_or_default(),
            event,
        })
        .collect())
}

pub(super) async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<Option<EventRecord>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.tenant_id = $1 AND e.id = $2");
    let row: Option<EventRow> = on_db!(db, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(with_deliveries(db, vec![row.try_into()?]).await?.pop())
}

const HAS_DEAD: &str =
    "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id AND o.state = 'dead')";
const HAS_RETRYING: &str = "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id \
     AND o.state = 'pending' AND o.last_error IS NOT NULL)";
const HAS_PENDING: &str = "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id \
     AND o.state = 'pending' AND o.last_error IS NULL)";
const ALL_DELIVERED: &str =
    "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id AND o.state <> 'delivered')";

pub(super) async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &EventFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRecord>> {
    let EventFilter {
        client_id,
        provider,
        event_type,
        subject,
        provider_event_id,
        delivery_state,
        start_us,
        end_us,
    } = filter;
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE "));
    sql.bind("e.tenant_id = ", Arg::Text(tenant_id.to_owned()));
    if let Some(v) = client_id {
        sql.bind(" AND e.client_id = ", Arg::Text(v.clone()));
    }
    if let Some(v) = provider {
        sql.bind(" AND e.provider = ", Arg::Text(v.as_str().to_owned()));
    }
    if let Some(v) = event_type {
        sql.bind(" AND e.event_type = ", Arg::Text(v.clone()));
    }
    if let Some(v) = subject {
        sql.bind(" AND e.subject = ", Arg::Text(v.clone()));
    }
    if let Some(v) = provider_event_id {
        sql.bind(" AND e.provider_event_id = ", Arg::Text(v.clone()));
    }
    if let Some(v) = start_us {
        sql.bind(" AND e.received_at_us >= ", Arg::Int(*v));
    }
    if let Some(v) = end_us {
        sql.bind(" AND e.received_at_us < ", Arg::Int(*v));
    }
    if let Some(after) = after {
        let (t, id) = split_time_key(after).ok_or_else(bad_page_token)?;
        sql.bind(" AND (e.received_at_us, e.id) < (", Arg::Int(t))
            .bind(", ", Arg::Text(id.to_owned()))
            .push(")");
    }
    let state = match delivery_state {
        None => String::new(),
        Some(DeliveryState::DeadLettered) => format!(" AND {HAS_DEAD}"),
        Some(DeliveryState::Retrying) => format!(" AND {HAS_RETRYING} AND NOT {HAS_DEAD}"),
        Some(DeliveryState::Pending) => {
            format!(" AND {HAS_PENDING} AND NOT {HAS_RETRYING} AND NOT {HAS_DEAD}")
        }
        Some(DeliveryState::Delivered) => format!(" AND {ALL_DELIVERED}"),
    };
    sql.push(&state);
    sql.bind(
        " ORDER BY e.received_at_us DESC, e.id DESC LIMIT ",
        Arg::Int(limit.max(0)),
    );
    let rows: Vec<EventRow> = on_db!(db, |pool| bind_all!(sqlx::query_as(&sql.text), &sql.args)
        .fetch_all(pool)
        .await)?;
    let events = rows
        .into_iter()
        .map(StoredEvent::try_from)
        .collect::<Result<Vec<_>>>()?;
    with_deliveries(db, events).await
}
