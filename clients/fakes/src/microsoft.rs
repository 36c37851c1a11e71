//! Fake Microsoft identity platform (Entra ID v2.0 OAuth) and Microsoft Graph calendar
//! (PROVIDERS.md §9), both on one loopback port: the adapter's Graph base URL and the
//! platform's login base URL are the same [`FakeMicrosoft::base_url`].
//!
//! Identity: `/{tenant}/oauth2/v2.0/authorize` auto-approves as a registered user (the
//! `login_hint`, else the first added) and redirects with `code`, `state` and `session_state`;
//! `/{tenant}/oauth2/v2.0/token` redeems codes (PKCE when a challenge was sent) and refresh
//! tokens. Tokens expire; ID tokens are real RS256 JWTs (keys at
//! `/{tenant}/discovery/v2.0/keys`).
//!
//! Graph: `/v1.0/me/calendarView`, `/v1.0/me/events` (list, create), `/v1.0/me/events/{id}`
//! (get, PATCH), the same under `/v1.0/me/calendars/{id}/…`, `/v1.0/me/calendar/getSchedule`
//! and `/v1.0/me`.
//!
//! Fidelity choices worth knowing:
//! - token errors are Entra's JSON: `error`, `error_description` starting `AADSTSnnnn:`,
//!   `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`;
//! - refresh tokens rotate: every refresh answers a new one, and — stricter than Entra, which
//!   keeps the old one valid for a while — the used one is refused afterwards (`AADSTS70000`),
//!   so a platform that forgets to persist the rotation is caught;
//! - Graph errors are `{"error":{"code","message","innerError":{date,request-id,
//!   client-request-id}}}`: `InvalidAuthenticationToken` (401), `ErrorAccessDenied` (403, no
//!   Calendars scope), `ErrorItemNotFound`, `ErrorIrresolvableConflict` (412, stale
//!   `If-Match`), `ErrorInvalidParameters`, `RequestBodyRead` (unknown property),
//!   `TimeZoneNotSupportedException`; injected 429 answers `TooManyRequests`;
//! - `dateTimeTimeZone` values are wall times (`2026-01-05T10:00:00.0000000`) in a Windows zone
//!   name (a built-in table of common zones) or an IANA name; responses to GET use the zone of
//!   `Prefer: outlook.timezone="…"` (UTC without it) and say so in `Preference-Applied`; create
//!   and update answer in the event's own zones; all-day events float (midnight in any zone);
//! - `transactionId` dedupes creates per mailbox: the same id answers the event already made;
//! - recurrences are stored but not expanded; `showAs` other than `free` is busy time for
//!   getSchedule, whose availabilityView digit is the strongest status in each slot
//!   (oof > busy > workingElsewhere > tentative > free); windows over 42 days are refused.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone as _, Timelike as _, Utc};
use chrono_tz::Tz;
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use crate::google_oidc::{shared_jwk, sign_with_shared_key};
use crate::harness::{loopback, ErrorBody, Failure, Harness, Recorded, Running};

/// Never recorded: OAuth secrets in forms and queries.
const SECRET_PARAMS: &[&str] = &[
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "access_token",
    "id_token",
    "client_assertion",
];
const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";
const READ_SCOPES: &[&str] = &[
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.ReadBasic",
];
const WRITE_SCOPES: &[&str] = &["Calendars.ReadWrite"];
const DEFAULT_PAGE: usize = 10;
const MAX_PAGE: usize = 1000;
const MAX_SCHEDULE_DAYS: i64 = 42;

/// Windows zone names Graph speaks, with the IANA zone each stands for (CLDR windowsZones,
/// territory 001). Graph also accepts IANA names, which the fake takes as they are.
pub const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("UTC", "UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("India Standard Time", "Asia/Calcutta"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central Standard Time", "America/Chicago"),
    ("Canada Central Standard Time", "America/Regina"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Eastern Standard Time", "America/New_York"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Buenos_Aires"),
    ("Pacific SA Standard Time", "America/Santiago"),
];

/// The zone a Graph `timeZone` value names: a Windows name from [`WINDOWS_ZONES`] or IANA.
pub fn graph_zone(name: &str) -> Option<Tz> {
    WINDOWS_ZONES
        .iter()
        .find(|(windows, _)| windows.eq_ignore_ascii_case(name))
        .map(|(_, iana)| *iana)
        .unwrap_or(name)
        .parse()
        .ok()
}

/// How the fake behaves; `Default` mirrors Entra's lifetimes.
#[derive(Clone, Debug)]
pub struct FakeMicrosoftConfig {
    /// The directory (tenant) id; `common`, `organizations` and `consumers` are accepted too.
    pub tenant_id: String,
    pub code_ttl: StdDuration,
    /// `expires_in` of access tokens (Entra answers between 3599 and 5399; we use 3599).
    pub access_token_ttl: StdDuration,
}

impl Default for FakeMicrosoftConfig {
    fn default() -> Self {
        FakeMicrosoftConfig {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            code_ttl: StdDuration::from_secs(600),
            access_token_ttl: StdDuration::from_secs(3599),
        }
    }
}

/// A registered application ("app registration").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeMicrosoftClient {
    pub client_id: String,
    /// `None` is a public client (SPA / native), which redeems codes with PKCE and no secret.
    pub client_secret: Option<String>,
    /// Exact-match list, as in the portal.
    pub redirect_uris: Vec<String>,
}

/// A running fake; it stops when dropped.
pub struct FakeMicrosoft {
    shared: Arc<Shared>,
    harness: Harness,
    running: Running,
}

struct Shared {
    config: FakeMicrosoftConfig,
    base_url: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, FakeMicrosoftClient>,
    /// Lower-case email → user.
    users: BTreeMap<String, User>,
    /// First user added, approved when no `login_hint` names another.
    first_user: Option<String>,
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, Grant>,
    access_tokens: HashMap<String, AccessToken>,
    /// Per mailbox, insertion order.
    events: HashMap<String, Vec<StoredEvent>>,
    change_counter: u64,
}

struct User {
    email: String,
    object_id: String,
    display_name: String,
    calendar_id: String,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    user: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    pkce: Option<(String, String)>,
    expires_at: Instant,
}

#[derive(Clone)]
struct Grant {
    client_id: String,
    user: String,
    scopes: Vec<String>,
}

struct AccessToken {
    user: String,
    scopes: Vec<String>,
    expires_at: Instant,
}

struct StoredEvent {
    /// Everything but `start` / `end`, as Graph renders it.
    fields: Map<String, Value>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    start_zone: String,
    end_zone: String,
}

impl FakeMicrosoft {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test needing this fake could run.
    pub async fn start(config: FakeMicrosoftConfig) -> FakeMicrosoft {
        let started = async { Self::try_start_on(loopback().await?, config) };
        match started.await {
            Ok(fake) => fake,
            Err(err) => panic!("fake microsoft failed to start: {err}"),
        }
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(listener: TcpListener, config: FakeMicrosoftConfig) -> io::Result<Self> {
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            config,
            base_url,
            inner: Mutex::new(Inner::default()),
        });
        let harness = Harness::new(SECRET_PARAMS);
        let error_body: ErrorBody = Arc::new(injected_error);
        let running = harness.serve(listener, router(shared.clone()), error_body)?;
        Ok(FakeMicrosoft {
            shared,
            harness,
            running,
        })
    }

    /// Stands for both `https://login.microsoftonline.com` and `https://graph.microsoft.com`.
    pub fn base_url(&self) -> &str {
        &self.running.base_url
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.config.tenant_id
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

    /// Registers an application, or replaces the one with the same `client_id`.
    pub fn add_client(&self, client: FakeMicrosoftClient) {
        self.shared
            .lock()
            .clients
            .insert(client.client_id.clone(), client);
    }

    /// Adds a user (mailbox) to the directory; returns its object id.
    pub fn add_user(&self, email: &str) -> String {
        let key = email.to_ascii_lowercase();
        let mut inner = self.shared.lock();
        if let Some(user) = inner.users.get(&key) {
            return user.object_id.clone();
        }
        let object_id = uuid::Uuid::new_v4().to_string();
        let display_name = email.split('@').next().unwrap_or_default().to_owned();
        let calendar_id = format!("AAMkAD{}AAA=", STANDARD.encode(Sha256::digest(&key)));
        inner.users.insert(
            key.clone(),
            User {
                email: email.to_owned(),
                object_id: object_id.clone(),
                display_name,
                calendar_id,
            },
        );
        inner.first_user.get_or_insert(key);
        object_id
    }

    /// The id of a user's default calendar (for `/me/calendars/{id}/…`).
    pub fn calendar_id(&self, email: &str) -> Option<String> {
        let inner = self.shared.lock();
        inner
            .users
            .get(&email.to_ascii_lowercase())
            .map(|u| u.calendar_id.clone())
    }

    /// An access token for a user without the browser flow, for Graph tests; `scopes` as Graph
    /// names them (`Calendars.ReadWrite`). `None` when the user was not added.
    pub fn issue_access_token(&self, email: &str, scopes: &[&str]) -> Option<String> {
        let key = email.to_ascii_lowercase();
        let mut inner = self.shared.lock();
        inner.users.get(&key)?;
        let token = access_token_string();
        let expires_at = Instant::now() + self.shared.config.access_token_ttl;
        inner.access_tokens.insert(
            token.clone(),
            AccessToken {
                user: key,
                scopes: scopes.iter().map(|s| normalize_scope(s)).collect(),
                expires_at,
            },
        );
        Some(token)
    }

    /// Makes every issued access token expire now, to drive refresh-on-401 paths.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// Stores an event in `email`'s mailbox as `POST /me/events` would, without HTTP.
    pub fn insert_event(&self, email: &str, event: Value) -> Result<Value, String> {
        let Value::Object(body) = event else {
            return Err("not an object".to_owned());
        };
        let mut inner = self.shared.lock();
        create(&self.shared, &mut inner, &email.to_ascii_lowercase(), &body)
            .map(|(event, _)| event)
            .map_err(|e| e.message)
    }

    /// The events of a mailbox as Graph renders them in UTC, in insertion order.
    pub fn events(&self, email: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .events
            .get(&email.to_ascii_lowercase())
            .map(|events| {
                events
                    .iter()
                    .map(|e| render(e, Some(("UTC", Tz::UTC))))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn next_change_key(&mut self) -> String {
        self.change_counter += 1;
        format!(
            "DwAAABYAAAA{}",
            STANDARD.encode(self.change_counter.to_be_bytes())
        )
    }
}

fn random_string(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn access_token_string() -> String {
    // Graph access tokens are JWTs to the client's eye; their content is opaque to it.
    format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
        random_string(96),
        random_string(64)
    )
}

/// Entra accepts Graph scopes bare or as `https://graph.microsoft.com/X`.
fn normalize_scope(scope: &str) -> String {
    scope.strip_prefix(GRAPH_PREFIX).unwrap_or(scope).to_owned()
}

// ---------------------------------------------------------------------------------------
// Identity platform

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/v1.0/me", get(me))
        .route("/v1.0/me/calendarView", get(calendar_view))
        .route(
            "/v1.0/me/calendars/{calendar}/calendarView",
            get(calendar_view_of),
        )
        .route("/v1.0/me/events", get(list_events).post(create_event))
        .route(
            "/v1.0/me/calendars/{calendar}/events",
            get(list_events_of).post(create_event_of),
        )
        .route("/v1.0/me/events/{id}", get(get_event).patch(patch_event))
        .route("/v1.0/me/calendar/getSchedule", post(get_schedule))
        .fallback(|| async {
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Resource not found for the segment.",
            )
        })
        .with_state(shared)
}

fn tenant_known(shared: &Shared, tenant: &str) -> bool {
    matches!(tenant, "common" | "organizations" | "consumers")
        || tenant.eq_ignore_ascii_case(&shared.config.tenant_id)
}

fn params_of(raw: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(raw)
        .into_owned()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Entra's token-endpoint error: the AADSTS code leads the description and is repeated in
/// `error_codes`, with the trace ids support asks for.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = Utc::now();
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let stamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let description = format!(
        "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}"
    );
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (
        status,
        [(header::CACHE_CONTROL, "no-store, no-cache")],
        Json(body),
    )
        .into_response()
}

/// The sign-in page's error, reduced to text a test can assert on.
fn error_page(status: StatusCode, code: u32, detail: &str) -> Response {
    let body = format!("AADSTS{code}: {detail}\n");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn redirect(uri: &str, params: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let separator = if uri.contains('?') { '&' } else { '?' };
    match HeaderValue::from_str(&format!("{uri}{separator}{query}")) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            50011,
            "The redirect URI is invalid.",
        ),
    }
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !tenant_known(&shared, &tenant) {
        let detail = format!("Tenant '{tenant}' not found.");
        return error_page(StatusCode::BAD_REQUEST, 90002, &detail);
    }
    let params = params_of(query.unwrap_or_default().as_bytes());
    let param = |name: &str| params.get(name).map(String::as_str);
    let missing = |name: &str| {
        let detail = format!("The request body must contain the following parameter: '{name}'.");
        error_page(StatusCode::BAD_REQUEST, 900144, &detail)
    };
    let Some(client_id) = param("client_id") else {
        return missing("client_id");
    };
    let mut inner = shared.lock();
    let Some(client) = inner.clients.get(client_id) else {
        let detail = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        );
        return error_page(StatusCode::BAD_REQUEST, 700016, &detail);
    };
    let Some(redirect_uri) = param("redirect_uri") else {
        return missing("redirect_uri");
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        let detail = format!(
            "The redirect URI '{redirect_uri}' specified in the request does not match the \
             redirect URIs configured for the application '{client_id}'."
        );
        return error_page(StatusCode::BAD_REQUEST, 50011, &detail);
    }
    // From here on errors go back to the (verified) redirect URI, as OAuth requires.
    let state = param("state");
    let fail = |error: &str, description: &str| {
        let mut reply = vec![("error", error), ("error_description", description)];
        reply.extend(state.map(|s| ("state", s)));
        redirect(redirect_uri, &reply)
    };
    if param("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "AADSTS70005: The fake serves the code flow only.",
        );
    }
    let Some(scope) = param("scope") else {
        return fail(
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        );
    };
    let pkce = match param("code_challenge") {
        None => None,
        Some(challenge) => {
            let method = param("code_challenge_method").unwrap_or("plain");
            if method != "S256" && method != "plain" {
                return fail(
                    "invalid_request",
                    "AADSTS501491: Invalid code_challenge_method.",
                );
            }
            Some((challenge.to_owned(), method.to_owned()))
        }
    };
    let hinted = param("login_hint")
        .map(str::to_ascii_lowercase)
        .filter(|h| inner.users.contains_key(h));
    let Some(user) = hinted.or_else(|| inner.first_user.clone()) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "No test user registered: call FakeMicrosoft::add_user first",
        );
    };
    let code = format!("M.C5{}", random_string(48));
    let scopes = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(normalize_scope)
        .collect();
    let expires_at = Instant::now() + shared.config.code_ttl;
    inner.codes.insert(
        code.clone(),
        CodeGrant {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            user,
            scopes,
            nonce: param("nonce").map(str::to_owned),
            pkce,
            expires_at,
        },
    );
    drop(inner);
    let session = uuid::Uuid::new_v4().to_string();
    let mut reply = vec![("code", code.as_str())];
    reply.extend(state.map(|s| ("state", s)));
    reply.push(("session_state", session.as_str()));
    redirect(redirect_uri, &reply)
}

/// client_secret_basic: `Authorization: Basic base64(urlencoded id ":" urlencoded secret)`
/// (RFC 6749 §2.3.1), which Entra takes as well as the form parameters.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !tenant_known(&shared, &tenant) {
        let detail = format!("Tenant '{tenant}' not found.");
        return entra_error(StatusCode::BAD_REQUEST, "invalid_request", 90002, &detail);
    }
    let mut params = params_of(&body);
    if let Some((id, secret)) = basic_credentials(&headers) {
        params.insert("client_id".to_owned(), id);
        params.insert("client_secret".to_owned(), secret);
    }
    let param = |name: &str| params.get(name).map(String::as_str);
    let missing = |name: &str| {
        let detail = format!("The request body must contain the following parameter: '{name}'.");
        entra_error(StatusCode::BAD_REQUEST, "invalid_request", 900144, &detail)
    };
    let Some(client_id) = param("client_id") else {
        return missing("client_id");
    };
    let mut inner = shared.lock();
    let Some(client) = inner.clients.get(client_id).cloned() else {
        let detail = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        );
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &detail,
        );
    };
    if let Some(secret) = &client.client_secret {
        match param("client_secret") {
            None => {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' \
                     or 'client_secret'.",
                )
            }
            Some(given) if given != secret => {
                let detail = format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request \
                     is the client secret value, not the client secret ID, for a secret added to \
                     app '{client_id}'."
                );
                return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, &detail);
            }
            Some(_) => {}
        }
    }
    let grant = match param("grant_type") {
        None => return missing("grant_type"),
        Some("authorization_code") => redeem_code(&mut inner, client_id, &params),
        Some("refresh_token") => {
            let Some(refresh) = param("refresh_token") else {
                return missing("refresh_token");
            };
            // Removed on use: the rotation below hands out its successor.
            match inner.refresh_tokens.remove(refresh) {
                Some(grant) if grant.client_id == client_id => Ok((grant, None)),
                _ => Err(Box::new(entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed.",
                ))),
            }
        }
        Some(other) => {
            let detail = format!(
                "The provided value for the input parameter 'grant_type' is not valid: {other}."
            );
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &detail,
            );
        }
    };
    let (grant, nonce) = match grant {
        Ok(grant) => grant,
        Err(response) => return *response,
    };
    token_response(&shared, &mut inner, grant, nonce)
}

fn redeem_code(
    inner: &mut Inner,
    client_id: &str,
    params: &HashMap<String, String>,
) -> Result<(Grant, Option<String>), Box<Response>> {
    let param = |name: &str| params.get(name).map(String::as_str);
    let invalid_grant = |code: u32, detail: &str| {
        entra_error(StatusCode::BAD_REQUEST, "invalid_grant", code, detail)
    };
    let Some(code) = param("code") else {
        return Err(Box::new(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
        )));
    };
    // Single use even when the redemption fails below.
    let Some(grant) = inner.codes.remove(code) else {
        return Err(Box::new(invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        )));
    };
    if grant.expires_at <= Instant::now() {
        return Err(Box::new(invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. \
             Send a new interactive authorization request for this user and resource.",
        )));
    }
    if grant.client_id != client_id {
        return Err(Box::new(invalid_grant(
            70000,
            "Provided grant is invalid or malformed.",
        )));
    }
    if param("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        let detail = format!(
            "The reply URL specified in the request does not match the reply URL used when \
             requesting the authorization code: '{}'.",
            grant.redirect_uri
        );
        return Err(Box::new(invalid_grant(500112, &detail)));
    }
    if let Some((challenge, method)) = &grant.pkce {
        let Some(verifier) = param("code_verifier") else {
            return Err(Box::new(invalid_grant(
                50148,
                "The code_verifier does not match the code_challenge supplied in the \
                 authorization request for PKCE.",
            )));
        };
        let derived = match method.as_str() {
            "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)),
            _ => verifier.to_owned(),
        };
        if derived != *challenge {
            return Err(Box::new(invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the \
                 authorization request.",
            )));
        }
    }
    Ok((
        Grant {
            client_id: client_id.to_owned(),
            user: grant.user,
            scopes: grant.scopes,
        },
        grant.nonce,
    ))
}

fn token_response(
    shared: &Shared,
    inner: &mut Inner,
    grant: Grant,
    nonce: Option<String>,
) -> Response {
    let ttl = shared.config.access_token_ttl;
    let access_token = access_token_string();
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            user: grant.user.clone(),
            scopes: grant.scopes.clone(),
            expires_at: Instant::now() + ttl,
        },
    );
    let has = |s: &str| grant.scopes.iter().any(|g| g == s);
    // Entra lists the resource scopes it granted; the OIDC ones are implied.
    let granted: Vec<String> = grant
        .scopes
        .iter()
        .filter(|s| {
            !matches!(
                s.as_str(),
                "openid" | "profile" | "email" | "offline_access"
            )
        })
        .map(|s| format!("{GRAPH_PREFIX}{s}"))
        .collect();
    let mut body = json!({
        "token_type": "Bearer",
        "scope": granted.join(" "),
        "expires_in": ttl.as_secs(),
        "ext_expires_in": ttl.as_secs(),
        "access_token": access_token,
    });
    if has("openid") {
        let Some(user) = inner.users.get(&grant.user) else {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                50034,
                "The user account does not exist in the directory.",
            );
        };
        let now = Utc::now().timestamp();
        let tid = &shared.config.tenant_id;
        let mut claims = json!({
            "aud": grant.client_id,
            "iss": format!("{}/{tid}/v2.0", shared.base_url),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "sub": URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{}:{}", grant.client_id, user.object_id))),
            "oid": user.object_id,
            "tid": tid,
            "preferred_username": user.email,
            "ver": "2.0",
        });
        if has("profile") {
            claims["name"] = json!(user.display_name);
        }
        if has("email") {
            claims["email"] = json!(user.email);
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        match sign_with_shared_key(&claims) {
            Ok(id_token) => body["id_token"] = json!(id_token),
            Err(_) => {
                return entra_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    50000,
                    "There was an error issuing a token.",
                )
            }
        }
    }
    if has("offline_access") {
        let refresh = format!("1.AR{}", random_string(96));
        inner.refresh_tokens.insert(refresh.clone(), grant);
        body["refresh_token"] = json!(refresh);
    }
    ([(header::CACHE_CONTROL, "no-store, no-cache")], Json(body)).into_response()
}

/// Entra's discovery document, endpoints rebased on the fake; the issuer names the tenant id
/// (for `common` Entra templates it as `{tenantid}`, which verifiers substitute from `tid`).
async fn discovery(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if !tenant_known(&shared, &tenant) {
        let detail = format!("Tenant '{tenant}' not found.");
        return entra_error(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, &detail);
    }
    let base = &shared.base_url;
    let issuer_tenant = if tenant.eq_ignore_ascii_case(&shared.config.tenant_id) {
        shared.config.tenant_id.clone()
    } else {
        "{tenantid}".to_owned()
    };
    Json(json!({
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "tenant_region_scope": "NA",
    }))
    .into_response()
}

async fn keys(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if !tenant_known(&shared, &tenant) {
        let detail = format!("Tenant '{tenant}' not found.");
        return entra_error(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, &detail);
    }
    match shared_jwk() {
        Ok(jwk) => Json(json!({ "keys": [jwk] })).into_response(),
        Err(_) => entra_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            "Keys unavailable.",
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Graph errors and auth

#[derive(Debug)]
struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    fn into_response(self) -> Response {
        graph_error(self.status, self.code, &self.message)
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    (status, [("request-id", request_id)], Json(body)).into_response()
}

fn injected_error(status: StatusCode) -> Response {
    match status.as_u16() {
        429 => graph_error(
            status,
            "TooManyRequests",
            "Too many requests. Please retry after the time in Retry-After.",
        ),
        503 => graph_error(
            status,
            "ServiceNotAvailable",
            "The service is temporarily unavailable.",
        ),
        504 => graph_error(status, "UnknownError", "Gateway timeout."),
        _ => graph_error(
            status,
            "InternalServerError",
            "An internal server error occurred.",
        ),
    }
}

/// The caller's mailbox (lower-case email), or Graph's 401 / 403.
fn authorize_graph(
    shared: &Shared,
    headers: &HeaderMap,
    allowed: &[&str],
) -> Result<String, Box<Response>> {
    let unauthorized = |message: &str| {
        let mut response = graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
        response
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Err(Box::new(unauthorized("Access token is empty.")));
    };
    let inner = shared.lock();
    let Some(grant) = inner.access_tokens.get(token) else {
        return Err(Box::new(unauthorized("IDX14100: JWT is not well formed.")));
    };
    if grant.expires_at <= Instant::now() {
        return Err(Box::new(unauthorized(
            "Lifetime validation failed, the token is expired.",
        )));
    }
    if !grant.scopes.iter().any(|s| allowed.contains(&s.as_str())) {
        return Err(Box::new(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )));
    }
    Ok(grant.user.clone())
}

/// The zone of `Prefer: outlook.timezone="…"`, when it names one Graph knows.
fn preferred_zone(headers: &HeaderMap) -> Option<(String, Tz)> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| pref.trim().strip_prefix("outlook.timezone="))
        .map(|name| name.trim().trim_matches('"').to_owned())
        .find_map(|name| graph_zone(&name).map(|tz| (name, tz)))
}

fn with_preference(mut response: Response, zone: Option<&(String, Tz)>) -> Response {
    if let Some((name, _)) = zone {
        if let Ok(value) = HeaderValue::from_str(&format!("outlook.timezone=\"{name}\"")) {
            response.headers_mut().insert("preference-applied", value);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------
// Graph: events

/// Every property of microsoft.graph.event a client may send; read-only ones are ignored.
const KNOWN_PROPERTIES: &[&str] = &[
    "subject",
    "body",
    "start",
    "end",
    "location",
    "locations",
    "attendees",
    "isAllDay",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "showAs",
    "importance",
    "sensitivity",
    "categories",
    "transactionId",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "recurrence",
    "isCancelled",
    "id",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "iCalUId",
    "webLink",
    "organizer",
    "@odata.etag",
    "@odata.type",
];
const WRITABLE: &[&str] = &[
    "subject",
    "body",
    "location",
    "locations",
    "attendees",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "showAs",
    "importance",
    "sensitivity",
    "categories",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "recurrence",
];

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, GraphError> {
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(GraphError::bad(
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            ))
        }
    };
    if let Some(unknown) = map.keys().find(|k| !KNOWN_PROPERTIES.contains(&k.as_str())) {
        return Err(GraphError::bad(
            "RequestBodyRead",
            format!(
                "The property '{unknown}' does not exist on type 'microsoft.graph.event'. Make \
                 sure to only use property names that are defined by the type or mark the type \
                 as open type."
            ),
        ));
    }
    Ok(map)
}

/// A `dateTimeTimeZone` as the instant it names and its zone's name.
fn parse_edge(value: Option<&Value>, side: &str) -> Result<(DateTime<Utc>, String), GraphError> {
    let missing = || {
        GraphError::bad(
            "ErrorInvalidRequest",
            format!("Your request can't be completed. The event must have a {side} time."),
        )
    };
    let value = value.filter(|v| v.is_object()).ok_or_else(missing)?;
    let text = value["dateTime"].as_str().ok_or_else(missing)?;
    let zone_name = value["timeZone"].as_str().unwrap_or("UTC").to_owned();
    let zone = graph_zone(&zone_name).ok_or_else(|| {
        GraphError::bad(
            "TimeZoneNotSupportedException",
            format!(
                "A valid TimeZone value must be specified. The following TimeZone value is not \
                 supported: '{zone_name}'."
            ),
        )
    })?;
    let local = NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|_| {
        GraphError::bad(
            "ErrorInvalidRequest",
            format!("Cannot convert the literal '{text}' to the expected type 'Edm.DateTime'."),
        )
    })?;
    let instant = zone
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(missing)?;
    Ok((instant, zone_name))
}

/// Graph's `dateTime`: wall time with seven fractional digits, no offset.
fn graph_datetime(t: DateTime<Utc>, zone: Tz) -> String {
    let local = t.with_timezone(&zone).naive_local();
    format!(
        "{}.{:07}",
        local.format("%Y-%m-%dT%H:%M:%S"),
        local.nanosecond() / 100
    )
}

fn graph_timestamp(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() / 100
    )
}

fn check_span(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    all_day: bool,
    start_zone: &str,
    end_zone: &str,
) -> Result<(), GraphError> {
    if end < start {
        return Err(GraphError::bad(
            "ErrorInvalidRequest",
            "Your request can't be completed. The end time of the event must be after its start time.",
        ));
    }
    if all_day {
        let midnight = |t: DateTime<Utc>, zone: &str| {
            graph_zone(zone).is_some_and(|z| {
                let local = t.with_timezone(&z);
                local.hour() == 0 && local.minute() == 0 && local.second() == 0
            })
        };
        if !midnight(start, start_zone) || !midnight(end, end_zone) || end == start {
            return Err(GraphError::bad(
                "ErrorInvalidRequest",
                "Your request can't be completed. If the event is an all-day event, the start \
                 and end times must be set to midnight and be on different days.",
            ));
        }
    }
    Ok(())
}

fn render(event: &StoredEvent, zone: Option<(&str, Tz)>) -> Value {
    let mut out = event.fields.clone();
    let all_day = out
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let edge = |t: DateTime<Utc>, own: &str| {
        let own_tz = graph_zone(own).unwrap_or(Tz::UTC);
        match zone {
            // All-day events float: midnight wherever they are read.
            Some((name, _)) if all_day => {
                json!({"dateTime": graph_datetime(t, own_tz), "timeZone": name})
            }
            Some((name, tz)) => json!({"dateTime": graph_datetime(t, tz), "timeZone": name}),
            None => json!({"dateTime": graph_datetime(t, own_tz), "timeZone": own}),
        }
    };
    out.insert("start".into(), edge(event.start, &event.start_zone));
    out.insert("end".into(), edge(event.end, &event.end_zone));
    Value::Object(out)
}

fn normalize_attendees(value: &Value) -> Result<Value, GraphError> {
    let Some(list) = value.as_array() else {
        return Ok(json!([]));
    };
    let mut out = Vec::new();
    for attendee in list {
        let address = attendee["emailAddress"]["address"]
            .as_str()
            .unwrap_or_default();
        if address.is_empty() {
            return Err(GraphError::bad(
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid.",
            ));
        }
        let kind = attendee["type"].as_str().unwrap_or("required");
        if !matches!(kind, "required" | "optional" | "resource") {
            return Err(GraphError::bad(
                "RequestBodyRead",
                format!("Cannot convert the literal '{kind}' to the expected type 'microsoft.graph.attendeeType'."),
            ));
        }
        out.push(json!({
            "type": kind,
            "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
            "emailAddress": {
                "name": attendee["emailAddress"]["name"].as_str().unwrap_or(address),
                "address": address,
            },
        }));
    }
    Ok(Value::Array(out))
}

fn apply_writable(
    fields: &mut Map<String, Value>,
    body: &Map<String, Value>,
) -> Result<(), GraphError> {
    for key in WRITABLE {
        let Some(value) = body.get(*key) else {
            continue;
        };
        let value = match *key {
            "attendees" => normalize_attendees(value)?,
            "location" => json!({
                "displayName": value["displayName"].as_str().unwrap_or_default(),
                "locationType": "default",
                "uniqueIdType": "unknown",
            }),
            "showAs" => {
                let show = value.as_str().unwrap_or_default();
                if !matches!(
                    show,
                    "free" | "tentative" | "busy" | "oof" | "workingElsewhere" | "unknown"
                ) {
                    return Err(GraphError::bad(
                        "RequestBodyRead",
                        format!("Cannot convert the literal '{show}' to the expected type 'microsoft.graph.freeBusyStatus'."),
                    ));
                }
                value.clone()
            }
            _ => value.clone(),
        };
        fields.insert((*key).to_owned(), value);
    }
    if let Some(content) = fields.get("body").and_then(|b| b["content"].as_str()) {
        let preview: String = content.chars().take(255).collect();
        fields.insert("bodyPreview".into(), json!(preview));
    }
    let online = fields
        .get("isOnlineMeeting")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if online && fields.get("onlineMeeting").is_none_or(Value::is_null) {
        let meeting = random_string(24);
        fields.insert(
            "onlineMeeting".into(),
            json!({"joinUrl": format!("https://teams.microsoft.com/l/meetup-join/19%3ameeting_{meeting}%40thread.v2/0")}),
        );
        fields
            .entry("onlineMeetingProvider")
            .or_insert_with(|| json!("teamsForBusiness"));
    }
    Ok(())
}

/// Creates (or, for a known `transactionId`, finds) an event; `true` when it is new.
fn create(
    shared: &Shared,
    inner: &mut Inner,
    mailbox: &str,
    body: &Map<String, Value>,
) -> Result<(Value, bool), GraphError> {
    let Some(user) = inner.users.get(mailbox) else {
        return Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            format!("The requested user '{mailbox}' is invalid."),
        ));
    };
    let (owner_email, owner_name, owner_id) = (
        user.email.clone(),
        user.display_name.clone(),
        user.object_id.clone(),
    );
    let transaction = body.get("transactionId").and_then(Value::as_str);
    if let Some(transaction) = transaction {
        let existing = inner.events.get(mailbox).and_then(|events| {
            events.iter().find(|e| {
                e.fields.get("transactionId").and_then(Value::as_str) == Some(transaction)
            })
        });
        if let Some(existing) = existing {
            return Ok((render(existing, None), false));
        }
    }
    let (start, start_zone) = parse_edge(body.get("start"), "start")?;
    let (end, end_zone) = parse_edge(body.get("end"), "end")?;
    let all_day = body
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    check_span(start, end, all_day, &start_zone, &end_zone)?;

    let mut raw_id = [0u8; 32];
    rand::rng().fill_bytes(&mut raw_id);
    // Standard base64, as Graph's ids: they can hold `/`, `+` and `=`, so callers must
    // percent-encode them in paths.
    let id = format!("AAMkAD{}", STANDARD.encode(raw_id));
    let now = graph_timestamp(Utc::now());
    let change_key = inner.next_change_key();
    let mut fields = Map::new();
    fields.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/v1.0/$metadata#users('{owner_id}')/events/$entity",
            shared.base_url
        )),
    );
    fields.insert("@odata.etag".into(), json!(format!("W/\"{change_key}\"")));
    fields.insert("id".into(), json!(id));
    fields.insert("createdDateTime".into(), json!(now));
    fields.insert("lastModifiedDateTime".into(), json!(now));
    fields.insert("changeKey".into(), json!(change_key));
    fields.insert("categories".into(), json!([]));
    fields.insert("transactionId".into(), json!(transaction));
    fields.insert("originalStartTimeZone".into(), json!(start_zone));
    fields.insert("originalEndTimeZone".into(), json!(end_zone));
    let uid = hex::encode_upper(&Sha256::digest(id.as_bytes())[..28]);
    fields.insert(
        "iCalUId".into(),
        json!(format!("040000008200E00074C5B7101A82E008{uid}")),
    );
    fields.insert(
        "uid".into(),
        json!(format!("040000008200E00074C5B7101A82E008{uid}")),
    );
    fields.insert("reminderMinutesBeforeStart".into(), json!(15));
    fields.insert("isReminderOn".into(), json!(true));
    fields.insert("hasAttachments".into(), json!(false));
    fields.insert("subject".into(), json!(""));
    fields.insert("bodyPreview".into(), json!(""));
    fields.insert("importance".into(), json!("normal"));
    fields.insert("sensitivity".into(), json!("normal"));
    fields.insert("isAllDay".into(), json!(all_day));
    fields.insert("isCancelled".into(), json!(false));
    fields.insert("isOrganizer".into(), json!(true));
    fields.insert("responseRequested".into(), json!(true));
    fields.insert("seriesMasterId".into(), Value::Null);
    fields.insert("showAs".into(), json!("busy"));
    fields.insert(
        "type".into(),
        json!(if body.contains_key("recurrence") {
            "seriesMaster"
        } else {
            "singleInstance"
        }),
    );
    fields.insert(
        "webLink".into(),
        json!(format!(
            "https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        )),
    );
    fields.insert("isOnlineMeeting".into(), json!(false));
    fields.insert("onlineMeetingProvider".into(), json!("unknown"));
    fields.insert("onlineMeeting".into(), Value::Null);
    fields.insert(
        "responseStatus".into(),
        json!({"response": "organizer", "time": "0001-01-01T00:00:00Z"}),
    );
    fields.insert("body".into(), json!({"contentType": "html", "content": ""}));
    fields.insert(
        "location".into(),
        json!({"displayName": "", "locationType": "default", "uniqueIdType": "unknown"}),
    );
    fields.insert("locations".into(), json!([]));
    fields.insert("recurrence".into(), Value::Null);
    fields.insert("attendees".into(), json!([]));
    fields.insert(
        "organizer".into(),
        json!({"emailAddress": {"name": owner_name, "address": owner_email}}),
    );
    apply_writable(&mut fields, body)?;
    let event = StoredEvent {
        fields,
        start,
        end,
        start_zone,
        end_zone,
    };
    let rendered = render(&event, None);
    inner
        .events
        .entry(mailbox.to_owned())
        .or_default()
        .push(event);
    Ok((rendered, true))
}

/// `None` for the default calendar; the user's calendar id, or 404, for `/calendars/{id}`.
fn check_calendar(inner: &Inner, mailbox: &str, calendar: Option<&str>) -> Result<(), GraphError> {
    match calendar {
        None => Ok(()),
        Some(id)
            if inner
                .users
                .get(mailbox)
                .is_some_and(|u| u.calendar_id == id) =>
        {
            Ok(())
        }
        Some(_) => Err(GraphError::not_found()),
    }
}

async fn create_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_in(&shared, None, &headers, &body)
}

async fn create_event_of(
    State(shared): State<Arc<Shared>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_in(&shared, Some(&calendar), &headers, &body)
}

fn create_in(
    shared: &Shared,
    calendar: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mailbox = match authorize_graph(shared, headers, WRITE_SCOPES) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let zone = preferred_zone(headers);
    let result = parse_object(body).and_then(|body| {
        let mut inner = shared.lock();
        check_calendar(&inner, &mailbox, calendar)?;
        let (event, _) = create(shared, &mut inner, &mailbox, &body)?;
        Ok(event)
    });
    match result {
        Ok(event) => {
            let event = rezone(event, zone.as_ref());
            let location = event["id"].as_str().map(|id| {
                format!(
                    "{}/v1.0/me/events/{}",
                    shared.base_url,
                    form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
                )
            });
            let mut response = (StatusCode::CREATED, Json(event)).into_response();
            if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            with_preference(response, zone.as_ref())
        }
        Err(e) => e.into_response(),
    }
}

/// Re-renders an event answer in the preferred zone, when one was asked for.
fn rezone(event: Value, zone: Option<&(String, Tz)>) -> Value {
    let Some((name, tz)) = zone else {
        return event;
    };
    let mut event = event;
    let all_day = event["isAllDay"].as_bool().unwrap_or(false);
    for side in ["start", "end"] {
        let edge = &event[side];
        let parsed = parse_edge(Some(edge), side).ok();
        if let Some((instant, own)) = parsed {
            let shown = if all_day {
                graph_zone(&own).unwrap_or(Tz::UTC)
            } else {
                *tz
            };
            event[side] = json!({"dateTime": graph_datetime(instant, shown), "timeZone": name});
        }
    }
    event
}

async fn get_event(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mailbox = match authorize_graph(&shared, &headers, READ_SCOPES) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let zone = preferred_zone(&headers);
    let inner = shared.lock();
    let found = inner
        .events
        .get(&mailbox)
        .and_then(|events| events.iter().find(|e| e.fields["id"] == id.as_str()));
    match found {
        Some(event) => {
            let shown = zone
                .as_ref()
                .map(|(n, t)| (n.as_str(), *t))
                .unwrap_or(("UTC", Tz::UTC));
            with_preference(
                Json(render(event, Some(shown))).into_response(),
                zone.as_ref(),
            )
        }
        None => GraphError::not_found().into_response(),
    }
}

async fn patch_event(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mailbox = match authorize_graph(&shared, &headers, WRITE_SCOPES) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let zone = preferred_zone(&headers);
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let result = parse_object(&body).and_then(|body| {
        let mut inner = shared.lock();
        let change_key = inner.next_change_key();
        let event = inner
            .events
            .get_mut(&mailbox)
            .and_then(|events| events.iter_mut().find(|e| e.fields["id"] == id.as_str()))
            .ok_or_else(GraphError::not_found)?;
        if let Some(expected) = if_match.as_deref() {
            let current = event.fields["changeKey"].as_str().unwrap_or_default();
            let bare = expected.trim_start_matches("W/").trim_matches('"');
            if expected != "*" && bare != current {
                return Err(GraphError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "ErrorIrresolvableConflict",
                    "The change key passed in the request does not match the current change key for the item.",
                ));
            }
        }
        let (start, start_zone) = match body.get("start") {
            Some(edge) => parse_edge(Some(edge), "start")?,
            None => (event.start, event.start_zone.clone()),
        };
        let (end, end_zone) = match body.get("end") {
            Some(edge) => parse_edge(Some(edge), "end")?,
            None => (event.end, event.end_zone.clone()),
        };
        let all_day = body
            .get("isAllDay")
            .and_then(Value::as_bool)
            .or_else(|| event.fields.get("isAllDay").and_then(Value::as_bool))
            .unwrap_or(false);
        check_span(start, end, all_day, &start_zone, &end_zone)?;
        let mut fields = event.fields.clone();
        apply_writable(&mut fields, &body)?;
        fields.insert("isAllDay".into(), json!(all_day));
        fields.insert("originalStartTimeZone".into(), json!(start_zone));
        fields.insert("originalEndTimeZone".into(), json!(end_zone));
        fields.insert("changeKey".into(), json!(change_key));
        fields.insert("@odata.etag".into(), json!(format!("W/\"{change_key}\"")));
        fields.insert("lastModifiedDateTime".into(), json!(graph_timestamp(Utc::now())));
        *event = StoredEvent {
            fields,
            start,
            end,
            start_zone,
            end_zone,
        };
        Ok(render(event, None))
    });
    match result {
        Ok(event) => with_preference(
            Json(rezone(event, zone.as_ref())).into_response(),
            zone.as_ref(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // User.Read is what /me needs; the calendar scopes are accepted too to keep tests short.
    let allowed = ["User.Read", "Calendars.Read", "Calendars.ReadWrite"];
    let mailbox = match authorize_graph(&shared, &headers, &allowed) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let inner = shared.lock();
    match inner.users.get(&mailbox) {
        Some(user) => Json(json!({
            "@odata.context": format!("{}/v1.0/$metadata#users/$entity", shared.base_url),
            "id": user.object_id,
            "displayName": user.display_name,
            "mail": user.email,
            "userPrincipalName": user.email,
        }))
        .into_response(),
        None => GraphError::not_found().into_response(),
    }
}

async fn calendar_view(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    view(
        &shared,
        None,
        query,
        &headers,
        true,
        "/v1.0/me/calendarView",
    )
}

async fn calendar_view_of(
    State(shared): State<Arc<Shared>>,
    Path(calendar): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!(
        "/v1.0/me/calendars/{}/calendarView",
        form_urlencoded::byte_serialize(calendar.as_bytes()).collect::<String>()
    );
    view(&shared, Some(&calendar), query, &headers, true, &path)
}

async fn list_events(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    view(&shared, None, query, &headers, false, "/v1.0/me/events")
}

async fn list_events_of(
    State(shared): State<Arc<Shared>>,
    Path(calendar): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!(
        "/v1.0/me/calendars/{}/events",
        form_urlencoded::byte_serialize(calendar.as_bytes()).collect::<String>()
    );
    view(&shared, Some(&calendar), query, &headers, false, &path)
}

/// ISO 8601 in a query: with an offset, or UTC when it has none (as Graph reads it).
fn query_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn view(
    shared: &Shared,
    calendar: Option<&str>,
    query: Option<String>,
    headers: &HeaderMap,
    windowed: bool,
    path: &str,
) -> Response {
    let mailbox = match authorize_graph(shared, headers, READ_SCOPES) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    let zone = preferred_zone(headers);
    let params: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let result = (|| {
        let window = if windowed {
            let bound = |name: &str| params.get(name).and_then(|v| query_instant(v));
            match (bound("startDateTime"), bound("endDateTime")) {
                (Some(start), Some(end)) => Some((start, end)),
                _ => {
                    return Err(GraphError::bad(
                        "ErrorInvalidParameters",
                        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
                    ))
                }
            }
        } else {
            None
        };
        let number = |name: &str, default: usize| -> Result<usize, GraphError> {
            match params.get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    GraphError::bad(
                        "BadRequest",
                        format!("Invalid value '{v}' for query option '{name}'."),
                    )
                }),
            }
        };
        let top = number("$top", DEFAULT_PAGE)?.clamp(1, MAX_PAGE);
        let skip = number("$skip", 0)?;
        let inner = shared.lock();
        check_calendar(&inner, &mailbox, calendar)?;
        let mut matching: Vec<&StoredEvent> = inner
            .events
            .get(&mailbox)
            .into_iter()
            .flatten()
            .filter(|e| window.is_none_or(|(start, end)| e.end > start && e.start < end))
            .collect();
        if params
            .get("$orderby")
            .is_some_and(|o| o.starts_with("start/dateTime"))
        {
            matching.sort_by_key(|e| e.start);
        }
        let shown = zone
            .as_ref()
            .map(|(n, t)| (n.as_str(), *t))
            .unwrap_or(("UTC", Tz::UTC));
        let total = matching.len();
        let value: Vec<Value> = matching
            .into_iter()
            .skip(skip)
            .take(top)
            .map(|e| render(e, Some(shown)))
            .collect();
        let mut body = json!({
            "@odata.context": format!("{}/v1.0/$metadata#users('{mailbox}')/events", shared.base_url),
            "value": value,
        });
        if skip + top < total {
            let mut next = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                if k != "$skip" && k != "$top" {
                    next.append_pair(k, v);
                }
            }
            next.append_pair("$top", &top.to_string());
            next.append_pair("$skip", &(skip + top).to_string());
            body["@odata.nextLink"] = json!(format!("{}{path}?{}", shared.base_url, next.finish()));
        }
        Ok(body)
    })();
    match result {
        Ok(body) => with_preference(Json(body).into_response(), zone.as_ref()),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// Graph: getSchedule

fn status_digit(show_as: &str) -> (u8, char) {
    // (strength, availabilityView digit)
    match show_as {
        "oof" => (4, '3'),
        "busy" => (3, '2'),
        "workingElsewhere" => (2, '4'),
        "tentative" => (1, '1'),
        _ => (0, '0'),
    }
}

async fn get_schedule(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorize_graph(&shared, &headers, READ_SCOPES) {
        return *response;
    }
    let zone = preferred_zone(&headers);
    let result = (|| {
        let body = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(GraphError::bad(
                    "BadRequest",
                    "Unable to read JSON request payload.",
                ))
            }
        };
        let schedules: Vec<String> = body
            .get("schedules")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if schedules.is_empty() {
            return Err(GraphError::bad(
                "ErrorInvalidParameters",
                "Schedules are required.",
            ));
        }
        let (start, _) = parse_edge(body.get("startTime"), "start")?;
        let (end, _) = parse_edge(body.get("endTime"), "end")?;
        if end <= start {
            return Err(GraphError::bad(
                "ErrorInvalidParameters",
                "The start time must be before the end time.",
            ));
        }
        if end - start > Duration::days(MAX_SCHEDULE_DAYS) {
            return Err(GraphError::bad(
                "ErrorInvalidParameters",
                "The requested time duration specified is too long. It must be less than 42 days.",
            ));
        }
        let interval = body
            .get("availabilityViewInterval")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        if !(5..=1440).contains(&interval) {
            return Err(GraphError::bad(
                "ErrorInvalidParameters",
                "The availabilityViewInterval must be between 5 and 1440 minutes.",
            ));
        }
        let shown = zone
            .as_ref()
            .map(|(n, t)| (n.as_str(), *t))
            .unwrap_or(("UTC", Tz::UTC));
        let inner = shared.lock();
        let mut value = Vec::new();
        for schedule in schedules {
            let key = schedule.to_ascii_lowercase();
            if !inner.users.contains_key(&key) {
                value.push(json!({
                    "scheduleId": schedule,
                    "availabilityView": "",
                    "scheduleItems": [],
                    "error": {
                        "message": format!("The requested user '{schedule}' is invalid."),
                        "responseCode": "ErrorInvalidUser",
                    },
                }));
                continue;
            }
            let mut items: Vec<(&StoredEvent, &str)> = inner
                .events
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|e| e.fields["isCancelled"] != true)
                .filter_map(|e| {
                    let show = e.fields["showAs"].as_str().unwrap_or("busy");
                    (show != "free" && e.end > start && e.start < end).then_some((e, show))
                })
                .collect();
            items.sort_by_key(|(e, _)| e.start);
            let mut view = String::new();
            let mut slot = start;
            while slot < end {
                let slot_end = slot + Duration::minutes(interval);
                let digit = items
                    .iter()
                    .filter(|(e, _)| e.end > slot && e.start < slot_end)
                    .map(|(_, show)| status_digit(show))
                    .max()
                    .map_or('0', |(_, d)| d);
                view.push(digit);
                slot = slot_end;
            }
            let schedule_items: Vec<Value> = items
                .iter()
                .map(|(e, show)| {
                    json!({
                        "isPrivate": false,
                        "status": show,
                        "subject": e.fields["subject"],
                        "location": e.fields["location"]["displayName"],
                        "isMeeting": e.fields["attendees"].as_array().is_some_and(|a| !a.is_empty()),
                        "isRecurring": false,
                        "isException": false,
                        "isReminderSet": true,
                        "start": {"dateTime": graph_datetime(e.start, shown.1), "timeZone": shown.0},
                        "end": {"dateTime": graph_datetime(e.end, shown.1), "timeZone": shown.0},
                    })
                })
                .collect();
            value.push(json!({
                "scheduleId": schedule,
                "availabilityView": view,
                "scheduleItems": schedule_items,
                "workingHours": {
                    "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                    "startTime": "08:00:00.0000000",
                    "endTime": "17:00:00.0000000",
                    "timeZone": {"name": "UTC"},
                },
            }));
        }
        Ok(json!({
            "@odata.context": format!("{}/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)", shared.base_url),
            "value": value,
        }))
    })();
    match result {
        Ok(body) => with_preference(Json(body).into_response(), zone.as_ref()),
        Err(e) => e.into_response(),
    }
}
