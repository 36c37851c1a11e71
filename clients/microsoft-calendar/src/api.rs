//! The CalendarService over Microsoft Graph: validate → convert → call → map.
use chrono::Duration;
use maxai_adapter::credentials::require_provider;
use maxai_adapter::{validate, Connection, Retry};
use maxai_kit::error::Violations;
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarService;
use maxai_proto::maxai::ports::calendar::v1::{
    CheckAvailabilityRequest, CheckAvailabilityResponse, CreateEventRequest, CreateEventResponse,
    Event, EventStatus, ListEventsRequest, ListEventsResponse, UpdateEventRequest,
    UpdateEventResponse,
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::convert::{self, GraphEvent, GraphEventList, GraphSchedules, UPDATABLE};
use crate::MicrosoftCalendarAdapter;
use maxai_adapter::calendar::check_zone;

const MAX_PAGE_SIZE: i32 = 250;
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_CALENDARS: usize = 50;
const MAX_SCHEDULE_DAYS: i64 = 42;
/// Answers in UTC, so every `dateTime` we read names its instant without a zone lookup.
const PREFER: &str = "outlook.timezone=\"UTC\", outlook.body-content-type=\"text\"";

/// One path segment, percent-encoded: Graph ids hold `/`, `+` and `=`.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/v1.0/me/calendar…` for the default calendar, `/v1.0/me/calendars/{id}…` otherwise.
fn calendar_path(calendar_id: &str, rest: &str) -> String {
    match calendar_id {
        "" | "primary" => format!("/v1.0/me{rest}"),
        id => format!("/v1.0/me/calendars/{}{rest}", segment(id)),
    }
}

/// The shared event checks, plus Graph's own: CANCELLED cannot be written, since Graph cancels
/// through its cancel action (which also mails the attendees).
fn check_event(event: &Event, paths: &[&str], v: &mut Violations) {
    maxai_adapter::calendar::check_event(event, paths, v);
    if paths.contains(&"status") && event.status() == EventStatus::Cancelled {
        v.add(
            "event.status",
            "CANCELLED cannot be set here: Graph cancels an event through its cancel action",
        );
    }
}

impl MicrosoftCalendarAdapter {
    /// Refuses a connection of another provider before its secret is sent anywhere.
    async fn check_provider(&self, connection: &str) -> Result<(), Status> {
        let credential = self.creds.credential(connection, false).await?;
        require_provider(&credential, &[ConnectionProvider::MicrosoftCalendar])
    }
}

#[tonic::async_trait]
impl CalendarService for MicrosoftCalendarAdapter {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let ListEventsRequest {
            context: _,
            calendar_id,
            time_min,
            time_max,
            time_zone,
            query,
            // calendarView has no deleted items to show.
            show_deleted: _,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Violations::new();
        validate::time_range(
            "time_min",
            time_min.as_ref(),
            "time_max",
            time_max.as_ref(),
            &mut v,
        );
        check_zone("time_zone", &time_zone, &mut v);
        if !query.is_empty() {
            v.add(
                "query",
                "free-text search is not supported for Microsoft calendars",
            );
        }
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            v.add("page_size", "must be between 0 and 250");
        }
        // The token is a URL we will send the bearer token to: only ever our own base URL.
        let graph_root = format!("{}/v1.0/", self.http.base_url());
        if !page_token.is_empty() && !page_token.starts_with(&graph_root) {
            v.add("page_token", "is not a page token of this calendar");
        }
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let page_size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        let (url, params): (String, Vec<(&str, String)>) = if page_token.is_empty() {
            let params = vec![
                (
                    "startDateTime",
                    time_min
                        .as_ref()
                        .and_then(convert::rfc3339)
                        .unwrap_or_default(),
                ),
                (
                    "endDateTime",
                    time_max
                        .as_ref()
                        .and_then(convert::rfc3339)
                        .unwrap_or_default(),
                ),
                ("$top", page_size.to_string()),
                ("$orderby", "start/dateTime".to_owned()),
            ];
            (
                self.http.url(&calendar_path(&calendar_id, "/calendarView")),
                params,
            )
        } else {
            (page_token, Vec::new())
        };
        let response = self
            .http
            .call(&*self.creds, &connection.name, Retry::Safe, |c, cred| {
                c.get(&url)
                    .bearer_auth(&cred.access_token)
                    .header("Prefer", PREFER)
                    .query(&params)
            })
            .await?;
        let GraphEventList { value, next_link } = response.json()?;
        let events = value
            .into_iter()
            .map(|e| convert::event_from(e, &calendar_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListEventsResponse {
            events,
            next_page_token: next_link,
            time_zone: String::new(),
        }))
    }

    async fn create_event(
        &self,
        request: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let CreateEventRequest {
            context: _,
            calendar_id,
            event,
            // Graph always invites the attendees of a new event.
            send_updates: _,
            add_conference,
        } = request.into_inner();
        let mut v = Violations::new();
        let event = event.unwrap_or_default();
        check_event(&event, UPDATABLE, &mut v);
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let mut body = convert::event_body(&event, UPDATABLE);
        let transaction = (!connection.idempotency_key.is_empty())
            .then(|| convert::transaction_id_for(&connection.name, &connection.idempotency_key));
        if let Some(id) = &transaction {
            body.insert("transactionId".into(), json!(id));
        }
        if add_conference {
            body.insert("isOnlineMeeting".into(), json!(true));
            body.insert("onlineMeetingProvider".into(), json!("teamsForBusiness"));
        }
        // Graph dedupes on transactionId, so only a create carrying one may be repeated.
        let retry = if transaction.is_some() {
            Retry::Safe
        } else {
            Retry::Never
        };
        let url = self.http.url(&calendar_path(&calendar_id, "/events"));
        let body = Value::Object(body);
        let response = self
            .http
            .call(&*self.creds, &connection.name, retry, |c, cred| {
                c.post(&url)
                    .bearer_auth(&cred.access_token)
                    .header("Prefer", PREFER)
                    .json(&body)
            })
            .await?;
        let created = response.json::<GraphEvent>()?;
        let event = convert::event_from(created, &calendar_id)?;
        Ok(Response::new(CreateEventResponse { event: Some(event) }))
    }

    async fn update_event(
        &self,
        request: Request<UpdateEventRequest>,
    ) -> Result<Response<UpdateEventResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let UpdateEventRequest {
            context: _,
            event,
            update_mask,
            // Graph mails attendees about changes itself.
            send_updates: _,
        } = request.into_inner();
        let mut v = Violations::new();
        let event = event.unwrap_or_default();
        validate::required("event.id", &event.id, &mut v);
        let paths: Vec<&str> = match &update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
            _ => UPDATABLE.to_vec(),
        };
        for path in &paths {
            if !UPDATABLE.contains(path) {
                v.add("update_mask", format!("unknown or read-only path: {path}"));
            }
        }
        check_event(&event, &paths, &mut v);
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let body = Value::Object(convert::event_body(&event, &paths));
        let url = self
            .http
            .url(&format!("/v1.0/me/events/{}", segment(&event.id)));
        let if_match = (!event.etag.is_empty()).then(|| format!("W/\"{}\"", event.etag));
        // With an etag a repeat after a lost answer would meet our own change as a 412.
        let retry = if if_match.is_none() {
            Retry::Safe
        } else {
            Retry::Never
        };
        let response = self
            .http
            .call(&*self.creds, &connection.name, retry, |c, cred| {
                let request = c
                    .patch(&url)
                    .bearer_auth(&cred.access_token)
                    .header("Prefer", PREFER)
                    .json(&body);
                match &if_match {
                    Some(tag) => request.header(reqwest::header::IF_MATCH, tag),
                    None => request,
                }
            })
            .await?;
        let updated = response.json::<GraphEvent>()?;
        let event = convert::event_from(updated, &event.calendar_id)?;
        Ok(Response::new(UpdateEventResponse { event: Some(event) }))
    }

    async fn check_availability(
        &self,
        request: Request<CheckAvailabilityRequest>,
    ) -> Result<Response<CheckAvailabilityResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let CheckAvailabilityRequest {
            context: _,
            calendar_ids,
            time_min,
            time_max,
            time_zone,
        } = request.into_inner();
        let mut v = Violations::new();
        if calendar_ids.is_empty() || calendar_ids.len() > MAX_CALENDARS {
            v.add("calendar_ids", "must name 1 to 50 mailboxes");
        }
        for (i, id) in calendar_ids.iter().enumerate() {
            if !id.contains('@') {
                v.add(format!("calendar_ids[{i}]"), "must be a mailbox address");
            }
        }
        validate::time_range(
            "time_min",
            time_min.as_ref(),
            "time_max",
            time_max.as_ref(),
            &mut v,
        );
        let window = time_min
            .as_ref()
            .and_then(convert::instant)
            .zip(time_max.as_ref().and_then(convert::instant));
        if window.is_some_and(|(min, max)| max - min > Duration::days(MAX_SCHEDULE_DAYS)) {
            v.add("time_max", "Graph answers windows of at most 42 days");
        }
        check_zone("time_zone", &time_zone, &mut v);
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let zone = if time_zone.is_empty() {
            "UTC"
        } else {
            time_zone.as_str()
        };
        let body = json!({
            "schedules": calendar_ids,
            "startTime": time_min.as_ref().and_then(|t| convert::graph_time(t, zone)),
            "endTime": time_max.as_ref().and_then(|t| convert::graph_time(t, zone)),
            "availabilityViewInterval": 30,
        });
        let url = self.http.url("/v1.0/me/calendar/getSchedule");
        // getSchedule only reads, so it is safe to repeat.
        let response = self
            .http
            .call(&*self.creds, &connection.name, Retry::Safe, |c, cred| {
                c.post(&url)
                    .bearer_auth(&cred.access_token)
                    .header("Prefer", PREFER)
                    .json(&body)
            })
            .await?;
        let answer = response.json::<GraphSchedules>()?;
        let calendars = convert::availability(answer, &calendar_ids)?;
        Ok(Response::new(CheckAvailabilityResponse { calendars }))
    }
}
