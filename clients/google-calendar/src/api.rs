//! The CalendarService over Google Calendar v3: validate → convert → call → map.
use maxai_adapter::credentials::require_provider;
use maxai_adapter::{validate, Connection, ProviderError, Retry};
use maxai_kit::error::Violations;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarService;
use maxai_proto::maxai::ports::calendar::v1::{
    CheckAvailabilityRequest, CheckAvailabilityResponse, CreateEventRequest, CreateEventResponse,
    ListEventsRequest, ListEventsResponse, SendUpdates, UpdateEventRequest, UpdateEventResponse,
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::convert::{self, GEvent, GEventList, GFreeBusy, UPDATABLE};
use crate::GoogleCalendarAdapter;
use maxai_adapter::calendar::{check_event, check_zone};

const MAX_PAGE_SIZE: i32 = 250;
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_CALENDARS: usize = 50;

/// Google answers rate limiting as 429 or as 403 with these reasons; both mean "slow down".
const RATE_LIMIT_REASONS: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];

fn to_status(e: ProviderError) -> Status {
    let rate_limited =
        e.http_status == Some(403) && RATE_LIMIT_REASONS.contains(&e.provider_code.as_str());
    if rate_limited {
        e.with_kind(ErrorKind::RateLimited).into()
    } else {
        e.into()
    }
}

/// `primary` when the caller names no calendar.
fn calendar_or_primary(id: &str) -> &str {
    if id.is_empty() {
        "primary"
    } else {
        id
    }
}

/// One path segment, percent-encoded (calendar ids are emails, instance ids hold `_`).
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

fn events_path(calendar_id: &str) -> String {
    format!("/calendar/v3/calendars/{}/events", segment(calendar_id))
}

fn send_updates(value: i32) -> &'static str {
    match SendUpdates::try_from(value).unwrap_or(SendUpdates::Unspecified) {
        SendUpdates::Unspecified => "none",
        SendUpdates::All => "all",
        SendUpdates::ExternalOnly => "externalOnly",
    }
}

impl GoogleCalendarAdapter {
    /// Refuses a connection of another provider before its secret is sent anywhere.
    async fn check_provider(&self, connection: &str) -> Result<(), Status> {
        let credential = self.creds.credential(connection, false).await?;
        require_provider(&credential, &[ConnectionProvider::GoogleCalendar])
    }

    async fn get_event(
        &self,
        connection: &str,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<GEvent, Status> {
        let url = self.http.url(&format!(
            "{}/{}",
            events_path(calendar_id),
            segment(event_id)
        ));
        let response = self
            .http
            .call(&*self.creds, connection, Retry::Safe, |c, cred| {
                c.get(&url).bearer_auth(&cred.access_token)
            })
            .await
            .map_err(to_status)?;
        response.json::<GEvent>().map_err(to_status)
    }
}

#[tonic::async_trait]
impl CalendarService for GoogleCalendarAdapter {
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
            show_deleted,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Violations::new();
        if let (Some(min), Some(max)) = (&time_min, &time_max) {
            validate::time_range("time_min", Some(min), "time_max", Some(max), &mut v);
        }
        check_zone("time_zone", &time_zone, &mut v);
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            v.add("page_size", "must be between 0 and 250");
        }
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let calendar_id = calendar_or_primary(&calendar_id).to_owned();
        let page_size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        let mut params: Vec<(&str, String)> = vec![
            ("singleEvents", "true".into()),
            ("orderBy", "startTime".into()),
            ("maxResults", page_size.to_string()),
        ];
        params.extend(
            time_min
                .as_ref()
                .and_then(convert::rfc3339)
                .map(|t| ("timeMin", t)),
        );
        params.extend(
            time_max
                .as_ref()
                .and_then(convert::rfc3339)
                .map(|t| ("timeMax", t)),
        );
        params.extend((!time_zone.is_empty()).then(|| ("timeZone", time_zone.clone())));
        params.extend((!query.is_empty()).then(|| ("q", query.clone())));
        if show_deleted {
            params.push(("showDeleted", "true".into()));
        }
        params.extend((!page_token.is_empty()).then(|| ("pageToken", page_token.clone())));
        let url = self.http.url(&events_path(&calendar_id));
        let response = self
            .http
            .call(&*self.creds, &connection.name, Retry::Safe, |c, cred| {
                c.get(&url).bearer_auth(&cred.access_token).query(&params)
            })
            .await
            .map_err(to_status)?;
        let GEventList {
            items,
            next_page_token,
            time_zone,
        } = response.json().map_err(to_status)?;
        let events = items
            .into_iter()
            .map(|e| convert::event_from(e, &calendar_id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_status)?;
        Ok(Response::new(ListEventsResponse {
            events,
            next_page_token,
            time_zone,
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
            send_updates: updates,
            add_conference,
        } = request.into_inner();
        let mut v = Violations::new();
        let event = event.unwrap_or_default();
        check_event(&event, UPDATABLE, &mut v);
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let calendar_id = calendar_or_primary(&calendar_id).to_owned();
        let mut body = convert::event_body(&event, UPDATABLE);
        // With a key the id makes a repeated create a 409, never a second event.
        let derived = (!connection.idempotency_key.is_empty())
            .then(|| convert::event_id_for(&connection.name, &connection.idempotency_key));
        if let Some(id) = &derived {
            body.insert("id".into(), json!(id));
        }
        let mut params = vec![("sendUpdates", send_updates(updates).to_owned())];
        if add_conference {
            let request_id = derived
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            body.insert(
                "conferenceData".into(),
                json!({"createRequest": {
                    "requestId": request_id,
                    "conferenceSolutionKey": {"type": "hangoutsMeet"},
                }}),
            );
            params.push(("conferenceDataVersion", "1".to_owned()));
        }
        let retry = if derived.is_some() {
            Retry::Safe
        } else {
            Retry::Never
        };
        let url = self.http.url(&events_path(&calendar_id));
        let body = Value::Object(body);
        let answer = self
            .http
            .call(&*self.creds, &connection.name, retry, |c, cred| {
                c.post(&url)
                    .bearer_auth(&cred.access_token)
                    .query(&params)
                    .json(&body)
            })
            .await;
        let created = match (answer, &derived) {
            (Ok(response), _) => response.json::<GEvent>().map_err(to_status)?,
            // Our own earlier attempt made it: answer that event, as an idempotent create must.
            (Err(e), Some(id)) if e.http_status == Some(409) => {
                self.get_event(&connection.name, &calendar_id, id).await?
            }
            (Err(e), _) => return Err(to_status(e)),
        };
        let event = convert::event_from(created, &calendar_id).map_err(to_status)?;
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
            send_updates: updates,
        } = request.into_inner();
        let mut v = Violations::new();
        let event = event.unwrap_or_default();
        validate::required("event.id", &event.id, &mut v);
        validate::required("event.calendar_id", &event.calendar_id, &mut v);
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
        let url = self.http.url(&format!(
            "{}/{}",
            events_path(&event.calendar_id),
            segment(&event.id)
        ));
        let params = [("sendUpdates", send_updates(updates))];
        // With an etag a repeat after a lost answer would meet our own change as a 412.
        let retry = if event.etag.is_empty() {
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
                    .query(&params)
                    .json(&body);
                if event.etag.is_empty() {
                    request
                } else {
                    request.header(reqwest::header::IF_MATCH, &event.etag)
                }
            })
            .await
            .map_err(to_status)?;
        let updated = response.json::<GEvent>().map_err(to_status)?;
        let event = convert::event_from(updated, &event.calendar_id).map_err(to_status)?;
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
            v.add("calendar_ids", "must name 1 to 50 calendars");
        }
        for (i, id) in calendar_ids.iter().enumerate() {
            validate::required(&format!("calendar_ids[{i}]"), id, &mut v);
        }
        validate::time_range(
            "time_min",
            time_min.as_ref(),
            "time_max",
            time_max.as_ref(),
            &mut v,
        );
        check_zone("time_zone", &time_zone, &mut v);
        v.into_result()?;
        self.check_provider(&connection.name).await?;

        let items: Vec<Value> = calendar_ids.iter().map(|id| json!({ "id": id })).collect();
        let mut body = json!({
            "timeMin": time_min.as_ref().and_then(convert::rfc3339),
            "timeMax": time_max.as_ref().and_then(convert::rfc3339),
            "items": items,
        });
        if !time_zone.is_empty() {
            body["timeZone"] = json!(time_zone);
        }
        let url = self.http.url("/calendar/v3/freeBusy");
        // A freeBusy query reads only, so it is safe to repeat.
        let response = self
            .http
            .call(&*self.creds, &connection.name, Retry::Safe, |c, cred| {
                c.post(&url).bearer_auth(&cred.access_token).json(&body)
            })
            .await
            .map_err(to_status)?;
        let answer = response.json::<GFreeBusy>().map_err(to_status)?;
        let calendars = convert::availability(answer, &calendar_ids).map_err(to_status)?;
        Ok(Response::new(CheckAvailabilityResponse { calendars }))
    }
}
