//! Fake Twilio REST API (2010-04-01) and Twilio's signed webhooks (PROVIDERS.md §3).
//!
//! Serves `POST/GET /2010-04-01/Accounts/{AccountSid}/Messages.json`, `Messages/{Sid}.json`,
//! `Calls.json` and `Calls/{Sid}.json` under a loopback base URL, with HTTP Basic auth
//! (`AccountSid:AuthToken`, or an API key `SK…:secret` of the account), form-encoded bodies and
//! Twilio's JSON field names. Status callbacks and inbound-SMS webhooks are form POSTs signed
//! with `X-Twilio-Signature` exactly as Twilio signs them, so the platform's webhook-ingress
//! verifier accepts them.
//!
//! Fidelity choices worth knowing:
//! - errors are Twilio's legacy body `{code, message, more_info, status}`; an unknown account,
//!   a wrong token or a key of another account are all 401 `20003` "Authenticate" with
//!   `WWW-Authenticate: Basic realm="Twilio API"`, as Twilio answers them; injected 429s carry
//!   `20429` (that code is UNCONFIRMED upstream);
//! - message validation follows Twilio's codes: 21604 missing `To`, 21211 invalid `To`, 21603
//!   missing `From`, 21606 `From` not a number of the account, 21602 missing body and media,
//!   21617 body over 1600 characters, 21702 unknown messaging service; calls use 21201 (`To`),
//!   21213 (`From`), 21211, 21210 (caller id not of the account) and 21205 (no `Url`/`Twiml`);
//! - segments follow GSM-7 (160 per single, 153 per part; extension characters count twice)
//!   or UCS-2 (70 / 67 UTF-16 units); prices are negative strings with five decimals and stay
//!   `null` until the message is `sent` or the call `completed`, as on Twilio;
//! - no status callback is posted for the initial status (as Twilio documents); the voice
//!   callback carries no price (Twilio's does not either; read the call resource instead);
//! - only exact E.164 numbers are accepted as `To` (Twilio also normalises some national
//!   formats; the platform always sends E.164);
//! - the 1-call-per-second queueing of outbound calls and scheduled messages are not modelled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha1::Sha1;
use tokio::net::TcpListener;

use crate::harness::{self, Failure, Harness, Recorded, Running};

/// Twilio's API version segment; every REST path starts with it.
pub const API_VERSION: &str = "2010-04-01";
/// The signature header Twilio sets on every webhook.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// Longest message body Twilio accepts.
pub const MAX_BODY_CHARS: usize = 1600;

/// How the fake behaves; `Default` mirrors Twilio's US list prices.
#[derive(Clone, Debug)]
pub struct FakeTwilioConfig {
    /// Price of one SMS segment in 1/100000 of `price_unit` (790 = 0.00790 USD).
    pub sms_segment_price: i64,
    /// Price of one started call minute in 1/100000 of `price_unit` (1400 = 0.01400 USD).
    pub call_minute_price: i64,
    pub price_unit: String,
    /// When set, every message moves queued → sent → delivered on its own, one step per
    /// interval, posting its status callbacks (the sandbox); tests drive [`FakeTwilio::advance`].
    pub auto_progress: Option<Duration>,
}

impl Default for FakeTwilioConfig {
    fn default() -> Self {
        Self {
            sms_segment_price: 790,
            call_minute_price: 1400,
            price_unit: "USD".to_owned(),
            auto_progress: None,
        }
    }
}

/// A message the fake holds, outbound or inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeMessage {
    pub sid: String,
    pub account_sid: String,
    pub messaging_service_sid: Option<String>,
    pub from: String,
    pub to: String,
    pub body: String,
    pub media_urls: Vec<String>,
    /// Twilio's status word, e.g. `queued`, `delivered`.
    pub status: String,
    /// `outbound-api` or `inbound`.
    pub direction: String,
    pub num_segments: u32,
    /// Twilio's price string (negative), once final.
    pub price: Option<String>,
    pub error_code: Option<u32>,
    pub status_callback: Option<String>,
    /// `ValidityPeriod` in seconds, when sent.
    pub validity_period: Option<u32>,
    pub date_created: DateTime<Utc>,
    pub date_sent: Option<DateTime<Utc>>,
    pub date_updated: DateTime<Utc>,
}

/// A call the fake holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeCall {
    pub sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    pub twiml: Option<String>,
    pub url: Option<String>,
    pub status: String,
    pub status_callback: Option<String>,
    /// `StatusCallbackEvent` values, in the order given; Twilio's default is `completed`.
    pub status_callback_events: Vec<String>,
    pub timeout_secs: Option<u32>,
    pub record: bool,
    pub duration_secs: Option<u32>,
    pub price: Option<String>,
    pub date_created: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Callbacks already posted (Twilio's `SequenceNumber` counts them).
    pub callbacks_sent: u32,
}

/// One webhook the fake posted and what the receiver answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub url: String,
    /// The form parameters, in the order sent.
    pub params: Vec<(String, String)>,
    pub signature: String,
    pub status: u16,
    pub response: Bytes,
}

/// Why a webhook could not be posted.
#[derive(Debug)]
pub enum WebhookError {
    /// No account owns the number or no such message or call exists.
    Unknown(String),
    Http(reqwest::Error),
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Unknown(what) => write!(f, "fake twilio knows no {what}"),
            WebhookError::Http(err) => write!(f, "webhook delivery failed: {err}"),
        }
    }
}

impl std::error::Error for WebhookError {}

impl From<reqwest::Error> for WebhookError {
    fn from(err: reqwest::Error) -> Self {
        WebhookError::Http(err)
    }
}

/// Base64 `HMAC-SHA1(auth_token, url ‖ name₁value₁ ‖ …)` over the params sorted by name, then
/// value: the `X-Twilio-Signature` Twilio sends with a form webhook (PROVIDERS.md §3.1).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes keys of any length, so the error arm is dead; an empty signature never
    // verifies, which is the safe answer should it ever be reached.
    let Ok(mut mac) = <Hmac<Sha1> as hmac::Mac>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Segments Twilio bills for `body`: GSM-7 when every character is in the GSM 03.38 sets
/// (160 septets single, 153 per concatenated part), else UCS-2 (70 / 67 UTF-16 units).
pub fn segments(body: &str) -> u32 {
    let gsm_septets: Option<usize> = body.chars().try_fold(0usize, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (units, single, part) = match gsm_septets {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    let count = if units <= single {
        1
    } else {
        units.div_ceil(part)
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table: each costs an escape septet too.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// `-0.00790`-style price from 1/100000 units, as Twilio prints it.
fn price_string(units_1e5: i64) -> String {
    let sign = if units_1e5 > 0 { "-" } else { "" };
    let abs = units_1e5.unsigned_abs();
    format!("{sign}{}.{:05}", abs / 100_000, abs % 100_000)
}

/// Twilio's description of the delivery errors a test is likely to inject.
fn error_message(code: u32) -> Option<&'static str> {
    Some(match code {
        30003 => "Unreachable destination handset",
        30004 => "Message blocked",
        30005 => "Unknown destination handset",
        30006 => "Landline or unreachable carrier",
        30007 => "Message filtered",
        30008 => "Unknown error",
        _ => return None,
    })
}

fn rfc2822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

struct Account {
    auth_token: String,
    /// API key SID → secret.
    api_keys: HashMap<String, String>,
    numbers: BTreeSet<String>,
    /// Messaging service SID → its sender pool.
    services: BTreeMap<String, Vec<String>>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    messages: Vec<FakeMessage>,
    calls: Vec<FakeCall>,
    deliveries: Vec<Delivery>,
}

struct Shared {
    config: FakeTwilioConfig,
    inner: Mutex<Inner>,
    webhooks: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake Twilio; the server stops when this is dropped.
pub struct FakeTwilio {
    shared: Arc<Shared>,
    harness: Harness,
    running: Running,
}

impl FakeTwilio {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test that needs this fake can run then.
    pub async fn start(config: FakeTwilioConfig) -> FakeTwilio {
        match Self::try_start(config).await {
            Ok(fake) => fake,
            Err(err) => panic!("fake twilio failed to start: {err}"),
        }
    }

    pub async fn try_start(config: FakeTwilioConfig) -> io::Result<FakeTwilio> {
        Self::try_start_on(harness::loopback().await?, config)
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(listener: TcpListener, config: FakeTwilioConfig) -> io::Result<FakeTwilio> {
        let webhooks = reqwest::Client::builder()
            .user_agent("TwilioProxy/1.1")
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner::default()),
            webhooks,
        });
        let accounts = format!("/{API_VERSION}/Accounts/{{account_sid}}");
        let router = Router::new()
            .route(&format!("{accounts}/Messages.json"), post(create_message))
            .route(&format!("{accounts}/Messages/{{file}}"), get(fetch_message))
            .route(&format!("{accounts}/Calls.json"), post(create_call))
            .route(&format!("{accounts}/Calls/{{file}}"), get(fetch_call))
            .fallback(not_found)
            .with_state(shared.clone());
        let harness = Harness::new(&[]);
        let running = harness.serve(listener, router, Arc::new(injected_error))?;
        Ok(FakeTwilio {
            shared,
            harness,
            running,
        })
    }

    /// `http://127.0.0.1:port`; the adapter appends `/2010-04-01/...` as to `https://api.twilio.com`.
    pub fn base_url(&self) -> &str {
        &self.running.base_url
    }

    /// Adds an account, or replaces its auth token.
    pub fn add_account(&self, account_sid: &str, auth_token: &str) {
        let mut inner = self.shared.lock();
        let account = inner
            .accounts
            .entry(account_sid.to_owned())
            .or_insert_with(|| Account {
                auth_token: String::new(),
                api_keys: HashMap::new(),
                numbers: BTreeSet::new(),
                services: BTreeMap::new(),
            });
        account.auth_token = auth_token.to_owned();
    }

    /// Adds an API key (`SK…`) of an existing account.
    pub fn add_api_key(&self, account_sid: &str, key_sid: &str, secret: &str) {
        if let Some(account) = self.shared.lock().accounts.get_mut(account_sid) {
            account
                .api_keys
                .insert(key_sid.to_owned(), secret.to_owned());
        }
    }

    /// Gives an existing account a phone number it may send from and receive on.
    pub fn add_number(&self, account_sid: &str, e164: &str) {
        if let Some(account) = self.shared.lock().accounts.get_mut(account_sid) {
            account.numbers.insert(e164.to_owned());
        }
    }

    /// Adds a messaging service (`MG…`) whose sender pool is `numbers`.
    pub fn add_messaging_service(&self, account_sid: &str, service_sid: &str, numbers: &[&str]) {
        if let Some(account) = self.shared.lock().accounts.get_mut(account_sid) {
            let pool = numbers.iter().map(|n| (*n).to_owned()).collect();
            account.services.insert(service_sid.to_owned(), pool);
        }
    }

    /// Every request received, `Authorization` reduced to `Basic [redacted]`.
    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    /// Requests to the Messages create endpoint of `account_sid`.
    pub fn message_requests(&self, account_sid: &str) -> Vec<Recorded> {
        self.harness.requests_to(
            "POST",
            &format!("/{API_VERSION}/Accounts/{account_sid}/Messages.json"),
        )
    }

    pub fn clear_requests(&self) {
        self.harness.clear_requests();
    }

    /// The next `n` requests fail with `failure` (Twilio's error body).
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    /// The next `n` requests whose path starts with `path_prefix` fail with `failure`.
    pub fn fail_next_at(&self, path_prefix: &str, n: usize, failure: Failure) {
        self.harness.fail_next_at(path_prefix, n, failure);
    }

    /// From now on each request fails with probability `share`.
    pub fn fail_share(&self, share: f64, failure: Failure) {
        self.harness.fail_share(share, failure);
    }

    pub fn clear_failures(&self) {
        self.harness.clear_failures();
    }

    /// Messages the fake accepted or received, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.lock().messages.clone()
    }

    pub fn message(&self, sid: &str) -> Option<FakeMessage> {
        self.shared
            .lock()
            .messages
            .iter()
            .find(|m| m.sid == sid)
            .cloned()
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.shared.lock().calls.clone()
    }

    /// Webhooks posted so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Moves a message to `status` (`sending`, `sent`, `delivered`, `undelivered`, `failed`,
    /// `read`, …) and posts its signed status callback when it has one. `sent` and later
    /// statuses fix the price. Returns the callback delivery, if any.
    pub async fn advance(&self, sid: &str, status: &str) -> Result<Option<Delivery>, WebhookError> {
        advance_message(&self.shared, sid, status, None).await
    }

    /// Fails a message with a Twilio error code (e.g. 30003 unreachable, 30006 landline),
    /// `status` being `undelivered` or `failed`, and posts its callback.
    pub async fn fail_message(
        &self,
        sid: &str,
        status: &str,
        error_code: u32,
    ) -> Result<Option<Delivery>, WebhookError> {
        advance_message(&self.shared, sid, status, Some(error_code)).await
    }

    /// Posts a signed inbound-SMS webhook to `url` as Twilio does when `from` texts `to` (a
    /// number of some account), and records the inbound message. Returns what `url` answered.
    pub async fn send_inbound_sms(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> Result<Delivery, WebhookError> {
        let now = Utc::now();
        let (token, params) = {
            let mut inner = self.shared.lock();
            let (account_sid, token) = inner
                .accounts
                .iter()
                .find(|(_, a)| a.numbers.contains(to))
                .map(|(sid, a)| (sid.clone(), a.auth_token.clone()))
                .ok_or_else(|| WebhookError::Unknown(format!("number {to}")))?;
            let message = FakeMessage {
                sid: new_sid("SM"),
                account_sid: account_sid.clone(),
                messaging_service_sid: None,
                from: from.to_owned(),
                to: to.to_owned(),
                body: body.to_owned(),
                media_urls: Vec::new(),
                status: "received".to_owned(),
                direction: "inbound".to_owned(),
                num_segments: segments(body),
                price: None,
                error_code: None,
                status_callback: None,
                validity_period: None,
                date_created: now,
                date_sent: Some(now),
                date_updated: now,
            };
            let params = pairs(&[
                ("ToCountry", "US"),
                ("SmsMessageSid", &message.sid),
                ("NumMedia", "0"),
                ("SmsSid", &message.sid),
                ("SmsStatus", "received"),
                ("Body", body),
                ("To", to),
                ("NumSegments", &message.num_segments.to_string()),
                ("MessageSid", &message.sid),
                ("AccountSid", &account_sid),
                ("From", from),
                ("ApiVersion", API_VERSION),
            ]);
            inner.messages.push(message);
            (token, params)
        };
        post_signed(&self.shared, url, &token, params).await
    }

    /// Completes a call after `duration_secs` of talk, fixing its price (per started minute),
    /// and posts the signed callbacks for every subscribed progress event not yet posted
    /// (`initiated`, `ringing`, `answered`, then `completed` with `CallDuration`), in order.
    pub async fn complete_call(
        &self,
        sid: &str,
        duration_secs: u32,
    ) -> Result<Vec<Delivery>, WebhookError> {
        let now = Utc::now();
        let (url, token, events) = {
            let mut inner = self.shared.lock();
            let per_minute = self.shared.config.call_minute_price;
            let Inner {
                accounts, calls, ..
            } = &mut *inner;
            let call = calls
                .iter_mut()
                .find(|c| c.sid == sid)
                .ok_or_else(|| WebhookError::Unknown(format!("call {sid}")))?;
            let token = accounts
                .get(&call.account_sid)
                .map(|a| a.auth_token.clone())
                .unwrap_or_default();
            let minutes = i64::from(duration_secs.div_ceil(60));
            call.status = "completed".to_owned();
            call.duration_secs = Some(duration_secs);
            call.price = Some(price_string(minutes * per_minute));
            call.start_time = Some(now - chrono::Duration::seconds(i64::from(duration_secs)));
            call.end_time = Some(now);
            let Some(url) = call.status_callback.clone() else {
                return Ok(Vec::new());
            };
            let mut events = Vec::new();
            for (event, status) in [
                ("initiated", "initiated"),
                ("ringing", "ringing"),
                ("answered", "in-progress"),
                ("completed", "completed"),
            ] {
                if !call.status_callback_events.iter().any(|e| e == event) {
                    continue;
                }
                let mut params = pairs(&[
                    ("Called", &call.to),
                    ("ToState", ""),
                    ("CallerCountry", "US"),
                    ("Direction", "outbound-api"),
                    ("Timestamp", &rfc2822(now)),
                    ("CallbackSource", "call-progress-events"),
                    ("SequenceNumber", &call.callbacks_sent.to_string()),
                    ("CallStatus", status),
                    ("From", &call.from),
                    ("CallSid", &call.sid),
                    ("To", &call.to),
                    ("Caller", &call.from),
                    ("AccountSid", &call.account_sid),
                    ("ApiVersion", API_VERSION),
                ]);
                if event == "completed" {
                    params.push(("CallDuration".to_owned(), duration_secs.to_string()));
                    params.push(("Duration".to_owned(), minutes.to_string()));
                }
                call.callbacks_sent += 1;
                events.push(params);
            }
            // A callback already posted is not posted again on a second completion.
            call.status_callback_events.clear();
            (url, token, events)
        };
        let mut deliveries = Vec::new();
        for params in events {
            deliveries.push(post_signed(&self.shared, &url, &token, params).await?);
        }
        Ok(deliveries)
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn post_signed(
    shared: &Shared,
    url: &str,
    auth_token: &str,
    params: Vec<(String, String)>,
) -> Result<Delivery, WebhookError> {
    let signature = signature(auth_token, url, &params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let headers = [
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
        ("x-twilio-signature", signature.clone()),
    ];
    let (status, response) =
        harness::deliver(&shared.webhooks, url, &headers, Bytes::from(body)).await?;
    let delivery = Delivery {
        url: url.to_owned(),
        params,
        signature,
        status,
        response,
    };
    shared.lock().deliveries.push(delivery.clone());
    Ok(delivery)
}

async fn advance_message(
    shared: &Shared,
    sid: &str,
    status: &str,
    error_code: Option<u32>,
) -> Result<Option<Delivery>, WebhookError> {
    let now = Utc::now();
    let callback = {
        let mut inner = shared.lock();
        let Inner {
            accounts, messages, ..
        } = &mut *inner;
        let message = messages
            .iter_mut()
            .find(|m| m.sid == sid)
            .ok_or_else(|| WebhookError::Unknown(format!("message {sid}")))?;
        message.status = status.to_owned();
        message.error_code = error_code;
        message.date_updated = now;
        let final_price = matches!(
            status,
            "sent" | "delivered" | "undelivered" | "failed" | "read"
        );
        if final_price && message.price.is_none() {
            // Twilio charges a failed carrier hand-off too; a message refused before sending is
            // free, which the fake approximates by charging every final status.
            let cost = if status == "failed" {
                0
            } else {
                i64::from(message.num_segments) * shared.config.sms_segment_price
            };
            message.price = Some(price_string(cost));
        }
        if status == "sent" && message.date_sent.is_none() {
            message.date_sent = Some(now);
        }
        match &message.status_callback {
            None => None,
            Some(url) => {
                let token = accounts
                    .get(&message.account_sid)
                    .map(|a| a.auth_token.clone())
                    .unwrap_or_default();
                let mut params = pairs(&[
                    ("SmsSid", &message.sid),
                    ("SmsStatus", status),
                    ("MessageStatus", status),
                    ("To", &message.to),
                    ("MessageSid", &message.sid),
                    ("AccountSid", &message.account_sid),
                    ("From", &message.from),
                    ("ApiVersion", API_VERSION),
                ]);
                if let Some(service) = &message.messaging_service_sid {
                    params.push(("MessagingServiceSid".to_owned(), service.clone()));
                }
                if let Some(code) = error_code {
                    params.push(("ErrorCode".to_owned(), code.to_string()));
                }
                Some((url.clone(), token, params))
            }
        }
    };
    match callback {
        None => Ok(None),
        Some((url, token, params)) => Ok(Some(post_signed(shared, &url, &token, params).await?)),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP handlers

/// Twilio's legacy error body.
fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn injected_error(status: StatusCode) -> Response {
    let (code, message) = match status.as_u16() {
        401 => (20003, "Authenticate"),
        404 => (20404, "The requested resource was not found"),
        429 => (20429, "Too Many Requests"),
        503 => (20503, "Service Unavailable"),
        _ => (20500, "An internal server error has occurred"),
    };
    twilio_error(status, code, message)
}

/// A refusal the handlers answer with; kept small so `Result`s carrying it stay cheap.
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = twilio_error(self.status, self.code, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        response
    }
}

fn unauthenticated() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: 20003,
        message: "Authenticate".to_owned(),
    }
}

fn bad_request(code: u32, message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code,
        message,
    }
}

async fn not_found() -> Response {
    twilio_error(
        StatusCode::NOT_FOUND,
        20404,
        "The requested resource was not found",
    )
}

/// Checks HTTP Basic credentials against the account in the path, as Twilio does: the account
/// SID with its auth token, or one of its API keys with the key's secret.
fn authenticate(shared: &Shared, headers: &HeaderMap, account_sid: &str) -> Result<(), ApiError> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(unauthenticated)?;
    let (user, password) = credentials.split_once(':').ok_or_else(unauthenticated)?;
    let inner = shared.lock();
    let account = inner
        .accounts
        .get(account_sid)
        .ok_or_else(unauthenticated)?;
    let ok = if user.starts_with("SK") {
        account.api_keys.get(user).is_some_and(|s| s == password)
    } else {
        user == account_sid && account.auth_token == password
    };
    if ok {
        Ok(())
    } else {
        Err(unauthenticated())
    }
}

/// Form parameters in order, repeated names kept.
fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn all(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// `SMxxx.json` → `SMxxx`; Twilio answers a resource without `.json` as XML, which no adapter
/// wants, so that is a 404 here.
fn sid_of(file: &str) -> Option<&str> {
    file.strip_suffix(".json")
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authenticate(&shared, &headers, &account_sid) {
        return refused.into_response();
    }
    let params = form(&body);
    let message = {
        let mut inner = shared.lock();
        let Some(account) = inner.accounts.get(&account_sid) else {
            return unauthenticated().into_response();
        };
        let message = match validate_message(&account_sid, account, &params) {
            Ok(message) => message,
            Err(refused) => return refused.into_response(),
        };
        inner.messages.push(message.clone());
        message
    };
    if let Some(interval) = shared.config.auto_progress {
        let shared = shared.clone();
        let sid = message.sid.clone();
        tokio::spawn(async move {
            for status in ["sent", "delivered"] {
                tokio::time::sleep(interval).await;
                // The sandbox has no one to tell about a receiver that is down.
                let _ = advance_message(&shared, &sid, status, None).await;
            }
        });
    }
    let resource = message_json(&shared, &message);
    (StatusCode::CREATED, Json(resource)).into_response()
}

fn validate_message(
    account_sid: &str,
    account: &Account,
    params: &[(String, String)],
) -> Result<FakeMessage, ApiError> {
    let to = param(params, "To")
        .ok_or_else(|| bad_request(21604, "A 'To' phone number is required.".to_owned()))?;
    if !is_e164(to) {
        return Err(bad_request(
            21211,
            format!("Invalid 'To' Phone Number: {to}"),
        ));
    }
    let service = param(params, "MessagingServiceSid");
    let from = match (param(params, "From"), service) {
        (Some(from), _) => {
            if !account.numbers.contains(from) {
                return Err(bad_request(
                    21606,
                    format!(
                        "The From phone number {from} is not a valid, SMS-capable inbound phone \
                         number or short code for your account."
                    ),
                ));
            }
            from.to_owned()
        }
        (None, Some(service)) => account
            .services
            .get(service)
            .and_then(|pool| pool.first().cloned())
            .ok_or_else(|| {
                bad_request(
                    21702,
                    format!("The Messaging Service Sid {service} is invalid."),
                )
            })?,
        (None, None) => {
            return Err(bad_request(
                21603,
                "A 'From' phone number is required.".to_owned(),
            ))
        }
    };
    let body = param(params, "Body").unwrap_or_default();
    let media_urls = all(params, "MediaUrl");
    if body.is_empty() && media_urls.is_empty() {
        return Err(bad_request(21602, "Message body is required.".to_owned()));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.".to_owned(),
        ));
    }
    let validity_period = match param(params, "ValidityPeriod") {
        None => None,
        Some(raw) => match raw.parse::<u32>() {
            Ok(secs) if (1..=36_000).contains(&secs) => Some(secs),
            _ => return Err(bad_request(21623, format!("Invalid ValidityPeriod: {raw}"))),
        },
    };
    let now = Utc::now();
    let prefix = if media_urls.is_empty() { "SM" } else { "MM" };
    Ok(FakeMessage {
        sid: new_sid(prefix),
        account_sid: account_sid.to_owned(),
        messaging_service_sid: service.map(str::to_owned),
        from,
        to: to.to_owned(),
        body: body.to_owned(),
        num_segments: if body.is_empty() { 1 } else { segments(body) },
        media_urls,
        // Twilio starts a message of a messaging service at `accepted`, a plain one at `queued`.
        status: if service.is_some() {
            "accepted"
        } else {
            "queued"
        }
        .to_owned(),
        direction: "outbound-api".to_owned(),
        price: None,
        error_code: None,
        status_callback: param(params, "StatusCallback").map(str::to_owned),
        validity_period,
        date_created: now,
        date_sent: None,
        date_updated: now,
    })
}

fn message_json(shared: &Shared, m: &FakeMessage) -> Value {
    let uri = format!(
        "/{API_VERSION}/Accounts/{}/Messages/{}.json",
        m.account_sid, m.sid
    );
    json!({
        "sid": m.sid,
        "account_sid": m.account_sid,
        "messaging_service_sid": m.messaging_service_sid,
        "from": m.from,
        "to": m.to,
        "body": m.body,
        "status": m.status,
        "direction": m.direction,
        "num_segments": m.num_segments.to_string(),
        "num_media": m.media_urls.len().to_string(),
        "price": m.price,
        "price_unit": shared.config.price_unit,
        "error_code": m.error_code,
        "error_message": m.error_code.and_then(error_message),
        "date_created": rfc2822(m.date_created),
        "date_sent": m.date_sent.map(rfc2822),
        "date_updated": rfc2822(m.date_updated),
        "api_version": API_VERSION,
        "uri": uri,
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{}/Messages/{}/Media.json", m.account_sid, m.sid),
            "feedback": format!("/{API_VERSION}/Accounts/{}/Messages/{}/Feedback.json", m.account_sid, m.sid),
        },
    })
}

async fn fetch_message(
    State(shared): State<Arc<Shared>>,
    Path((account_sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authenticate(&shared, &headers, &account_sid) {
        return refused.into_response();
    }
    let found = sid_of(&file).and_then(|sid| {
        shared
            .lock()
            .messages
            .iter()
            .find(|m| m.sid == sid && m.account_sid == account_sid)
            .cloned()
    });
    match found {
        Some(message) => Json(message_json(&shared, &message)).into_response(),
        None => twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /{API_VERSION}/Accounts/{account_sid}/Messages/{file} was not found"
            ),
        ),
    }
}

async fn create_call(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authenticate(&shared, &headers, &account_sid) {
        return refused.into_response();
    }
    let params = form(&body);
    let call = {
        let mut inner = shared.lock();
        let Some(account) = inner.accounts.get(&account_sid) else {
            return unauthenticated().into_response();
        };
        let call = match validate_call(&account_sid, account, &params) {
            Ok(call) => call,
            Err(refused) => return refused.into_response(),
        };
        inner.calls.push(call.clone());
        call
    };
    (StatusCode::CREATED, Json(call_json(&shared, &call))).into_response()
}

fn validate_call(
    account_sid: &str,
    account: &Account,
    params: &[(String, String)],
) -> Result<FakeCall, ApiError> {
    let to = param(params, "To")
        .ok_or_else(|| bad_request(21201, "No 'To' number is specified".to_owned()))?;
    if !is_e164(to) {
        return Err(bad_request(
            21211,
            format!("Invalid 'To' Phone Number: {to}"),
        ));
    }
    let from = param(params, "From")
        .ok_or_else(|| bad_request(21213, "No 'From' number is specified".to_owned()))?;
    if !account.numbers.contains(from) {
        return Err(bad_request(
            21210,
            format!(
                "The source phone number provided, {from}, is not yet verified for your account. \
                 You may only make calls from phone numbers that you've verified or purchased \
                 from Twilio."
            ),
        ));
    }
    let twiml = param(params, "Twiml").map(str::to_owned);
    let url = param(params, "Url").map(str::to_owned);
    if twiml.is_none() && url.is_none() && param(params, "ApplicationSid").is_none() {
        return Err(bad_request(
            21205,
            "Url parameter is required. Please provide a Url, Twiml or ApplicationSid.".to_owned(),
        ));
    }
    if let Some(url) = &url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad_request(21205, format!("Url is not a valid URL: {url}")));
        }
    }
    let status_callback = param(params, "StatusCallback").map(str::to_owned);
    let mut events = all(params, "StatusCallbackEvent");
    for event in &events {
        if !["initiated", "ringing", "answered", "completed"].contains(&event.as_str()) {
            return Err(bad_request(
                21626,
                format!("Invalid StatusCallbackEvent: {event}"),
            ));
        }
    }
    if events.is_empty() && status_callback.is_some() {
        events.push("completed".to_owned());
    }
    let timeout_secs = match param(params, "Timeout") {
        None => None,
        Some(raw) => match raw.parse::<u32>() {
            Ok(secs) => Some(secs.clamp(5, 600)),
            Err(_) => return Err(bad_request(21207, format!("Invalid Timeout: {raw}"))),
        },
    };
    Ok(FakeCall {
        sid: new_sid("CA"),
        account_sid: account_sid.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        twiml,
        url,
        status: "queued".to_owned(),
        status_callback,
        status_callback_events: events,
        timeout_secs,
        record: param(params, "Record") == Some("true"),
        duration_secs: None,
        price: None,
        date_created: Utc::now(),
        start_time: None,
        end_time: None,
        callbacks_sent: 0,
    })
}

fn call_json(shared: &Shared, c: &FakeCall) -> Value {
    json!({
        "sid": c.sid,
        "account_sid": c.account_sid,
        "parent_call_sid": null,
        "from": c.from,
        "from_formatted": c.from,
        "to": c.to,
        "to_formatted": c.to,
        "status": c.status,
        "direction": "outbound-api",
        "answered_by": null,
        "duration": c.duration_secs.map(|d| d.to_string()),
        "price": c.price,
        "price_unit": shared.config.price_unit,
        "queue_time": "0",
        "start_time": c.start_time.map(rfc2822),
        "end_time": c.end_time.map(rfc2822),
        "date_created": rfc2822(c.date_created),
        "date_updated": rfc2822(c.end_time.unwrap_or(c.date_created)),
        "api_version": API_VERSION,
        "uri": format!("/{API_VERSION}/Accounts/{}/Calls/{}.json", c.account_sid, c.sid),
    })
}

async fn fetch_call(
    State(shared): State<Arc<Shared>>,
    Path((account_sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authenticate(&shared, &headers, &account_sid) {
        return refused.into_response();
    }
    let found = sid_of(&file).and_then(|sid| {
        shared
            .lock()
            .calls
            .iter()
            .find(|c| c.sid == sid && c.account_sid == account_sid)
            .cloned()
    });
    match found {
        Some(call) => Json(call_json(&shared, &call)).into_response(),
        None => twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /{API_VERSION}/Accounts/{account_sid}/Calls/{file} was not found"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_gsm7_and_ucs2() {
        assert_eq!(segments("hello"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Extension characters take two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"é".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
        assert_eq!(segments(&"ж".repeat(134)), 2);
        assert_eq!(segments(&"ж".repeat(135)), 3);
        // An emoji is two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn prices_print_like_twilio() {
        assert_eq!(price_string(790), "-0.00790");
        assert_eq!(price_string(2 * 790), "-0.01580");
        assert_eq!(price_string(123_456), "-1.23456");
        assert_eq!(price_string(0), "0.00000");
    }

    #[test]
    fn e164_is_strict() {
        assert!(is_e164("+14155550100"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+1 415 555 0100"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1234"));
    }
}
