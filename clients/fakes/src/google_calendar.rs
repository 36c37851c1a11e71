//! Fake Google Calendar API v3 (PROVIDERS.md §8.1): events list / get / insert / patch / update
//! and freeBusy under `/calendar/v3`, on a loopback port.
//!
//! It accepts exactly the access tokens the fake Google OAuth server ([`FakeGoogle`]) issued
//! and still considers live (it shares that fake's token table), so a calendar connected
//! through the OAuth flow works end to end; [`FakeGoogle::issue_access_token`] is the direct
//! way for adapter tests to get one.
//!
//! Fidelity choices worth knowing:
//! - errors are Google's JSON (`{"error":{"errors":[{domain,reason,message}],code,message}}`)
//!   with Google's reasons: `authError` (401, with `WWW-Authenticate`), `insufficientPermissions`
//!   (403, token without a calendar scope), `notFound`, `duplicate` (409, client-chosen id
//!   reused), `conditionNotMet` (412, stale `If-Match`), `timeRangeEmpty`, `required`,
//!   `invalid`; injected 429 and 403 answer `usageLimits` / `rateLimitExceeded`, as Google does;
//! - client-chosen event ids must be base32hex (`0-9a-v`), 5–1024 characters;
//! - `primary` is the token's user's calendar (id = the email); another user's calendar is
//!   `notFound` for events but readable in freeBusy, as within one Workspace domain;
//! - events keep their time zone: `start{dateTime,timeZone}` is stored as an instant plus the
//!   zone, and rendered with the offset of that zone (or of the list's `timeZone` parameter);
//!   all-day events (`start.date`) are placed in the calendar's zone;
//! - `singleEvents=true` expands `RRULE` recurrences (FREQ=DAILY/WEEKLY with INTERVAL, COUNT,
//!   UNTIL; other rules are stored but return the master only) into instances with Google's
//!   `{id}_{YYYYMMDDTHHMMSSZ}` ids and `recurringEventId`;
//! - Meet links are created only with `conferenceDataVersion=1` and a `createRequest`, as at
//!   Google; without it `conferenceData` is dropped silently.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::google_oidc::{FakeGoogle, GoogleTokenInfo, GoogleTokens};
use crate::harness::{loopback, ErrorBody, Failure, Harness, Recorded, Running};

/// Scopes that allow reading and writing events.
const WRITE_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
];
/// Scopes that allow reading events.
const READ_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
];
/// Scopes that allow freeBusy.
const FREEBUSY_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
    "https://www.googleapis.com/auth/calendar.freebusy",
];
/// Query parameters never recorded (Google accepts `access_token` in the query).
const SECRET_PARAMS: &[&str] = &["access_token", "key"];
/// Google's cap on instances one expansion yields, so an endless rule cannot hang a list.
const MAX_INSTANCES: usize = 1000;
const MAX_FREEBUSY_ITEMS: usize = 50;

/// A running fake Google Calendar; it stops when dropped.
pub struct FakeGoogleCalendar {
    shared: Arc<Shared>,
    harness: Harness,
    running: Running,
}

struct Shared {
    tokens: GoogleTokens,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    calendars: HashMap<String, Calendar>,
    /// Last etag value handed out: etags only grow, even within one microsecond.
    last_etag: i64,
}

struct Calendar {
    owner: String,
    time_zone: Tz,
    /// Insertion order, which is Google's order when no `orderBy` is given.
    events: Vec<Value>,
}

impl FakeGoogleCalendar {
    /// Starts on `127.0.0.1:0`, accepting the access tokens `google` issues.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test needing this fake could run.
    pub async fn start(google: &FakeGoogle) -> FakeGoogleCalendar {
        let started = async { Self::try_start_on(loopback().await?, google.tokens()) };
        match started.await {
            Ok(fake) => fake,
            Err(err) => panic!("fake google calendar failed to start: {err}"),
        }
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(listener: TcpListener, tokens: GoogleTokens) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            tokens,
            inner: Mutex::new(Inner::default()),
        });
        let harness = Harness::new(SECRET_PARAMS);
        let error_body: ErrorBody = Arc::new(injected_error);
        let running = harness.serve(listener, router(shared.clone()), error_body)?;
        Ok(FakeGoogleCalendar {
            shared,
            harness,
            running,
        })
    }

    /// The base URL to configure instead of `https://www.googleapis.com`.
    pub fn base_url(&self) -> &str {
        &self.running.base_url
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.harness.requests_to(method, path)
    }

    pub fn clear_requests(&self) {
        self.harness.clear_requests();
    }

    /// The next `n` requests fail with `failure` (see [`Harness::fail_next`]).
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    /// Failure injection and the request record, for what the shortcuts above do not cover.
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// Adds (or re-homes) a secondary calendar owned by `owner_email`.
    ///
    /// # Panics
    /// If `time_zone` is not an IANA zone name.
    pub fn add_calendar(&self, calendar_id: &str, owner_email: &str, time_zone: &str) {
        let time_zone = parse_tz_or_panic(time_zone);
        let mut inner = self.shared.lock();
        let calendar = inner
            .calendars
            .entry(calendar_id.to_owned())
            .or_insert_with(|| Calendar {
                owner: owner_email.to_owned(),
                time_zone,
                events: Vec::new(),
            });
        calendar.owner = owner_email.to_owned();
        calendar.time_zone = time_zone;
    }

    /// Sets a calendar's zone (a user's primary calendar is its email; it starts as UTC).
    ///
    /// # Panics
    /// If `time_zone` is not an IANA zone name.
    pub fn set_time_zone(&self, calendar_id: &str, time_zone: &str) {
        let time_zone = parse_tz_or_panic(time_zone);
        let mut inner = self.shared.lock();
        inner.calendar_entry(calendar_id, calendar_id).time_zone = time_zone;
    }

    /// Stores an event as `events.insert` would (same checks), without HTTP: for seeding busy
    /// time or recurring series. `calendar_id` is an email or a calendar added before.
    pub fn insert_event(&self, calendar_id: &str, event: Value) -> Result<Value, String> {
        let mut inner = self.shared.lock();
        let etag = inner.next_etag();
        let calendar = inner.calendar_entry(calendar_id, calendar_id);
        insert(calendar, calendar_id, event, false, etag).map_err(|e| e.message)
    }

    /// The stored event as Google renders it, if any.
    pub fn event(&self, calendar_id: &str, event_id: &str) -> Option<Value> {
        let inner = self.shared.lock();
        let calendar = inner.calendars.get(calendar_id)?;
        calendar
            .events
            .iter()
            .find(|e| e["id"] == event_id)
            .map(|e| render(e, None, calendar.time_zone))
    }

    /// Every stored event of a calendar (recurring series unexpanded), in insertion order.
    pub fn events(&self, calendar_id: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .calendars
            .get(calendar_id)
            .map(|c| {
                c.events
                    .iter()
                    .map(|e| render(e, None, c.time_zone))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn parse_tz_or_panic(name: &str) -> Tz {
    match name.parse::<Tz>() {
        Ok(tz) => tz,
        Err(err) => panic!("not an IANA time zone: {name}: {err}"),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller's grant, or Google's 401 / 403 answer.
    fn authorize(
        &self,
        headers: &HeaderMap,
        allowed: &[&str],
    ) -> Result<GoogleTokenInfo, Box<Response>> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(info) = token.and_then(|t| self.tokens.info(t)) else {
            return Err(Box::new(unauthorized()));
        };
        if !info.scopes.iter().any(|s| allowed.contains(&s.as_str())) {
            return Err(Box::new(google_error(
                StatusCode::FORBIDDEN,
                "global",
                "insufficientPermissions",
                "Insufficient Permission",
                "Request had insufficient authentication scopes.",
            )));
        }
        Ok(info)
    }
}

impl Inner {
    /// A calendar by id, created as `owner`'s when it does not exist yet (primary calendars
    /// spring into existence with their account, as at Google).
    fn calendar_entry(&mut self, calendar_id: &str, owner: &str) -> &mut Calendar {
        self.calendars
            .entry(calendar_id.to_owned())
            .or_insert_with(|| Calendar {
                owner: owner.to_owned(),
                time_zone: Tz::UTC,
                events: Vec::new(),
            })
    }

    /// The calendar `user` may edit, or Google's 404 for one they cannot see.
    fn own_calendar(
        &mut self,
        calendar_id: &str,
        user: &GoogleTokenInfo,
    ) -> Result<(String, &mut Calendar), Error> {
        let id = resolve(calendar_id, user);
        let owned = match self.calendars.get(&id) {
            Some(c) => c.owner.eq_ignore_ascii_case(&user.email),
            None => id.eq_ignore_ascii_case(&user.email),
        };
        if !owned {
            return Err(Error::not_found());
        }
        let calendar = self.calendar_entry(&id, &user.email);
        Ok((id, calendar))
    }

    fn next_etag(&mut self) -> String {
        let now = Utc::now().timestamp_micros();
        self.last_etag = now.max(self.last_etag + 1);
        format!("\"{}\"", self.last_etag)
    }
}

fn resolve(calendar_id: &str, user: &GoogleTokenInfo) -> String {
    if calendar_id == "primary" {
        user.email.clone()
    } else {
        calendar_id.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// A Google API error before it is rendered.
#[derive(Debug)]
struct Error {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Error {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Error {
            status,
            reason,
            message: message.into(),
        }
    }

    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "notFound", "Not Found")
    }

    fn into_response(self) -> Response {
        google_error(
            self.status,
            "global",
            self.reason,
            &self.message,
            &self.message,
        )
    }
}

fn google_error(
    status: StatusCode,
    domain: &str,
    reason: &str,
    item_message: &str,
    message: &str,
) -> Response {
    let body = json!({
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": item_message}],
            "code": status.as_u16(),
            "message": message,
        }
    });
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    let body = json!({
        "error": {
            "errors": [{
                "domain": "global",
                "reason": "authError",
                "message": "Invalid Credentials",
                "locationType": "header",
                "location": "Authorization",
            }],
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access \
                        token, login cookie or other valid authentication credential.",
        }
    });
    let challenge = "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        Json(body),
    )
        .into_response()
}

/// Google answers rate limiting as 429 or as 403 `rateLimitExceeded`, both in `usageLimits`.
fn injected_error(status: StatusCode) -> Response {
    match status.as_u16() {
        403 | 429 => google_error(
            status,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
            "Rate Limit Exceeded",
        ),
        503 => google_error(
            status,
            "global",
            "backendError",
            "Backend Error",
            "The service is currently unavailable.",
        ),
        _ => google_error(
            status,
            "global",
            "backendError",
            "Backend Error",
            "Backend Error",
        ),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/calendar/v3/calendars/{calendar_id}/events",
            get(list_events).post(insert_event),
        )
        .route(
            "/calendar/v3/calendars/{calendar_id}/events/{event_id}",
            get(get_event).patch(patch_event).put(put_event),
        )
        .route("/calendar/v3/freeBusy", post(free_busy))
        .fallback(|| async { Error::not_found().into_response() })
        .with_state(shared)
}

fn query_map(raw: Option<String>) -> BTreeMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::bad("parseError", "Parse Error")),
    }
}

async fn list_events(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let user = match shared.authorize(&headers, READ_SCOPES) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let params = query_map(query);
    let mut inner = shared.lock();
    let result = inner
        .own_calendar(&calendar_id, &user)
        .and_then(|(id, calendar)| list(&id, calendar, &params));
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn list(id: &str, calendar: &Calendar, params: &BTreeMap<String, String>) -> Result<Value, Error> {
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let instant = |name: &str| -> Result<Option<DateTime<Utc>>, Error> {
        param(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| Error::bad("badRequest", "Bad Request"))
            })
            .transpose()
    };
    let time_min = instant("timeMin")?;
    let time_max = instant("timeMax")?;
    if let (Some(min), Some(max)) = (time_min, time_max) {
        if max <= min {
            return Err(Error::bad(
                "timeRangeEmpty",
                "The specified time range is empty.",
            ));
        }
    }
    let flag = |name: &str| param(name) == Some("true");
    let single = flag("singleEvents");
    let order = param("orderBy");
    match order {
        None | Some("updated") => {}
        Some("startTime") if single => {}
        Some(_) => {
            return Err(Error::bad(
                "badRequest",
                "The requested ordering is not available for the particular query.",
            ))
        }
    }
    let max_results = match param("maxResults") {
        None => 250,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n.min(2500),
            _ => return Err(Error::bad("invalid", "Invalid Value")),
        },
    };
    let offset = match param("pageToken") {
        None => 0,
        Some(token) => decode_page_token(token)
            .ok_or_else(|| Error::bad("invalid", "Invalid page token value."))?,
    };
    let zone_override = match param("timeZone") {
        None => None,
        Some(name) => Some(
            name.parse::<Tz>()
                .map_err(|_| Error::bad("invalid", "Invalid time zone definition."))?,
        ),
    };
    let show_deleted = flag("showDeleted");
    let needle = param("q").map(str::to_lowercase);

    let mut items: Vec<(Value, DateTime<Utc>)> = Vec::new();
    for event in &calendar.events {
        let in_window = |start: DateTime<Utc>, end: DateTime<Utc>| {
            time_min.is_none_or(|min| end > min) && time_max.is_none_or(|max| start < max)
        };
        let instances = expand(event, calendar.time_zone);
        let expanded = if single {
            instances
        } else {
            // A series is listed once, as its master, when any instance falls in the window.
            instances
                .into_iter()
                .find(|(_, s, e)| in_window(*s, *e))
                .map(|(_, s, e)| vec![(event.clone(), s, e)])
                .unwrap_or_default()
        };
        for (item, start, end) in expanded {
            let in_window = in_window(start, end);
            let visible = show_deleted || item["status"] != "cancelled";
            let matches = needle.as_deref().is_none_or(|n| matches_text(&item, n));
            if in_window && visible && matches {
                items.push((item, start));
            }
        }
    }
    match order {
        Some("startTime") => items.sort_by(|(a, sa), (b, sb)| {
            sa.cmp(sb)
                .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
        }),
        Some("updated") => {
            items.sort_by(|(a, _), (b, _)| a["updated"].as_str().cmp(&b["updated"].as_str()))
        }
        _ => {}
    }
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(max_results)
        .map(|(item, _)| render(&item, zone_override, calendar.time_zone))
        .collect();
    let zone = zone_override.unwrap_or(calendar.time_zone);
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"p3{}\"", Utc::now().timestamp_micros()),
        "summary": id,
        "description": "",
        "updated": rfc3339_millis(Utc::now()),
        "timeZone": zone.name(),
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}],
        "items": page,
    });
    if offset + max_results < total {
        body["nextPageToken"] = json!(encode_page_token(offset + max_results));
    } else {
        body["nextSyncToken"] = json!(format!("CPj{}", URL_SAFE_NO_PAD.encode(id)));
    }
    Ok(body)
}

fn matches_text(event: &Value, needle: &str) -> bool {
    let field = |name: &str| event[name].as_str().unwrap_or_default().to_lowercase();
    let attendees = event["attendees"].as_array().into_iter().flatten();
    ["summary", "description", "location"]
        .iter()
        .any(|f| field(f).contains(needle))
        || attendees.into_iter().any(|a| {
            ["email", "displayName"].iter().any(|f| {
                a[*f]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains(needle)
            })
        })
}

fn encode_page_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_page_token(token: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

async fn get_event(
    State(shared): State<Arc<Shared>>,
    Path((calendar_id, event_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let user = match shared.authorize(&headers, READ_SCOPES) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let mut inner = shared.lock();
    let found = inner.own_calendar(&calendar_id, &user).and_then(|(_, c)| {
        c.events
            .iter()
            .find(|e| e["id"] == event_id.as_str())
            .map(|e| render(e, None, c.time_zone))
            .ok_or_else(Error::not_found)
    });
    match found {
        Ok(event) => Json(event).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn insert_event(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match shared.authorize(&headers, WRITE_SCOPES) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let params = query_map(query);
    let result = (|| {
        check_send_updates(&params)?;
        let conference = match params.get("conferenceDataVersion").map(String::as_str) {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(Error::bad("invalid", "Invalid conference data version.")),
        };
        let event = Value::Object(parse_body(&body)?);
        let mut inner = shared.lock();
        let etag = inner.next_etag();
        let (id, calendar) = inner.own_calendar(&calendar_id, &user)?;
        insert(calendar, &id, event, conference, etag)
    })();
    match result {
        Ok(event) => Json(event).into_response(),
        Err(e) => e.into_response(),
    }
}

fn check_send_updates(params: &BTreeMap<String, String>) -> Result<(), Error> {
    match params.get("sendUpdates").map(String::as_str) {
        None | Some("all" | "externalOnly" | "none") => Ok(()),
        Some(_) => Err(Error::bad("invalid", "Invalid value for sendUpdates.")),
    }
}

/// Fields a client may set; everything else in a body is output-only and ignored.
const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "start",
    "end",
    "attendees",
    "recurrence",
    "status",
    "transparency",
    "visibility",
    "colorId",
    "reminders",
    "extendedProperties",
];

fn insert(
    calendar: &mut Calendar,
    calendar_id: &str,
    event: Value,
    conference: bool,
    etag: String,
) -> Result<Value, Error> {
    let Value::Object(body) = event else {
        return Err(Error::bad("parseError", "Parse Error"));
    };
    let id = match body.get("id").and_then(Value::as_str) {
        Some(id) => {
            if !is_base32hex_id(id) {
                return Err(Error::bad("invalid", "Invalid resource id value."));
            }
            if calendar.events.iter().any(|e| e["id"] == id) {
                return Err(Error::new(
                    StatusCode::CONFLICT,
                    "duplicate",
                    "The requested identifier already exists.",
                ));
            }
            id.to_owned()
        }
        // Hex digits are base32hex digits too.
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut event = Map::new();
    for field in WRITABLE {
        if let Some(value) = body.get(*field).filter(|v| !v.is_null()) {
            event.insert((*field).to_owned(), value.clone());
        }
    }
    let now = rfc3339_millis(Utc::now());
    let owner = calendar.owner.clone();
    event.insert("kind".into(), json!("calendar#event"));
    event.insert("etag".into(), json!(etag));
    event.insert("id".into(), json!(id));
    event.entry("status").or_insert_with(|| json!("confirmed"));
    let eid = STANDARD.encode(format!("{id} {calendar_id}"));
    event.insert(
        "htmlLink".into(),
        json!(format!("https://www.google.com/calendar/event?eid={eid}")),
    );
    event.insert("created".into(), json!(now));
    event.insert("updated".into(), json!(now));
    event.insert("creator".into(), json!({"email": owner, "self": true}));
    event.insert(
        "organizer".into(),
        json!({"email": calendar_id, "self": true}),
    );
    event.insert("iCalUID".into(), json!(format!("{id}@google.com")));
    event.insert("sequence".into(), json!(0));
    event.insert("eventType".into(), json!("default"));
    event
        .entry("reminders")
        .or_insert_with(|| json!({"useDefault": true}));
    if conference {
        if let Some(request) = body
            .get("conferenceData")
            .and_then(|c| c.get("createRequest"))
        {
            let code = meet_code(&id);
            let uri = format!("https://meet.google.com/{code}");
            event.insert("hangoutLink".into(), json!(uri));
            event.insert(
                "conferenceData".into(),
                json!({
                    "createRequest": {
                        "requestId": request["requestId"],
                        "conferenceSolutionKey": {"type": "hangoutsMeet"},
                        "status": {"statusCode": "success"},
                    },
                    "entryPoints": [{"entryPointType": "video", "uri": uri, "label": format!("meet.google.com/{code}")}],
                    "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
                    "conferenceId": code,
                }),
            );
        }
    }
    let mut event = Value::Object(event);
    drop_nulls(&mut event);
    normalize_attendees(&mut event)?;
    check_status(&event)?;
    event_span(&event, calendar.time_zone)?;
    let rendered = render(&event, None, calendar.time_zone);
    calendar.events.push(event);
    Ok(rendered)
}

/// A `null` in a write clears the field; Google never answers with nulls.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn check_status(event: &Value) -> Result<(), Error> {
    match event["status"].as_str() {
        Some("confirmed" | "tentative" | "cancelled") => Ok(()),
        _ => Err(Error::bad("invalid", "Invalid value for: status")),
    }
}

fn normalize_attendees(event: &mut Value) -> Result<(), Error> {
    let Some(attendees) = event.get_mut("attendees").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for attendee in attendees {
        if attendee["email"].as_str().is_none_or(str::is_empty) {
            return Err(Error::bad("required", "Missing attendee email."));
        }
        if let Some(map) = attendee.as_object_mut() {
            map.entry("responseStatus")
                .or_insert_with(|| json!("needsAction"));
        }
    }
    Ok(())
}

/// `abc-defg-hij`, stable per event so tests can predict nothing but its shape.
fn meet_code(id: &str) -> String {
    let letters: String = id
        .bytes()
        .map(|b| char::from(b'a' + b % 26))
        .chain(std::iter::repeat('x'))
        .take(10)
        .collect();
    format!("{}-{}-{}", &letters[..3], &letters[3..7], &letters[7..])
}

/// RFC 5545-independent check of Google's id rule: base32hex (lowercase a–v, 0–9), 5–1024 long.
fn is_base32hex_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v'))
}

async fn patch_event(
    State(shared): State<Arc<Shared>>,
    Path((calendar_id, event_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_event(
        &shared,
        &calendar_id,
        &event_id,
        query,
        &headers,
        &body,
        false,
    )
}

async fn put_event(
    State(shared): State<Arc<Shared>>,
    Path((calendar_id, event_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    update_event(
        &shared,
        &calendar_id,
        &event_id,
        query,
        &headers,
        &body,
        true,
    )
}

/// PATCH merges the given fields; PUT replaces every writable field.
fn update_event(
    shared: &Shared,
    calendar_id: &str,
    event_id: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
    replace: bool,
) -> Response {
    let user = match shared.authorize(headers, WRITE_SCOPES) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let params = query_map(query);
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let result = (|| {
        check_send_updates(&params)?;
        let patch = parse_body(body)?;
        let mut inner = shared.lock();
        let etag = inner.next_etag();
        let (_, calendar) = inner.own_calendar(calendar_id, &user)?;
        let zone = calendar.time_zone;
        let Some(stored) = calendar.events.iter_mut().find(|e| e["id"] == event_id) else {
            return Err(Error::not_found());
        };
        if let Some(expected) = if_match.as_deref() {
            if expected != "*" && stored["etag"].as_str() != Some(expected) {
                return Err(Error::new(
                    StatusCode::PRECONDITION_FAILED,
                    "conditionNotMet",
                    "Precondition Failed",
                ));
            }
        }
        let mut updated = stored.clone();
        if let Some(map) = updated.as_object_mut() {
            if replace {
                for field in WRITABLE {
                    map.remove(*field);
                }
            }
            for field in WRITABLE {
                match patch.get(*field) {
                    Some(Value::Null) => {
                        map.remove(*field);
                    }
                    Some(value) => {
                        map.insert((*field).to_owned(), value.clone());
                    }
                    None => {}
                }
            }
            map.insert("etag".into(), json!(etag));
            map.insert("updated".into(), json!(rfc3339_millis(Utc::now())));
            let sequence = map.get("sequence").and_then(Value::as_i64).unwrap_or(0);
            map.insert("sequence".into(), json!(sequence + 1));
        }
        drop_nulls(&mut updated);
        normalize_attendees(&mut updated)?;
        check_status(&updated)?;
        event_span(&updated, zone)?;
        let rendered = render(&updated, None, zone);
        *stored = updated;
        Ok(rendered)
    })();
    match result {
        Ok(event) => Json(event).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn free_busy(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let user = match shared.authorize(&headers, FREEBUSY_SCOPES) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    match free_busy_of(&shared, &user, &body) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn free_busy_of(shared: &Shared, user: &GoogleTokenInfo, body: &Bytes) -> Result<Value, Error> {
    let body = parse_body(body)?;
    let instant = |name: &str| -> Result<DateTime<Utc>, Error> {
        let text = body
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad("required", format!("Missing {name} parameter.")))?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| Error::bad("invalid", format!("Invalid {name} parameter.")))
    };
    let time_min = instant("timeMin")?;
    let time_max = instant("timeMax")?;
    if time_max <= time_min {
        return Err(Error::bad(
            "timeRangeEmpty",
            "The specified time range is empty.",
        ));
    }
    let zone = match body.get("timeZone").and_then(Value::as_str) {
        None => Tz::UTC,
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| Error::bad("invalid", "Invalid time zone definition."))?,
    };
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.len() > MAX_FREEBUSY_ITEMS {
        return Err(Error::bad(
            "tooManyCalendarsRequested",
            "The number of calendars requested is too large.",
        ));
    }
    let known_users = shared.tokens.user_emails();
    let inner = shared.lock();
    let mut calendars = Map::new();
    for item in items {
        let Some(requested) = item["id"].as_str() else {
            return Err(Error::bad("required", "Missing items.id parameter."));
        };
        let id = resolve(requested, user);
        let known = inner.calendars.contains_key(&id)
            || known_users.iter().any(|u| u.eq_ignore_ascii_case(&id));
        if !known {
            calendars.insert(
                requested.to_owned(),
                json!({"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}),
            );
            continue;
        }
        let mut busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = inner
            .calendars
            .get(&id)
            .map(|c| {
                c.events
                    .iter()
                    .filter(|e| e["status"] != "cancelled" && e["transparency"] != "transparent")
                    .flat_map(|e| expand(e, c.time_zone))
                    .filter(|(_, s, e)| *e > time_min && *s < time_max)
                    .map(|(_, s, e)| (s.max(time_min), e.min(time_max)))
                    .collect()
            })
            .unwrap_or_default();
        busy.sort();
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for (start, end) in busy {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let busy: Vec<Value> = merged
            .into_iter()
            .map(|(s, e)| json!({"start": format_in(s, zone), "end": format_in(e, zone)}))
            .collect();
        calendars.insert(requested.to_owned(), json!({ "busy": busy }));
    }
    Ok(json!({
        "kind": "calendar#freeBusy",
        "timeMin": rfc3339_millis(time_min),
        "timeMax": rfc3339_millis(time_max),
        "calendars": calendars,
    }))
}

// ---------------------------------------------------------------------------------------
// Times

fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Google renders instants with the zone's offset, `Z` for UTC.
fn format_in(t: DateTime<Utc>, zone: Tz) -> String {
    if zone == Tz::UTC {
        return t.to_rfc3339_opts(SecondsFormat::Secs, true);
    }
    t.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// One side of an event: the instant it stands for and whether it is a whole day.
fn edge(value: &Value, side: &str, calendar_zone: Tz) -> Result<(DateTime<Utc>, bool), Error> {
    if !value.is_object() {
        return Err(Error::bad("required", format!("Missing {side} time.")));
    }
    let zone = match value["timeZone"].as_str() {
        None => None,
        Some(name) => Some(name.parse::<Tz>().map_err(|_| {
            Error::bad(
                "invalid",
                format!("Invalid time zone definition for {side} time."),
            )
        })?),
    };
    if let Some(text) = value["dateTime"].as_str() {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok((t.with_timezone(&Utc), false));
        }
        let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .map_err(|_| Error::bad("invalid", format!("Invalid {side} time.")))?;
        let Some(zone) = zone else {
            return Err(Error::bad(
                "required",
                format!("Missing time zone definition for {side} time."),
            ));
        };
        return local_to_utc(local, zone)
            .map(|t| (t, false))
            .ok_or_else(|| Error::bad("invalid", format!("Invalid {side} time.")));
    }
    if let Some(text) = value["date"].as_str() {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| Error::bad("invalid", format!("Invalid {side} time.")))?;
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        return local_to_utc(midnight, calendar_zone)
            .map(|t| (t, true))
            .ok_or_else(|| Error::bad("invalid", format!("Invalid {side} time.")));
    }
    Err(Error::bad("required", format!("Missing {side} time.")))
}

fn local_to_utc(local: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    // In a DST gap the later mapping is what Google picks for a wall time that never existed.
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// The instants an event covers, after Google's checks.
fn event_span(event: &Value, zone: Tz) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    if event.get("end").is_none() {
        return Err(Error::bad("required", "Missing end time."));
    }
    let (start, start_day) = edge(&event["start"], "start", zone)?;
    let (end, end_day) = edge(&event["end"], "end", zone)?;
    if start_day != end_day {
        return Err(Error::bad(
            "invalid",
            "Start and end times must either both be date or both be dateTime.",
        ));
    }
    if end < start {
        return Err(Error::bad(
            "timeRangeEmpty",
            "The specified time range is empty.",
        ));
    }
    Ok((start, end))
}

/// The event as Google answers it: `dateTime` with the offset of the list's `timeZone`, else
/// of the event's own zone, else of the calendar's.
fn render(event: &Value, zone_override: Option<Tz>, calendar_zone: Tz) -> Value {
    let mut out = event.clone();
    for side in ["start", "end", "originalStartTime"] {
        let Some(edge) = out.get_mut(side).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(instant) = edge
            .get("dateTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let own = edge
            .get("timeZone")
            .and_then(Value::as_str)
            .and_then(|z| z.parse::<Tz>().ok());
        let zone = zone_override.or(own).unwrap_or(calendar_zone);
        edge.insert(
            "dateTime".into(),
            json!(format_in(instant.with_timezone(&Utc), zone)),
        );
    }
    out
}

/// The occurrences of an event with their instants: itself for a single event, its instances
/// for a supported `RRULE`.
fn expand(event: &Value, calendar_zone: Tz) -> Vec<(Value, DateTime<Utc>, DateTime<Utc>)> {
    let Ok((start, end)) = event_span(event, calendar_zone) else {
        return Vec::new();
    };
    let rule = event["recurrence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|line| line.strip_prefix("RRULE:"))
        .and_then(parse_rrule);
    let Some(rule) = rule else {
        return vec![(event.clone(), start, end)];
    };
    let all_day = event["start"].get("date").is_some();
    let zone = event["start"]["timeZone"]
        .as_str()
        .and_then(|z| z.parse::<Tz>().ok())
        .unwrap_or(calendar_zone);
    // Steps are taken in wall time of the event's zone, so 10:00 stays 10:00 across DST.
    let local_start = start.with_timezone(&zone).naive_local();
    let length = end - start;
    let id = event["id"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for n in 0..MAX_INSTANCES {
        if rule.count.is_some_and(|c| n >= c) {
            break;
        }
        let offset = i64::try_from(n).unwrap_or(i64::MAX) * rule.step_days;
        let local = local_start + Duration::days(offset);
        let Some(instance_start) = local_to_utc(local, zone) else {
            continue;
        };
        if rule.until.is_some_and(|u| instance_start > u) {
            break;
        }
        let instance_end = instance_start + length;
        let mut instance = event.clone();
        if let Some(map) = instance.as_object_mut() {
            map.remove("recurrence");
            let (suffix, start_edge, end_edge, original) = if all_day {
                let day = local.date();
                let last = (local + length).date();
                (
                    day.format("%Y%m%d").to_string(),
                    json!({"date": day.format("%Y-%m-%d").to_string()}),
                    json!({"date": last.format("%Y-%m-%d").to_string()}),
                    json!({"date": day.format("%Y-%m-%d").to_string()}),
                )
            } else {
                let edge = |t: DateTime<Utc>| {
                    let mut e = json!({"dateTime": format_in(t, zone)});
                    if let Some(tz) = event["start"].get("timeZone") {
                        e["timeZone"] = tz.clone();
                    }
                    e
                };
                (
                    instance_start.format("%Y%m%dT%H%M%SZ").to_string(),
                    edge(instance_start),
                    edge(instance_end),
                    edge(instance_start),
                )
            };
            map.insert("id".into(), json!(format!("{id}_{suffix}")));
            map.insert("recurringEventId".into(), json!(id));
            map.insert("start".into(), start_edge);
            map.insert("end".into(), end_edge);
            map.insert("originalStartTime".into(), original);
        }
        out.push((instance, instance_start, instance_end));
    }
    out
}

struct Rule {
    step_days: i64,
    count: Option<usize>,
    until: Option<DateTime<Utc>>,
}

fn parse_rrule(rule: &str) -> Option<Rule> {
    let parts: HashMap<&str, &str> = rule.split(';').filter_map(|p| p.split_once('=')).collect();
    let interval: i64 = parts.get("INTERVAL").map_or(Some(1), |v| v.parse().ok())?;
    let unit = match *parts.get("FREQ")? {
        "DAILY" => 1,
        "WEEKLY" if !parts.contains_key("BYDAY") => 7,
        _ => return None,
    };
    let count = parts.get("COUNT").map(|v| v.parse().ok()).unwrap_or(None);
    let until = parts.get("UNTIL").and_then(|v| {
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
            .or_else(|| {
                NaiveDate::parse_from_str(v, "%Y%m%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(23, 59, 59))
                    .map(|t| t.and_utc())
            })
    });
    Some(Rule {
        step_days: unit * interval.max(1),
        count,
        until,
    })
}
