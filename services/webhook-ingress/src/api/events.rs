//! What operators inspect and repair: stored events with their deliveries, quarantined
//! payloads, dead letters (and their replay), and the tenant's retention settings. Every query
//! is scoped to the tenant in the resource name; lists are newest first, keyset-paged.
use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, expected_revision, mask_paths, micros},
    storage::now_micros,
    Error, Result,
};
use maxai_proto::maxai::webhook::v1 as pb;
use tonic::{Request, Response, Status};

use super::{
    convert::{
        dead_letter_state_from_pb, dead_letter_to_pb, delivery_state_from_pb, event_to_pb,
        provider_from_pb, quarantine_state_from_pb, quarantined_to_pb_in, retention_to_pb,
        Retention,
    },
    WebhookApi,
};
use crate::domain::{DeadLetterFilter, EventFilter, QuarantineFilter, RetentionSettings};

const RETENTION_PATHS: &[&str] = &[
    "event_retention",
    "quarantine_retention",
    "dead_letter_retention",
];
const DAY_SECS: i64 = 86_400;
const MAX_RETENTION_DAYS: i64 = 365;
/// Longest id segment accepted in a name; longer ones cannot exist.
const MAX_ID: usize = 128;

/// `tenants/{tenant}` → the tenant id.
fn tenant(name: &str, field: &str) -> Result<String> {
    match name.strip_prefix("tenants/") {
        Some(t) if check_id(t, 3, 63).is_ok() => Ok(t.to_owned()),
        _ => Err(Error::invalid(
            field,
            "must be of the form tenants/{tenant}",
        )),
    }
}

/// `tenants/{tenant}/{collection}/{id}` → (tenant, id).
fn child(name: &str, collection: &str, form: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, c, id]
            if *c == collection
                && check_id(t, 3, 63).is_ok()
                && !id.is_empty()
                && id.len() <= MAX_ID =>
        {
            Ok(((*t).to_owned(), (*id).to_owned()))
        }
        _ => Err(Error::invalid(
            "name",
            format!("must be of the form {form}"),
        )),
    }
}

/// `tenants/{tenant}/deadLetters/{dead_letter}` → (tenant, outbox row id). An id that is no
/// row id names nothing: NOT_FOUND, like any other unknown id.
fn dead_letter(name: &str) -> Result<(String, i64)> {
    let (t, id) = child(
        name,
        "deadLetters",
        "tenants/{tenant}/deadLetters/{dead_letter}",
    )?;
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Error::not_found(name))?;
    Ok((t, id))
}

/// The `client` filter: a client of the listed tenant, `tenants/{tenant}/clients/{client}`.
fn client_filter(v: &mut Violations, tenant_id: &str, client: &str) -> Option<String> {
    if client.is_empty() {
        return None;
    }
    let parts: Vec<&str> = client.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c] if *t == tenant_id && check_id(c, 1, 63).is_ok() => {
            Some((*c).to_owned())
        }
        _ => {
            v.add(
                "client",
                format!(
                    "must be a client of the listed tenant: tenants/{tenant_id}/clients/{{client}}"
                ),
            );
            None
        }
    }
}

/// Received (or created) at or after `start`, before `end`; `end` must come after `start`.
fn time_range(
    v: &mut Violations,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> (Option<i64>, Option<i64>) {
    let start = start.map(micros);
    let end = end.map(micros);
    if let (Some(s), Some(e)) = (start, end) {
        v.check(e > s, "end_time", "must be after start_time");
    }
    (start, end)
}

fn text_filter(v: &mut Violations, field: &str, value: String) -> Option<String> {
    v.check(value.len() <= 512, field, "must be at most 512 bytes");
    (!value.is_empty()).then_some(value)
}

/// The retention in force for `tenant_id`: its settings over the platform defaults.
async fn retention_of(api: &WebhookApi, tenant_id: &str) -> Result<Retention> {
    let settings = api.display_retention(tenant_id).await?;
    Ok(Retention::of(&api.config, settings.as_ref()))
}

pub(super) async fn get_event(
    api: &WebhookApi,
    request: Request<pb::GetEventRequest>,
) -> Result<Response<pb::GetEventResponse>, Status> {
    let pb::GetEventRequest { name } = request.into_inner();
    let (t, id) = child(&name, "events", "tenants/{tenant}/events/{event}")?;
    // Both at once: the settings are mostly cached, else the answer waits for one round trip.
    let (record, retention) =
        tokio::try_join!(api.store.get_event(&t, &id), retention_of(api, &t))?;
    let record = record.ok_or_else(|| Error::not_found(&name))?;
    Ok(Response::new(pb::GetEventResponse {
        event: Some(event_to_pb(&record, &retention)),
    }))
}

pub(super) async fn list_events(
    api: &WebhookApi,
    request: Request<pb::ListEventsRequest>,
) -> Result<Response<pb::ListEventsResponse>, Status> {
    let pb::ListEventsRequest {
        parent,
        page_size: size,
        page_token,
        client,
        provider,
        event_type,
        subject,
        provider_event_id,
        delivery_state,
        start_time,
        end_time,
    } = request.into_inner();
    let t = tenant(&parent, "parent")?;
    let limit = page_size(size)?;
    let scope = format!("events/{t}");
    let after = decode_token(&scope, &page_token)?;
    let mut v = Violations::new();
    let client_id = client_filter(&mut v, &t, &client);
    let provider = provider_from_pb(provider)
        .map_err(|_| v.add("provider", "is not a provider"))
        .ok()
        .flatten();
    let delivery_state = delivery_state_from_pb(delivery_state)
        .map_err(|_| v.add("delivery_state", "is not a delivery state"))
        .ok()
        .flatten();
    let (start_us, end_us) = time_range(&mut v, start_time.as_ref(), end_time.as_ref());
    let filter = EventFilter {
        client_id,
        provider,
        event_type: text_filter(&mut v, "event_type", event_type),
        subject: text_filter(&mut v, "subject", subject),
        provider_event_id: text_filter(&mut v, "provider_event_id", provider_event_id),
        delivery_state,
        start_us,
        end_us,
    };
    v.into_result()?;
    let mut rows = api
        .store
        .list_events(&t, &filter, after.as_deref(), limit + 1)
        .await?;
    let next_page_token = next_page(&mut rows, limit, &scope, |r| r.event.page_key());
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::ListEventsResponse {
        events: rows.iter().map(|r| event_to_pb(r, &retention)).collect(),
        next_page_token,
    }))
}

pub(super) async fn get_quarantined(
    api: &WebhookApi,
    request: Request<pb::GetQuarantinedEventRequest>,
) -> Result<Response<pb::GetQuarantinedEventResponse>, Status> {
    let pb::GetQuarantinedEventRequest { name } = request.into_inner();
    let (t, id) = child(
        &name,
        "quarantinedEvents",
        "tenants/{tenant}/quarantinedEvents/{quarantined_event}",
    )?;
    let q = api
        .store
        .get_quarantined(&t, &id)
        .await?
        .ok_or_else(|| Error::not_found(&name))?;
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::GetQuarantinedEventResponse {
        quarantined_event: Some(quarantined_to_pb_in(&q, &retention)),
    }))
}

pub(super) async fn list_quarantined(
    api: &WebhookApi,
    request: Request<pb::ListQuarantinedEventsRequest>,
) -> Result<Response<pb::ListQuarantinedEventsResponse>, Status> {
    let pb::ListQuarantinedEventsRequest {
        parent,
        page_size: size,
        page_token,
        client,
        provider,
        state,
        start_time,
        end_time,
    } = request.into_inner();
    let t = tenant(&parent, "parent")?;
    let limit = page_size(size)?;
    let scope = format!("quarantinedEvents/{t}");
    let after = decode_token(&scope, &page_token)?;
    let mut v = Violations::new();
    let client_id = client_filter(&mut v, &t, &client);
    let provider = provider_from_pb(provider)
        .map_err(|_| v.add("provider", "is not a provider"))
        .ok()
        .flatten();
    let state = quarantine_state_from_pb(state)
        .map_err(|_| v.add("state", "is not a quarantine state"))
        .ok()
        .flatten();
    let (start_us, end_us) = time_range(&mut v, start_time.as_ref(), end_time.as_ref());
    v.into_result()?;
    let filter = QuarantineFilter {
        client_id,
        provider,
        state,
        start_us,
        end_us,
    };
    let mut rows = api
        .store
        .list_quarantined(&t, &filter, after.as_deref(), limit + 1)
        .await?;
    let next_page_token = next_page(&mut rows, limit, &scope, |q| q.page_key());
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::ListQuarantinedEventsResponse {
        quarantined_events: rows
            .iter()
            .map(|q| quarantined_to_pb_in(q, &retention))
            .collect(),
        next_page_token,
    }))
}

pub(super) async fn get_dead_letter(
    api: &WebhookApi,
    request: Request<pb::GetDeadLetterRequest>,
) -> Result<Response<pb::GetDeadLetterResponse>, Status> {
    let pb::GetDeadLetterRequest { name } = request.into_inner();
    let (t, id) = dead_letter(&name)?;
    let d = api
        .store
        .get_dead_letter(&t, id)
        .await?
        .ok_or_else(|| Error::not_found(&name))?;
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::GetDeadLetterResponse {
        dead_letter: Some(dead_letter_to_pb(&d, &retention)),
    }))
}

pub(super) async fn list_dead_letters(
    api: &WebhookApi,
    request: Request<pb::ListDeadLettersRequest>,
) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
    let pb::ListDeadLettersRequest {
        parent,
        page_size: size,
        page_token,
        consumer,
        state,
        event_type,
        start_time,
        end_time,
    } = request.into_inner();
    let t = tenant(&parent, "parent")?;
    let limit = page_size(size)?;
    let scope = format!("deadLetters/{t}");
    let after = decode_token(&scope, &page_token)?;
    let mut v = Violations::new();
    let state = dead_letter_state_from_pb(state)
        .map_err(|_| v.add("state", "is not a dead letter state"))
        .ok()
        .flatten();
    let (start_us, end_us) = time_range(&mut v, start_time.as_ref(), end_time.as_ref());
    let filter = DeadLetterFilter {
        consumer: text_filter(&mut v, "consumer", consumer),
        state,
        event_type: text_filter(&mut v, "event_type", event_type),
        start_us,
        end_us,
    };
    v.into_result()?;
    let mut rows = api
        .store
        .list_dead_letters(&t, &filter, after.as_deref(), limit + 1)
        .await?;
    let next_page_token = next_page(&mut rows, limit, &scope, |d| d.page_key());
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::ListDeadLettersResponse {
        dead_letters: rows
            .iter()
            .map(|d| dead_letter_to_pb(d, &retention))
            .collect(),
        next_page_token,
    }))
}

pub(super) async fn replay_dead_letter(
    api: &WebhookApi,
    request: Request<pb::ReplayDeadLetterRequest>,
) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
    let pb::ReplayDeadLetterRequest { name } = request.into_inner();
    let (t, id) = dead_letter(&name)?;
    let d = api.store.replay_dead_letter(&t, id, now_micros()).await?;
    // The row is due now: an idle dispatcher need not wait for its next poll.
    if let Some(stored) = &api.stored {
        stored.notify_one();
    }
    let retention = retention_of(api, &t).await?;
    Ok(Response::new(pb::ReplayDeadLetterResponse {
        dead_letter: Some(dead_letter_to_pb(&d, &retention)),
    }))
}

/// `tenants/{tenant}/eventRetentionSettings` → the tenant id.
fn retention_tenant(name: &str, field: &str) -> Result<String> {
    match name
        .strip_suffix("/eventRetentionSettings")
        .and_then(|t| t.strip_prefix("tenants/"))
    {
        Some(t) if check_id(t, 3, 63).is_ok() => Ok(t.to_owned()),
        _ => Err(Error::invalid(
            field,
            "must be of the form tenants/{tenant}/eventRetentionSettings",
        )),
    }
}

/// What the tenant has stored, or the never-stored singleton (revision 0, every period the
/// platform default).
async fn stored_retention(api: &WebhookApi, tenant_id: &str) -> Result<RetentionSettings> {
    Ok(api
        .store
        .get_retention(tenant_id)
        .await?
        .unwrap_or_else(|| RetentionSettings {
            tenant_id: tenant_id.to_owned(),
            event_retention_secs: None,
            quarantine_retention_secs: None,
            dead_letter_retention_secs: None,
            revision: 0,
            updated_at_us: 0,
        }))
}

/// A retention period: unset (the platform default) or whole days from 1 to 365.
fn retention_days(
    v: &mut Violations,
    field: &str,
    period: Option<&prost_types::Duration>,
) -> Option<i64> {
    let d = period?;
    let ok = d.nanos == 0
        && d.seconds % DAY_SECS == 0
        && (1..=MAX_RETENTION_DAYS).contains(&(d.seconds / DAY_SECS));
    v.check(
        ok,
        field,
        "must be whole days from 1 to 365 (86400s to 31536000s), or unset for the platform default",
    );
    ok.then_some(d.seconds)
}

pub(super) async fn get_retention(
    api: &WebhookApi,
    request: Request<pb::GetEventRetentionSettingsRequest>,
) -> Result<Response<pb::GetEventRetentionSettingsResponse>, Status> {
    let pb::GetEventRetentionSettingsRequest { name } = request.into_inner();
    let t = retention_tenant(&name, "name")?;
    let settings = stored_retention(api, &t).await?;
    Ok(Response::new(pb::GetEventRetentionSettingsResponse {
        event_retention_settings: Some(retention_to_pb(&settings)),
    }))
}

pub(super) async fn update_retention(
    api: &WebhookApi,
    request: Request<pb::UpdateEventRetentionSettingsRequest>,
) -> Result<Response<pb::UpdateEventRetentionSettingsResponse>, Status> {
    let pb::UpdateEventRetentionSettingsRequest {
        event_retention_settings,
        update_mask,
    } = request.into_inner();
    let s = event_retention_settings
        .ok_or_else(|| Error::invalid("event_retention_settings", "is required"))?;
    let t = retention_tenant(&s.name, "event_retention_settings.name")?;
    let expected = expected_revision(&s.etag, "event_retention_settings.etag")?;
    let paths = mask_paths(update_mask.as_ref(), RETENTION_PATHS)?;
    let mut next = stored_retention(api, &t).await?;
    let current = next.revision;
    let mut v = Violations::new();
    for path in &paths {
        let field = format!("event_retention_settings.{path}");
        match path.as_str() {
            "event_retention" => {
                next.event_retention_secs =
                    retention_days(&mut v, &field, s.event_retention.as_ref())
            }
            "quarantine_retention" => {
                next.quarantine_retention_secs =
                    retention_days(&mut v, &field, s.quarantine_retention.as_ref())
            }
            _ => {
                next.dead_letter_retention_secs =
                    retention_days(&mut v, &field, s.dead_letter_retention.as_ref())
            }
        }
    }
    v.into_result()?;
    // Without an etag, still only over what was read: a concurrent change is a conflict, not
    // silently overwritten by the fields this request left alone.
    let stored = api
        .store
        .put_retention(&next, Some(expected.unwrap_or(current)), now_micros())
        .await?;
    api.retention_changed(&stored);
    Ok(Response::new(pb::UpdateEventRetentionSettingsResponse {
        event_retention_settings: Some(retention_to_pb(&stored)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scope_to_their_tenant() {
        assert_eq!(
            child("tenants/acme/events/0190abc", "events", "f").unwrap(),
            ("acme".to_owned(), "0190abc".to_owned())
        );
        assert!(child("tenants/acme/deadLetters/1", "events", "f").is_err());
        assert!(child("tenants/acme/events/", "events", "f").is_err());
        assert_eq!(dead_letter("tenants/acme/deadLetters/42").unwrap().1, 42);
        assert_eq!(
            dead_letter("tenants/acme/deadLetters/abc")
                .unwrap_err()
                .kind,
            maxai_kit::ErrorKind::NotFound
        );
        assert_eq!(
            retention_tenant("tenants/acme/eventRetentionSettings", "name").unwrap(),
            "acme"
        );
        assert!(retention_tenant("tenants/acme", "name").is_err());
        let mut v = Violations::new();
        assert_eq!(
            client_filter(&mut v, "acme", "tenants/acme/clients/shop").as_deref(),
            Some("shop")
        );
        assert!(v.is_empty());
        assert_eq!(
            client_filter(&mut v, "acme", "tenants/beta/clients/shop"),
            None
        );
        assert!(!v.is_empty(), "another tenant's client is refused");
    }

    #[test]
    fn retention_is_whole_days_within_a_year() {
        let day = |n: i64| prost_types::Duration {
            seconds: n * DAY_SECS,
            nanos: 0,
        };
        let mut v = Violations::new();
        assert_eq!(
            retention_days(&mut v, "f", Some(&day(7))),
            Some(7 * DAY_SECS)
        );
        assert_eq!(retention_days(&mut v, "f", None), None);
        assert!(v.is_empty());
        retention_days(&mut v, "a", Some(&day(0)));
        retention_days(&mut v, "b", Some(&day(366)));
        retention_days(
            &mut v,
            "c",
            Some(&prost_types::Duration {
                seconds: 90_000,
                nanos: 0,
            }),
        );
        let fields: Vec<String> = v.into_fields().into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["a", "b", "c"]);
    }
}
