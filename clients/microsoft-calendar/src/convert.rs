//! Port messages ⇄ Microsoft Graph JSON. Graph's JSON is read into typed structs (nulls read
//! as empty) that are destructured without `..`, so a field added here must be mapped or
//! explicitly dropped.
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone as _, Utc};
use chrono_tz::Tz;
use maxai_adapter::ProviderError;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::ports::calendar::v1::{
    Attendee, AttendeeRole, BusyInterval, BusyStatus, CalendarAvailability, Date, Event,
    EventStatus, ResponseStatus,
};
use prost_types::Timestamp;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::{tz, PROVIDER};
pub use maxai_adapter::calendar::{date_of, naive_date};

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

/// The `transactionId` a create with this idempotency key carries: SHA-256 over connection and
/// key in UUID form, so the same step of the same execution always names one event.
pub fn transaction_id_for(connection: &str, idempotency_key: &str) -> String {
    let digest = Sha256::digest(format!("{connection}\n{idempotency_key}"));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Graph's error body → (code, message).
pub fn parse_error(_status: u16, body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Body {
        error: ErrorBody,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ErrorBody {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: ErrorBody { code, message },
        }) => (code, message),
        Err(_) => (String::new(), String::new()),
    }
}

/// Graph sends `null` for absent values; they read as the empty value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

// ---------------------------------------------------------------------------------------
// Graph JSON

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GraphEventList {
    #[serde(deserialize_with = "nullable")]
    pub value: Vec<GraphEvent>,
    #[serde(rename = "@odata.nextLink", deserialize_with = "nullable")]
    pub next_link: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphEvent {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub change_key: String,
    #[serde(deserialize_with = "nullable")]
    pub subject: String,
    #[serde(deserialize_with = "nullable")]
    pub body: GraphBody,
    #[serde(deserialize_with = "nullable")]
    pub start: GraphDateTime,
    #[serde(deserialize_with = "nullable")]
    pub end: GraphDateTime,
    #[serde(deserialize_with = "nullable")]
    pub original_start_time_zone: String,
    #[serde(deserialize_with = "nullable")]
    pub location: GraphLocation,
    #[serde(deserialize_with = "nullable")]
    pub attendees: Vec<GraphAttendee>,
    #[serde(deserialize_with = "nullable")]
    pub is_all_day: bool,
    #[serde(deserialize_with = "nullable")]
    pub is_cancelled: bool,
    #[serde(deserialize_with = "nullable")]
    pub show_as: String,
    #[serde(deserialize_with = "nullable")]
    pub web_link: String,
    #[serde(deserialize_with = "nullable")]
    pub online_meeting: GraphOnlineMeeting,
    #[serde(rename = "iCalUId", deserialize_with = "nullable")]
    pub ical_uid: String,
    #[serde(deserialize_with = "nullable")]
    pub series_master_id: String,
    #[serde(deserialize_with = "nullable")]
    pub organizer: GraphRecipient,
    #[serde(deserialize_with = "nullable")]
    pub created_date_time: String,
    #[serde(deserialize_with = "nullable")]
    pub last_modified_date_time: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphBody {
    #[serde(deserialize_with = "nullable")]
    pub content: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphDateTime {
    #[serde(deserialize_with = "nullable")]
    pub date_time: String,
    #[serde(deserialize_with = "nullable")]
    pub time_zone: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphLocation {
    #[serde(deserialize_with = "nullable")]
    pub display_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphAttendee {
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub status: GraphResponse,
    #[serde(deserialize_with = "nullable")]
    pub email_address: GraphEmail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphResponse {
    #[serde(deserialize_with = "nullable")]
    pub response: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphEmail {
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphRecipient {
    #[serde(deserialize_with = "nullable")]
    pub email_address: GraphEmail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphOnlineMeeting {
    #[serde(deserialize_with = "nullable")]
    pub join_url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GraphSchedules {
    #[serde(deserialize_with = "nullable")]
    pub value: Vec<GraphSchedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphSchedule {
    #[serde(deserialize_with = "nullable")]
    pub schedule_id: String,
    #[serde(deserialize_with = "nullable")]
    pub schedule_items: Vec<GraphScheduleItem>,
    pub error: Option<GraphScheduleError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphScheduleItem {
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub start: GraphDateTime,
    #[serde(deserialize_with = "nullable")]
    pub end: GraphDateTime,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphScheduleError {
    #[serde(deserialize_with = "nullable")]
    pub message: String,
    #[serde(deserialize_with = "nullable")]
    pub response_code: String,
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

/// RFC 3339 in UTC, for calendarView's window.
pub fn rfc3339(t: &Timestamp) -> Option<String> {
    instant(t).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Graph's `dateTimeTimeZone` for an instant: the wall time in `iana` with its Windows name.
pub fn graph_time(t: &Timestamp, iana: &str) -> Option<Value> {
    let zone: Tz = iana.parse().ok()?;
    let local = instant(t)?.with_timezone(&zone).naive_local();
    Some(json!({
        "dateTime": local.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "timeZone": tz::windows_name(iana),
    }))
}

fn graph_midnight(d: &Date, iana: &str) -> Option<Value> {
    let date = naive_date(d)?;
    Some(json!({
        "dateTime": format!("{}T00:00:00", date.format("%Y-%m-%d")),
        "timeZone": tz::windows_name(iana),
    }))
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::new(
        PROVIDER,
        ErrorKind::Provider,
        format!("unexpected response: {what}"),
    )
}

fn parse_local(value: &GraphDateTime) -> Result<Option<NaiveDateTime>, ProviderError> {
    if value.date_time.is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(
        value.date_time.trim_end_matches('Z'),
        "%Y-%m-%dT%H:%M:%S%.f",
    )
    .map(Some)
    .map_err(|_| unexpected("event time"))
}

/// The instant a Graph `dateTimeTimeZone` names (UTC when its zone is unknown to us, which
/// cannot happen for answers we asked in UTC).
fn parse_graph_time(value: &GraphDateTime) -> Result<Option<Timestamp>, ProviderError> {
    let Some(local) = parse_local(value)? else {
        return Ok(None);
    };
    let zone = tz::zone(&value.time_zone).unwrap_or(Tz::UTC);
    let at = zone
        .from_local_datetime(&local)
        .earliest()
        .ok_or_else(|| unexpected("event time in a DST gap"))?;
    Ok(Some(timestamp(at.with_timezone(&Utc))))
}

fn parse_stamp(text: &str) -> Result<Option<Timestamp>, ProviderError> {
    if text.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(timestamp(t.with_timezone(&Utc))))
        .map_err(|_| unexpected("event timestamp"))
}

// ---------------------------------------------------------------------------------------
// Port → Graph

fn attendee_body(attendee: &Attendee) -> Value {
    let Attendee {
        email,
        display_name,
        role,
        response_status: _,
        organizer: _,
    } = attendee;
    let kind = match AttendeeRole::try_from(*role).unwrap_or(AttendeeRole::Required) {
        AttendeeRole::Optional => "optional",
        AttendeeRole::Resource => "resource",
        AttendeeRole::Required | AttendeeRole::Unspecified => "required",
    };
    let mut address = json!({ "address": email });
    if !display_name.is_empty() {
        address["name"] = json!(display_name);
    }
    json!({"emailAddress": address, "type": kind})
}

/// The Graph body for `event`, limited to `paths` (the UpdateEvent mask; all for a create).
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
        time_zone,
        all_day,
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
    let zone = if time_zone.is_empty() {
        "UTC"
    } else {
        time_zone.as_str()
    };
    let mut body = Map::new();
    if has("summary") {
        body.insert("subject".into(), json!(summary));
    }
    if has("description") {
        body.insert(
            "body".into(),
            json!({"contentType": "text", "content": description}),
        );
    }
    if has("location") {
        body.insert("location".into(), json!({ "displayName": location }));
    }
    let zone_or_kind = has("time_zone") || has("all_day");
    let start = if *all_day {
        start_date.as_ref().and_then(|d| graph_midnight(d, zone))
    } else {
        start_time.as_ref().and_then(|t| graph_time(t, zone))
    };
    let end = if *all_day {
        end_date.as_ref().and_then(|d| graph_midnight(d, zone))
    } else {
        end_time.as_ref().and_then(|t| graph_time(t, zone))
    };
    if zone_or_kind || has("start_time") || has("start_date") {
        body.extend(start.map(|s| ("start".to_owned(), s)));
    }
    if zone_or_kind || has("end_time") || has("end_date") {
        body.extend(end.map(|e| ("end".to_owned(), e)));
    }
    if zone_or_kind {
        body.insert("isAllDay".into(), json!(all_day));
    }
    if has("attendees") {
        let list: Vec<Value> = attendees.iter().map(attendee_body).collect();
        body.insert("attendees".into(), Value::Array(list));
    }
    if has("status") {
        match EventStatus::try_from(*status).unwrap_or(EventStatus::Unspecified) {
            EventStatus::Tentative => {
                body.insert("showAs".into(), json!("tentative"));
            }
            EventStatus::Confirmed => {
                body.insert("showAs".into(), json!("busy"));
            }
            // Refused before we get here; unspecified leaves Graph's default.
            EventStatus::Cancelled | EventStatus::Unspecified => {}
        }
    }
    body
}

// ---------------------------------------------------------------------------------------
// Graph → port

fn attendee(a: GraphAttendee) -> Attendee {
    let GraphAttendee {
        kind,
        status: GraphResponse { response },
        email_address: GraphEmail { address, name },
    } = a;
    let role = match kind.as_str() {
        "optional" => AttendeeRole::Optional,
        "resource" => AttendeeRole::Resource,
        _ => AttendeeRole::Required,
    };
    let status = match response.as_str() {
        "none" | "notResponded" => ResponseStatus::NeedsAction,
        "accepted" | "organizer" => ResponseStatus::Accepted,
        "tentativelyAccepted" => ResponseStatus::Tentative,
        "declined" => ResponseStatus::Declined,
        _ => ResponseStatus::Unspecified,
    };
    Attendee {
        email: address,
        display_name: name,
        role: role.into(),
        response_status: status.into(),
        organizer: response == "organizer",
    }
}

/// A Graph event as the port's Event.
pub fn event_from(g: GraphEvent, calendar_id: &str) -> Result<Event, ProviderError> {
    let GraphEvent {
        id,
        change_key,
        subject,
        body: GraphBody {
            content: description,
        },
        start,
        end,
        original_start_time_zone,
        location: GraphLocation {
            display_name: location,
        },
        attendees,
        is_all_day,
        is_cancelled,
        show_as,
        web_link,
        online_meeting: GraphOnlineMeeting { join_url },
        ical_uid,
        series_master_id,
        organizer: GraphRecipient {
            email_address: organizer,
        },
        created_date_time,
        last_modified_date_time,
    } = g;
    let status = if is_cancelled {
        EventStatus::Cancelled
    } else if show_as == "tentative" {
        EventStatus::Tentative
    } else {
        EventStatus::Confirmed
    };
    // All-day events float: their wall dates are the days, whatever zone they are shown in.
    let (start_time, end_time, start_date, end_date) = if is_all_day {
        let day = |v: &GraphDateTime| parse_local(v).map(|t| t.map(|t| date_of(t.date())));
        (None, None, day(&start)?, day(&end)?)
    } else {
        (
            parse_graph_time(&start)?,
            parse_graph_time(&end)?,
            None,
            None,
        )
    };
    Ok(Event {
        id,
        calendar_id: calendar_id.to_owned(),
        summary: subject,
        description,
        location,
        start_time,
        end_time,
        time_zone: tz::iana_name(&original_start_time_zone).unwrap_or_default(),
        all_day: is_all_day,
        start_date,
        end_date,
        attendees: attendees.into_iter().map(attendee).collect(),
        status: status.into(),
        etag: change_key,
        html_link: web_link,
        conference_url: join_url,
        ical_uid,
        recurring_event_id: series_master_id,
        organizer_email: organizer.address,
        create_time: parse_stamp(&created_date_time)?,
        update_time: parse_stamp(&last_modified_date_time)?,
    })
}

fn busy_status(status: &str) -> Option<BusyStatus> {
    match status {
        "busy" => Some(BusyStatus::Busy),
        "tentative" => Some(BusyStatus::Tentative),
        "oof" => Some(BusyStatus::OutOfOffice),
        "workingElsewhere" => Some(BusyStatus::WorkingElsewhere),
        // free and unknown are not busy time.
        _ => None,
    }
}

/// getSchedule's answer as one entry per requested mailbox, in request order.
pub fn availability(
    answer: GraphSchedules,
    requested: &[String],
) -> Result<Vec<CalendarAvailability>, ProviderError> {
    let mut schedules = answer.value;
    let mut out = Vec::with_capacity(requested.len());
    for id in requested {
        let position = schedules
            .iter()
            .position(|s| s.schedule_id.eq_ignore_ascii_case(id));
        let Some(GraphSchedule {
            schedule_id: _,
            schedule_items,
            error,
        }) = position.map(|i| schedules.swap_remove(i))
        else {
            out.push(CalendarAvailability {
                calendar_id: id.clone(),
                busy: Vec::new(),
                error: "notFound".to_owned(),
            });
            continue;
        };
        if let Some(GraphScheduleError {
            message,
            response_code,
        }) = error
        {
            let error = if response_code.is_empty() {
                message
            } else {
                response_code
            };
            out.push(CalendarAvailability {
                calendar_id: id.clone(),
                busy: Vec::new(),
                error,
            });
            continue;
        }
        let mut busy = Vec::new();
        for GraphScheduleItem { status, start, end } in schedule_items {
            let Some(status) = busy_status(&status) else {
                continue;
            };
            busy.push(BusyInterval {
                start_time: parse_graph_time(&start)?,
                end_time: parse_graph_time(&end)?,
                status: status.into(),
            });
        }
        busy.sort_by_key(|b| b.start_time.as_ref().map(|t| (t.seconds, t.nanos)));
        out.push(CalendarAvailability {
            calendar_id: id.clone(),
            busy,
            error: String::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_are_stable_per_connection_and_key() {
        let a = transaction_id_for("tenants/t/clients/c/connections/m", "exec-1/step-2");
        assert_eq!(
            a,
            transaction_id_for("tenants/t/clients/c/connections/m", "exec-1/step-2")
        );
        assert_ne!(
            a,
            transaction_id_for("tenants/t/clients/c/connections/x", "exec-1/step-2")
        );
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn instants_become_wall_times_in_the_zone_across_dst() {
        // 2026-07-01T14:00Z is 10:00 EDT; 2026-01-05T15:00Z is 10:00 EST.
        let summer = Timestamp {
            seconds: 1_782_914_400,
            nanos: 0,
        };
        let winter = Timestamp {
            seconds: 1_767_625_200,
            nanos: 0,
        };
        let s = graph_time(&summer, "America/New_York").unwrap();
        let w = graph_time(&winter, "America/New_York").unwrap();
        assert_eq!(s["dateTime"], "2026-07-01T10:00:00");
        assert_eq!(w["dateTime"], "2026-01-05T10:00:00");
        assert_eq!(s["timeZone"], "Eastern Standard Time");
    }

    #[test]
    fn graph_errors_give_code_and_message() {
        let body = br#"{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store.","innerError":{}}}"#;
        assert_eq!(parse_error(404, body).0, "ErrorItemNotFound");
        assert_eq!(
            parse_error(502, b"bad gateway"),
            (String::new(), String::new())
        );
    }
}
