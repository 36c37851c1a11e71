//! Port messages ⇄ Google Calendar JSON. Google's JSON is read into typed structs that are
//! destructured without `..`, so a field added here must be mapped or explicitly dropped.
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use maxai_adapter::ProviderError;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::ports::calendar::v1::{
    Attendee, AttendeeRole, BusyInterval, BusyStatus, CalendarAvailability, Date, Event,
    EventStatus, ResponseStatus,
};
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::PROVIDER;
pub use maxai_adapter::calendar::{date_of, naive_date};

/// Google's base32hex alphabet for event ids (RFC 4648 §7, lower case).
const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// The event id a create with this idempotency key uses: base32hex of SHA-256 over the
/// connection and the key, so the same step of the same execution always names one event and
/// two connections sharing a calendar cannot collide.
pub fn event_id_for(connection: &str, idempotency_key: &str) -> String {
    let digest = Sha256::digest(format!("{connection}\n{idempotency_key}"));
    let mut out = String::with_capacity(52);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32HEX[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(
            BASE32HEX[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

/// Google's error body → (first reason, message).
pub fn parse_error(_status: u16, body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Body {
        error: ErrorBody,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ErrorBody {
        message: String,
        errors: Vec<Item>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Item {
        reason: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => {
            let reason = error
                .errors
                .into_iter()
                .next()
                .map(|i| i.reason)
                .unwrap_or_default();
            (reason, error.message)
        }
        Err(_) => (String::new(), String::new()),
    }
}

// ---------------------------------------------------------------------------------------
// Google JSON

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GEventList {
    pub items: Vec<GEvent>,
    pub next_page_token: String,
    pub time_zone: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GEvent {
    pub id: String,
    pub etag: String,
    pub status: String,
    pub html_link: String,
    pub created: String,
    pub updated: String,
    pub summary: String,
    pub description: String,
    pub location: String,
    pub start: GTime,
    pub end: GTime,
    pub attendees: Vec<GAttendee>,
    pub organizer: GPerson,
    #[serde(rename = "iCalUID")]
    pub ical_uid: String,
    pub recurring_event_id: String,
    pub hangout_link: String,
    pub conference_data: GConferenceData,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GTime {
    #[serde(deserialize_with = "nullable")]
    pub date_time: String,
    #[serde(deserialize_with = "nullable")]
    pub date: String,
    #[serde(deserialize_with = "nullable")]
    pub time_zone: String,
}

/// A `null` reads as the empty value, so a sparse answer never fails a whole list.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GAttendee {
    pub email: String,
    pub display_name: String,
    pub optional: bool,
    pub resource: bool,
    pub organizer: bool,
    pub response_status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GPerson {
    pub email: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GConferenceData {
    pub entry_points: Vec<GEntryPoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GEntryPoint {
    pub entry_point_type: String,
    pub uri: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GFreeBusy {
    pub calendars: std::collections::HashMap<String, GFreeBusyCalendar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GFreeBusyCalendar {
    pub busy: Vec<GPeriod>,
    pub errors: Vec<GReason>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GPeriod {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GReason {
    pub reason: String,
}

// ---------------------------------------------------------------------------------------
// Times

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn instant(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// RFC 3339 in UTC, as Google takes `timeMin`, `timeMax` and `dateTime`.
pub fn rfc3339(t: &Timestamp) -> Option<String> {
    instant(t).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::new(
        PROVIDER,
        ErrorKind::Provider,
        format!("unexpected response: {what}"),
    )
}

fn parse_instant(text: &str, what: &str) -> Result<Option<Timestamp>, ProviderError> {
    if text.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(timestamp(t.with_timezone(&Utc))))
        .map_err(|_| unexpected(what))
}

// ---------------------------------------------------------------------------------------
// Port → Google

/// The paths UpdateEvent may name.
pub const UPDATABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "start_time",
    "end_time",
    "time_zone",
    "all_day",
    "start_date",
    "end_date",
    "attendees",
    "status",
];

/// Google's `start` / `end` object for one side of an event. The other variant is nulled so
/// a PATCH that turns a timed event into an all-day one (or back) leaves no stale half.
fn edge(event: &Event, time: Option<&Timestamp>, date: Option<&Date>) -> Value {
    if event.all_day {
        let date = date
            .and_then(naive_date)
            .map(|d| d.format("%Y-%m-%d").to_string());
        json!({"date": date, "dateTime": null, "timeZone": null})
    } else {
        let zone = (!event.time_zone.is_empty()).then(|| event.time_zone.clone());
        json!({"dateTime": time.and_then(rfc3339), "date": null, "timeZone": zone})
    }
}

fn role_fields(attendee: &Attendee) -> Value {
    let Attendee {
        email,
        display_name,
        role,
        response_status: _,
        organizer: _,
    } = attendee;
    let mut out = json!({ "email": email });
    if !display_name.is_empty() {
        out["displayName"] = json!(display_name);
    }
    match AttendeeRole::try_from(*role).unwrap_or(AttendeeRole::Required) {
        AttendeeRole::Optional => out["optional"] = json!(true),
        AttendeeRole::Resource => out["resource"] = json!(true),
        AttendeeRole::Required | AttendeeRole::Unspecified => {}
    }
    out
}

fn status_text(status: i32) -> Option<&'static str> {
    match EventStatus::try_from(status).unwrap_or(EventStatus::Unspecified) {
        EventStatus::Unspecified => None,
        EventStatus::Confirmed => Some("confirmed"),
        EventStatus::Tentative => Some("tentative"),
        EventStatus::Cancelled => Some("cancelled"),
    }
}

/// The Google body for `event`, limited to `paths` (the UpdateEvent mask; all for a create).
/// Output-only fields are never sent.
pub fn event_body(event: &Event, paths: &[&str]) -> Map<String, Value> {
    let Event {
        id: _,
        calendar_id: _,
        summary,
        description,
        location,
        start_time,
        end_time,
        time_zone: _,
        all_day: _,
        start_date,
        end_date,
        attendees,
        status,
        etag: _,
        html_link: _,
        conference_url: _,
        ical_uid: _,
        recurring_event_id: _,
        organizer_email: _,
        create_time: _,
        update_time: _,
    } = event;
    let has = |p: &str| paths.contains(&p);
    let mut body = Map::new();
    if has("summary") {
        body.insert("summary".into(), json!(summary));
    }
    if has("description") {
        body.insert("description".into(), json!(description));
    }
    if has("location") {
        body.insert("location".into(), json!(location));
    }
    let zone_or_kind = has("time_zone") || has("all_day");
    if zone_or_kind || has("start_time") || has("start_date") {
        body.insert(
            "start".into(),
            edge(event, start_time.as_ref(), start_date.as_ref()),
        );
    }
    if zone_or_kind || has("end_time") || has("end_date") {
        body.insert(
            "end".into(),
            edge(event, end_time.as_ref(), end_date.as_ref()),
        );
    }
    if has("attendees") {
        let list: Vec<Value> = attendees.iter().map(role_fields).collect();
        body.insert("attendees".into(), Value::Array(list));
    }
    if has("status") {
        if let Some(status) = status_text(*status) {
            body.insert("status".into(), json!(status));
        }
    }
    body
}

// ---------------------------------------------------------------------------------------
// Google → port

fn response_status(text: &str) -> ResponseStatus {
    match text {
        "needsAction" => ResponseStatus::NeedsAction,
        "accepted" => ResponseStatus::Accepted,
        "tentative" => ResponseStatus::Tentative,
        "declined" => ResponseStatus::Declined,
        _ => ResponseStatus::Unspecified,
    }
}

fn attendee(a: GAttendee) -> Attendee {
    let GAttendee {
        email,
        display_name,
        optional,
        resource,
        organizer,
        response_status: status,
    } = a;
    let role = if resource {
        AttendeeRole::Resource
    } else if optional {
        AttendeeRole::Optional
    } else {
        AttendeeRole::Required
    };
    Attendee {
        email,
        display_name,
        role: role.into(),
        response_status: response_status(&status).into(),
        organizer,
    }
}

fn parse_date(text: &str) -> Result<Option<Date>, ProviderError> {
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| Some(date_of(d)))
        .map_err(|_| unexpected("event date"))
}

/// A Google event as the port's Event.
pub fn event_from(g: GEvent, calendar_id: &str) -> Result<Event, ProviderError> {
    let GEvent {
        id,
        etag,
        status,
        html_link,
        created,
        updated,
        summary,
        description,
        location,
        start,
        end,
        attendees,
        organizer,
        ical_uid,
        recurring_event_id,
        hangout_link,
        conference_data,
    } = g;
    let GTime {
        date_time: start_time,
        date: start_date,
        time_zone,
    } = start;
    let GTime {
        date_time: end_time,
        date: end_date,
        time_zone: _,
    } = end;
    let status = match status.as_str() {
        "confirmed" => EventStatus::Confirmed,
        "tentative" => EventStatus::Tentative,
        "cancelled" => EventStatus::Cancelled,
        _ => EventStatus::Unspecified,
    };
    let conference_url = if hangout_link.is_empty() {
        conference_data
            .entry_points
            .into_iter()
            .find(|e| e.entry_point_type == "video")
            .map(|e| e.uri)
            .unwrap_or_default()
    } else {
        hangout_link
    };
    Ok(Event {
        id,
        calendar_id: calendar_id.to_owned(),
        summary,
        description,
        location,
        start_time: parse_instant(&start_time, "event start")?,
        end_time: parse_instant(&end_time, "event end")?,
        time_zone,
        all_day: !start_date.is_empty(),
        start_date: parse_date(&start_date)?,
        end_date: parse_date(&end_date)?,
        attendees: attendees.into_iter().map(attendee).collect(),
        status: status.into(),
        etag,
        html_link,
        conference_url,
        ical_uid,
        recurring_event_id,
        organizer_email: organizer.email,
        create_time: parse_instant(&created, "event created")?,
        update_time: parse_instant(&updated, "event updated")?,
    })
}

/// freeBusy's map as one entry per requested calendar, in request order.
pub fn availability(
    mut answer: GFreeBusy,
    requested: &[String],
) -> Result<Vec<CalendarAvailability>, ProviderError> {
    let mut out = Vec::with_capacity(requested.len());
    for id in requested {
        let Some(GFreeBusyCalendar { busy, errors }) = answer.calendars.remove(id) else {
            out.push(CalendarAvailability {
                calendar_id: id.clone(),
                busy: Vec::new(),
                error: "notFound".to_owned(),
            });
            continue;
        };
        if let Some(GReason { reason }) = errors.into_iter().next() {
            out.push(CalendarAvailability {
                calendar_id: id.clone(),
                busy: Vec::new(),
                error: reason,
            });
            continue;
        }
        let mut intervals = Vec::with_capacity(busy.len());
        for GPeriod { start, end } in busy {
            intervals.push(BusyInterval {
                start_time: parse_instant(&start, "busy start")?,
                end_time: parse_instant(&end, "busy end")?,
                status: BusyStatus::Busy.into(),
            });
        }
        intervals.sort_by_key(|b| b.start_time.as_ref().map(|t| (t.seconds, t.nanos)));
        out.push(CalendarAvailability {
            calendar_id: id.clone(),
            busy: intervals,
            error: String::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_base32hex_within_googles_rule() {
        let a = event_id_for("tenants/t/clients/c/connections/g", "exec-1/step-2");
        assert_eq!(
            a,
            event_id_for("tenants/t/clients/c/connections/g", "exec-1/step-2")
        );
        assert_ne!(
            a,
            event_id_for("tenants/t/clients/c/connections/g", "exec-1/step-3")
        );
        assert_eq!(a.len(), 52);
        assert!(a.bytes().all(|b| BASE32HEX.contains(&b)));
    }

    #[test]
    fn google_errors_give_reason_and_message() {
        let body = br#"{"error":{"errors":[{"domain":"global","reason":"notFound","message":"Not Found"}],"code":404,"message":"Not Found"}}"#;
        assert_eq!(
            parse_error(404, body),
            ("notFound".into(), "Not Found".into())
        );
        assert_eq!(parse_error(502, b"<html>"), (String::new(), String::new()));
    }
}
