//! Fake GoHighLevel (LeadConnector API v2, PROVIDERS.md §1): the marketplace OAuth flow, the
//! contacts, notes and opportunities endpoints, rate limiting, and signed webhooks.
//!
//! One loopback server stands for both `services.leadconnectorhq.com` (API and `/oauth/*`)
//! and `marketplace.gohighlevel.com` (`/v2/oauth/chooselocation`), since their paths do not
//! overlap. Recording and failure injection come from [`crate::harness`].
//!
//! Fidelity choices worth knowing:
//! - every API call needs `Version` (a missing one is 400 "version header was not found", checked
//!   before the token) and `Authorization: Bearer`; an unknown, revoked or expired token is the
//!   documented 401 body; a token without the route's scope is 401 "The token is not authorized
//!   for this scope."; a location token touching another location's data is 403 "The token does
//!   not have access to this location." (the wording n8n users report);
//! - validation failures are 422 with `message` as an array of class-validator sentences
//!   ("email must be an email", "property foo should not exist"), as GHL's NestJS stack sends;
//! - an unknown contact id is 400 "Contact not found" (third-party reports; GHL does not
//!   document it), `POST /contacts/` refuses a duplicate email/phone with 400 "This location
//!   does not allow duplicated contacts." unless the config allows duplicates, and
//!   `POST /contacts/upsert` matches on email first, then phone (GHL's rule is UNCONFIRMED);
//! - tags are trimmed and lower-cased on write, like GHL; custom fields given by `key` only are
//!   stored under the key as their id, since the fake has no custom-field registry;
//! - the tag endpoints (`POST/DELETE /contacts/{id}/tags`) are not served: PROVIDERS.md does not
//!   document them, so adapters write tags through `PUT /contacts/{id}`. Unknown routes answer
//!   NestJS's 404 "Cannot METHOD /path";
//! - opportunities are ordered by `createdAt`, then id, ascending; `startAfter` (ms) +
//!   `startAfterId` continue after a given item, `page` pages by offset, and `meta.nextPage` is
//!   null on the last page;
//! - tokens are opaque random strings (GHL's are JWTs nobody should parse); refresh rotates the
//!   refresh token and a used one is 400 `invalid_grant`; a bad client secret is 401
//!   `invalid_client` (RFC 6749 shapes: GHL does not document its token-endpoint errors);
//! - the burst limit (100 per 10 s per location or company by default) answers 429 "Too Many
//!   Requests" without `Retry-After` (whether GHL sends one is UNCONFIRMED); `X-RateLimit-*`
//!   headers are on every authenticated answer;
//! - webhooks are flat JSON with `timestamp` and `webhookId`, signed `x-ghl-signature` (Ed25519
//!   over the exact body, base64) with the RFC 8032 TEST 1 key unless configured otherwise, and
//!   `x-wh-signature` (RSASSA-PKCS1-v1_5 SHA-256, base64) when a legacy RSA key is configured.

// Handlers answer with a ready `Response` on every failure path, so `Result<_, Response>` is
// the natural shape; boxing it would buy nothing in a test fake.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use rand::distr::Alphanumeric;
use rand::{Rng as _, RngCore as _};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use crate::harness::{self, Failure, Harness, Recorded, Running};

/// The API version GHL documents for contacts, opportunities and OAuth.
pub const API_VERSION: &str = "2021-07-28";
/// RFC 8032 §7.1 TEST 1 secret key: the stand-in "GHL" webhook signing key (PROVIDERS.md §1.1).
pub const RFC8032_TEST1_SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];
/// The new webhook signature header.
pub const SIGNATURE_HEADER: &str = "x-ghl-signature";
/// The legacy RSA webhook signature header.
pub const LEGACY_SIGNATURE_HEADER: &str = "x-wh-signature";

/// Every scope a test-minted location token carries.
pub const ALL_SCOPES: &[&str] = &[
    "contacts.readonly",
    "contacts.write",
    "opportunities.readonly",
    "opportunities.write",
    "locations.readonly",
    "oauth.readonly",
    "oauth.write",
];

const CHOOSE_LOCATION_PATH: &str = "/v2/oauth/chooselocation";
const TOKEN_PATH: &str = "/oauth/token";
const LOCATION_TOKEN_PATH: &str = "/oauth/locationToken";

/// Form parameters never recorded.
const SECRET_PARAMS: &[&str] = &["client_secret", "code", "refresh_token", "access_token"];

/// ASN.1 DigestInfo prefix of SHA-256 (RFC 8017 §9.2 note 1): written out so the fake needs no
/// `oid` feature of `sha2` to sign PKCS#1 v1.5.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Contact fields `POST /contacts/` and `/contacts/upsert` accept (PROVIDERS.md §1.2).
const CREATE_FIELDS: &[&str] = &[
    "locationId",
    "firstName",
    "lastName",
    "name",
    "email",
    "phone",
    "gender",
    "address1",
    "city",
    "state",
    "postalCode",
    "website",
    "timezone",
    "dnd",
    "dndSettings",
    "inboundDndSettings",
    "tags",
    "customFields",
    "source",
    "dateOfBirth",
    "country",
    "companyName",
    "assignedTo",
];

/// How the fake behaves; `Default` mirrors GHL's documented limits and lifetimes.
#[derive(Clone)]
pub struct FakeGhlConfig {
    /// Requests per `burst_interval` per location or company (GHL: 100 per 10 s).
    pub burst_limit: u32,
    pub burst_interval: Duration,
    /// Requests per day per location or company (GHL: 200,000).
    pub daily_limit: u32,
    /// `expires_in` of access tokens (GHL's example: 86399).
    pub access_token_ttl: Duration,
    /// How long an authorization code can be exchanged.
    pub code_ttl: Duration,
    /// The location setting "Allow Duplicate Contact"; GHL's default is off.
    pub allow_duplicate_contacts: bool,
    /// Ed25519 secret key that signs `x-ghl-signature`.
    pub webhook_signing_key: [u8; 32],
    /// RSA key that signs the legacy `x-wh-signature`; `None` sends only the new header.
    pub legacy_rsa_key: Option<rsa::RsaPrivateKey>,
    /// The marketplace app id (the first segment of client ids) put in webhook payloads.
    pub app_id: String,
}

impl Default for FakeGhlConfig {
    fn default() -> Self {
        FakeGhlConfig {
            burst_limit: 100,
            burst_interval: Duration::from_secs(10),
            daily_limit: 200_000,
            access_token_ttl: Duration::from_secs(86_399),
            code_ttl: Duration::from_secs(600),
            allow_duplicate_contacts: false,
            webhook_signing_key: RFC8032_TEST1_SECRET,
            legacy_rsa_key: None,
            app_id: "65f0c0ffee0000000000fa4e".to_owned(),
        }
    }
}

/// An opportunity to seed into a location with [`FakeGhl::add_opportunity`].
#[derive(Clone, Debug, Default)]
pub struct NewOpportunity {
    pub name: String,
    pub pipeline_id: String,
    pub pipeline_stage_id: String,
    /// `open`, `won`, `lost` or `abandoned`; empty means `open`.
    pub status: String,
    pub contact_id: String,
    pub assigned_to: String,
    pub source: String,
    /// Exact decimal text, e.g. "1250.50"; sent as a JSON number like GHL does.
    pub monetary_value: Option<String>,
    /// `createdAt`; `None` means now.
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UserType {
    Location,
    Company,
}

impl UserType {
    fn as_str(self) -> &'static str {
        match self {
            UserType::Location => "Location",
            UserType::Company => "Company",
        }
    }
}

struct Client {
    secret: String,
    redirect_uris: Vec<String>,
}

struct Location {
    id: String,
    company_id: String,
    name: String,
}

/// What a grant (code, access or refresh token) stands for.
#[derive(Clone)]
struct Grant {
    client_id: String,
    user_type: UserType,
    company_id: String,
    location_id: Option<String>,
    scopes: Vec<String>,
    user_id: String,
}

struct Code {
    grant: Grant,
    redirect_uri: String,
    issued_at: Instant,
}

struct AccessToken {
    grant: Grant,
    expires_at: Instant,
}

struct Window {
    started: Instant,
    count: u32,
    day_started: Instant,
    day_count: u32,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Client>,
    locations: Vec<Location>,
    approve_next: Option<String>,
    codes: HashMap<String, Code>,
    access_tokens: HashMap<String, AccessToken>,
    refresh_tokens: HashMap<String, Grant>,
    contacts: HashMap<String, Map<String, Value>>,
    /// Creation order, so lookups that GHL answers with "the first match" are stable.
    contact_order: Vec<String>,
    notes: HashMap<String, Vec<Value>>,
    opportunities: Vec<Map<String, Value>>,
    windows: HashMap<String, Window>,
}

struct Shared {
    config: FakeGhlConfig,
    base_url: String,
    signing_key: SigningKey,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake GoHighLevel; the server stops when this is dropped.
pub struct FakeGhl {
    shared: Arc<Shared>,
    harness: Harness,
    http: reqwest::Client,
    running: Running,
}

impl FakeGhl {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test that needs this fake could run.
    pub async fn start(config: FakeGhlConfig) -> FakeGhl {
        match Self::try_start(config).await {
            Ok(fake) => fake,
            Err(err) => panic!("fake ghl failed to start: {err}"),
        }
    }

    /// Starts on `127.0.0.1:0`, reporting failure instead of panicking.
    pub async fn try_start(config: FakeGhlConfig) -> io::Result<FakeGhl> {
        Self::try_start_on(harness::loopback().await?, config).await
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub async fn try_start_on(listener: TcpListener, config: FakeGhlConfig) -> io::Result<FakeGhl> {
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            signing_key: SigningKey::from_bytes(&config.webhook_signing_key),
            config,
            base_url,
            inner: Mutex::new(Inner::default()),
        });
        let harness = Harness::new(SECRET_PARAMS);
        let running = harness.serve(listener, router(shared.clone()), Arc::new(injected_error))?;
        Ok(FakeGhl {
            shared,
            harness,
            http: reqwest::Client::new(),
            running,
        })
    }

    /// The API base URL (stands for `https://services.leadconnectorhq.com`).
    pub fn base_url(&self) -> &str {
        &self.running.base_url
    }

    /// The authorization URL (stands for `https://marketplace.gohighlevel.com/v2/oauth/chooselocation`).
    pub fn authorize_url(&self) -> String {
        format!("{}{CHOOSE_LOCATION_PATH}", self.running.base_url)
    }

    /// Registers a marketplace app, or replaces the one with the same id.
    pub fn add_client(&self, client_id: &str, client_secret: &str, redirect_uris: &[&str]) {
        self.shared.lock().clients.insert(
            client_id.to_owned(),
            Client {
                secret: client_secret.to_owned(),
                redirect_uris: redirect_uris.iter().map(|u| (*u).to_owned()).collect(),
            },
        );
    }

    /// Registers a location (sub-account) of a company (agency). The first one added is the
    /// one an authorization approves when [`Self::approve_next_as`] picked none.
    pub fn add_location(&self, location_id: &str, company_id: &str, name: &str) {
        let mut inner = self.shared.lock();
        inner.locations.retain(|l| l.id != location_id);
        inner.locations.push(Location {
            id: location_id.to_owned(),
            company_id: company_id.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Registered locations as `(location_id, company_id, name)`, in registration order.
    pub fn locations(&self) -> Vec<(String, String, String)> {
        self.shared
            .lock()
            .locations
            .iter()
            .map(|l| (l.id.clone(), l.company_id.clone(), l.name.clone()))
            .collect()
    }

    /// Makes the next authorization approve this location.
    pub fn approve_next_as(&self, location_id: &str) {
        self.shared.lock().approve_next = Some(location_id.to_owned());
    }

    /// Mints a valid location access token with every scope, so tests need not run OAuth.
    /// An unregistered location is registered under company `company_<location>`.
    pub fn issue_location_token(&self, location_id: &str) -> String {
        self.issue_location_token_with_scopes(location_id, ALL_SCOPES)
    }

    /// Mints a location access token with exactly `scopes`.
    pub fn issue_location_token_with_scopes(&self, location_id: &str, scopes: &[&str]) -> String {
        let mut inner = self.shared.lock();
        let company_id = match inner.locations.iter().find(|l| l.id == location_id) {
            Some(l) => l.company_id.clone(),
            None => {
                let company_id = format!("company_{location_id}");
                inner.locations.push(Location {
                    id: location_id.to_owned(),
                    company_id: company_id.clone(),
                    name: location_id.to_owned(),
                });
                company_id
            }
        };
        let grant = Grant {
            client_id: String::new(),
            user_type: UserType::Location,
            company_id,
            location_id: Some(location_id.to_owned()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            user_id: "fakeuser000000000001".to_owned(),
        };
        let token = random_token("at");
        inner.access_tokens.insert(
            token.clone(),
            AccessToken {
                grant,
                expires_at: Instant::now() + self.shared.config.access_token_ttl,
            },
        );
        token
    }

    /// Every access token issued so far (OAuth or minted) that has not been revoked.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.shared.lock().access_tokens.keys().cloned().collect()
    }

    /// Makes every issued access token expire now, to drive refresh-on-401 paths.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// Revokes every token of a location (the app was uninstalled there): its access tokens
    /// answer 401 and its refresh tokens `invalid_grant`.
    pub fn revoke_grant(&self, location_id: &str) {
        let mut inner = self.shared.lock();
        let of_location = |g: &Grant| g.location_id.as_deref() == Some(location_id);
        inner.access_tokens.retain(|_, t| !of_location(&t.grant));
        inner.refresh_tokens.retain(|_, g| !of_location(g));
    }

    /// Seeds an opportunity into a location; returns its id.
    pub fn add_opportunity(&self, location_id: &str, opportunity: NewOpportunity) -> String {
        let NewOpportunity {
            name,
            pipeline_id,
            pipeline_stage_id,
            status,
            contact_id,
            assigned_to,
            source,
            monetary_value,
            created_at,
        } = opportunity;
        let id = random_id();
        let created = iso(created_at.unwrap_or_else(Utc::now));
        let mut inner = self.shared.lock();
        let contact = inner.contacts.get(&contact_id).map(|c| {
            json!({
                "id": contact_id,
                "name": c.get("name").cloned().unwrap_or(Value::Null),
                "companyName": c.get("companyName").cloned().unwrap_or(Value::Null),
                "email": c.get("email").cloned().unwrap_or(Value::Null),
                "phone": c.get("phone").cloned().unwrap_or(Value::Null),
                "tags": c.get("tags").cloned().unwrap_or_else(|| json!([])),
            })
        });
        let monetary_value = monetary_value
            .and_then(|text| serde_json::from_str::<serde_json::Number>(&text).ok())
            .map_or(Value::Null, Value::Number);
        let status = if status.is_empty() {
            "open".to_owned()
        } else {
            status
        };
        let value = json!({
            "id": id,
            "name": name,
            "monetaryValue": monetary_value,
            "pipelineId": pipeline_id,
            "pipelineStageId": pipeline_stage_id,
            "assignedTo": assigned_to,
            "status": status,
            "source": source,
            "lastStatusChangeAt": created,
            "lastStageChangeAt": created,
            "createdAt": created,
            "updatedAt": created,
            "contactId": contact_id,
            "locationId": location_id,
            "contact": contact.unwrap_or(Value::Null),
            "notes": [],
            "tasks": [],
            "calendarEvents": [],
            "customFields": [],
            "followers": [],
        });
        if let Value::Object(map) = value {
            inner.opportunities.push(map);
        }
        id
    }

    /// A contact as `GET /contacts/{id}` would answer it (without the `contact` wrapper).
    pub fn contact(&self, contact_id: &str) -> Option<Value> {
        self.shared
            .lock()
            .contacts
            .get(contact_id)
            .map(|c| Value::Object(c.clone()))
    }

    /// Every contact of a location, oldest first.
    pub fn contacts_of(&self, location_id: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .contact_order
            .iter()
            .filter_map(|id| inner.contacts.get(id))
            .filter(|c| c.get("locationId").and_then(Value::as_str) == Some(location_id))
            .map(|c| Value::Object(c.clone()))
            .collect()
    }

    /// The notes of a contact, oldest first.
    pub fn notes(&self, contact_id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .notes
            .get(contact_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    /// Requests whose method and path match, e.g. `("PUT", "/contacts/abc")`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.harness.requests_to(method, path)
    }

    pub fn clear_requests(&self) {
        self.harness.clear_requests();
    }

    /// The next `n` requests, on any path, fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    /// The next `n` requests whose path starts with `path_prefix` fail with `failure`.
    pub fn fail_next_at(&self, path_prefix: &str, n: usize, failure: Failure) {
        self.harness.fail_next_at(path_prefix, n, failure);
    }

    /// From now on each request fails with probability `share` (0.0 turns this off).
    pub fn fail_share(&self, share: f64, failure: Failure) {
        self.harness.fail_share(share, failure);
    }

    pub fn clear_failures(&self) {
        self.harness.clear_failures();
    }

    /// The headers GHL sends with a webhook body: the Ed25519 signature, and the legacy RSA
    /// one when a legacy key is configured.
    pub fn webhook_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            (
                SIGNATURE_HEADER,
                sign_ed25519(&self.shared.signing_key, body),
            ),
        ];
        if let Some(key) = &self.shared.config.legacy_rsa_key {
            if let Some(signature) = sign_rsa_sha256(key, body) {
                headers.push((LEGACY_SIGNATURE_HEADER, signature));
            }
        }
        headers
    }

    /// Posts exactly `body`, signed, to `url`; returns the receiver's status and body.
    pub async fn send_raw(&self, url: &str, body: Vec<u8>) -> Result<(u16, Bytes), reqwest::Error> {
        let headers = self.webhook_headers(&body);
        harness::deliver(&self.http, url, &headers, Bytes::from(body)).await
    }

    /// Posts a flat event: `fields` (an object) at the top level, then `type`, `locationId`,
    /// `timestamp` (now) and a fresh `webhookId`. Returns the body it sent with the answer.
    pub async fn send_event(
        &self,
        url: &str,
        event_type: &str,
        location_id: &str,
        fields: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        let body = self.event_body(event_type, location_id, fields);
        let (status, answer) = self.send_raw(url, body.clone()).await?;
        Ok((body, status, answer))
    }

    /// The body [`Self::send_event`] would send.
    pub fn event_body(&self, event_type: &str, location_id: &str, fields: &Value) -> Vec<u8> {
        let mut map = match fields {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        map.insert("type".to_owned(), json!(event_type));
        map.insert("locationId".to_owned(), json!(location_id));
        map.insert("timestamp".to_owned(), json!(iso(Utc::now())));
        map.insert(
            "webhookId".to_owned(),
            json!(uuid::Uuid::new_v4().to_string()),
        );
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }

    /// `ContactCreate` with the contact's fields flat (as from [`Self::contact`]).
    pub async fn send_contact_created(
        &self,
        url: &str,
        location_id: &str,
        contact: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        self.send_event(url, "ContactCreate", location_id, &webhook_contact(contact))
            .await
    }

    /// `ContactUpdate` with the contact's fields flat.
    pub async fn send_contact_updated(
        &self,
        url: &str,
        location_id: &str,
        contact: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        self.send_event(url, "ContactUpdate", location_id, &webhook_contact(contact))
            .await
    }

    /// `ContactDelete` with the contact's fields flat.
    pub async fn send_contact_deleted(
        &self,
        url: &str,
        location_id: &str,
        contact: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        self.send_event(url, "ContactDelete", location_id, &webhook_contact(contact))
            .await
    }

    /// `AppointmentCreate`: the appointment nested under `appointment`.
    pub async fn send_appointment_created(
        &self,
        url: &str,
        location_id: &str,
        appointment: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        let fields = json!({ "appointment": appointment });
        self.send_event(url, "AppointmentCreate", location_id, &fields)
            .await
    }

    /// `AppointmentUpdate`: the appointment nested under `appointment`.
    pub async fn send_appointment_updated(
        &self,
        url: &str,
        location_id: &str,
        appointment: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        let fields = json!({ "appointment": appointment });
        self.send_event(url, "AppointmentUpdate", location_id, &fields)
            .await
    }

    /// `OpportunityCreate` with the opportunity's fields flat.
    pub async fn send_opportunity_created(
        &self,
        url: &str,
        location_id: &str,
        opportunity: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        self.send_event(url, "OpportunityCreate", location_id, opportunity)
            .await
    }

    /// `InboundMessage` (`direction` inbound) with the message's fields flat.
    pub async fn send_inbound_message(
        &self,
        url: &str,
        location_id: &str,
        message: &Value,
    ) -> Result<(Vec<u8>, u16, Bytes), reqwest::Error> {
        let mut fields = match message {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        fields.insert("direction".to_owned(), json!("inbound"));
        self.send_event(url, "InboundMessage", location_id, &Value::Object(fields))
            .await
    }
}

/// `x-ghl-signature` of `body`: base64 of the Ed25519 signature over the exact bytes.
pub fn sign_ed25519(key: &SigningKey, body: &[u8]) -> String {
    STANDARD.encode(key.sign(body).to_bytes())
}

/// `x-wh-signature` of `body`: base64 of RSASSA-PKCS1-v1_5 with SHA-256 over the exact bytes.
/// `None` only when the key is too small for a SHA-256 DigestInfo.
pub fn sign_rsa_sha256(key: &rsa::RsaPrivateKey, body: &[u8]) -> Option<String> {
    let padding = rsa::Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: SHA256_DIGEST_INFO.to_vec().into_boxed_slice(),
    };
    let digest = Sha256::digest(body);
    key.sign(padding, &digest).ok().map(|s| STANDARD.encode(s))
}

/// Contact JSON as a webhook carries it: GHL's webhook custom fields are `{id, value}` like
/// the API's, and the location is set by the event itself.
fn webhook_contact(contact: &Value) -> Value {
    let mut map = match contact {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    map.remove("locationId");
    Value::Object(map)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(CHOOSE_LOCATION_PATH, get(choose_location))
        .route(TOKEN_PATH, post(token))
        .route(LOCATION_TOKEN_PATH, post(location_token))
        // Express routing is not strict about the trailing slash, so GHL takes both.
        .route("/contacts/", post(create_contact))
        .route("/contacts", post(create_contact))
        .route("/contacts/upsert", post(upsert_contact))
        .route("/contacts/{id}", get(get_contact).put(update_contact))
        .route("/contacts/{id}/notes", post(add_note))
        .route("/opportunities/search", get(search_opportunities))
        .fallback(not_found)
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Error shapes

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// GHL's NestJS error body: `{"statusCode","message","error"}` (400 omits `error`, as the
/// spec's example does).
fn ghl_error(status: StatusCode, message: impl Into<Value>) -> Response {
    let mut body = json!({ "statusCode": status.as_u16(), "message": message.into() });
    if status != StatusCode::BAD_REQUEST {
        body["error"] = json!(reason(status));
    }
    (status, Json(body)).into_response()
}

fn unprocessable(messages: Vec<String>) -> Response {
    ghl_error(StatusCode::UNPROCESSABLE_ENTITY, messages)
}

fn injected_error(status: StatusCode) -> Response {
    match status {
        StatusCode::UNPROCESSABLE_ENTITY => unprocessable(vec![reason(status).to_owned()]),
        StatusCode::UNAUTHORIZED => invalid_token(),
        StatusCode::INTERNAL_SERVER_ERROR => ghl_error(status, "Internal server error"),
        other => ghl_error(other, reason(other)),
    }
}

fn invalid_token() -> Response {
    ghl_error(
        StatusCode::UNAUTHORIZED,
        "Invalid token: access token is invalid",
    )
}

fn no_location_access() -> Response {
    ghl_error(
        StatusCode::FORBIDDEN,
        "The token does not have access to this location.",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ghl_error(
        StatusCode::NOT_FOUND,
        format!("Cannot {method} {}", uri.path()),
    )
}

// ---------------------------------------------------------------------------------------------
// OAuth

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn choose_location(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let q = query_map(query.as_deref());
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if param("response_type") != "code" {
        return ghl_error(StatusCode::BAD_REQUEST, "response_type must be code");
    }
    let client_id = param("client_id");
    let redirect_uri = param("redirect_uri");
    let mut inner = shared.lock();
    let Some(client) = inner.clients.get(client_id) else {
        return ghl_error(StatusCode::BAD_REQUEST, "Invalid client_id");
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return ghl_error(StatusCode::BAD_REQUEST, "Invalid redirect_uri");
    }
    let chosen = inner.approve_next.take();
    let location = match &chosen {
        Some(id) => inner.locations.iter().find(|l| &l.id == id),
        None => inner.locations.first(),
    };
    let Some(location) = location else {
        return ghl_error(StatusCode::BAD_REQUEST, "No location to approve");
    };
    let grant = Grant {
        client_id: client_id.to_owned(),
        user_type: UserType::Location,
        company_id: location.company_id.clone(),
        location_id: Some(location.id.clone()),
        scopes: param("scope")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        user_id: "fakeuser000000000001".to_owned(),
    };
    let code = random_token("code");
    inner.codes.insert(
        code.clone(),
        Code {
            grant,
            redirect_uri: redirect_uri.to_owned(),
            issued_at: Instant::now(),
        },
    );
    drop(inner);
    let mut target = form_urlencoded::Serializer::new(String::new());
    target.append_pair("code", &code);
    if let Some(state) = q.get("state") {
        target.append_pair("state", state);
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{}", target.finish());
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn form_of(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form = form_of(&body);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let client_id = field("client_id");
    let mut inner = shared.lock();
    let authenticated = inner
        .clients
        .get(client_id)
        .is_some_and(|c| !field("client_secret").is_empty() && c.secret == field("client_secret"));
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let grant = match field("grant_type") {
        "authorization_code" => {
            let Some(code) = inner.codes.remove(field("code")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid grant: authorization code is invalid",
                );
            };
            let fresh = code.issued_at.elapsed() < shared.config.code_ttl;
            let redirect_ok =
                field("redirect_uri").is_empty() || field("redirect_uri") == code.redirect_uri;
            if !fresh || code.grant.client_id != client_id || !redirect_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid grant: authorization code is invalid",
                );
            }
            let mut grant = code.grant;
            if field("user_type") == "Company" {
                grant.user_type = UserType::Company;
                grant.location_id = None;
            }
            grant
        }
        "refresh_token" => {
            let valid = inner
                .refresh_tokens
                .get(field("refresh_token"))
                .is_some_and(|g| g.client_id == client_id);
            // Rotation: the presented refresh token dies whatever happens next.
            let grant = inner.refresh_tokens.remove(field("refresh_token"));
            match grant {
                Some(grant) if valid => grant,
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid grant: refresh token is invalid",
                    )
                }
            }
        }
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant type",
            )
        }
    };
    let access_token = random_token("at");
    let refresh_token = random_token("rt");
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            grant: grant.clone(),
            expires_at: Instant::now() + shared.config.access_token_ttl,
        },
    );
    inner
        .refresh_tokens
        .insert(refresh_token.clone(), grant.clone());
    let approved: Vec<String> = match grant.user_type {
        UserType::Company => inner
            .locations
            .iter()
            .filter(|l| l.company_id == grant.company_id)
            .map(|l| l.id.clone())
            .collect(),
        UserType::Location => grant.location_id.iter().cloned().collect(),
    };
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": shared.config.access_token_ttl.as_secs(),
        "refresh_token": refresh_token,
        "scope": grant.scopes.join(" "),
        "userType": grant.user_type.as_str(),
        "companyId": grant.company_id,
        "approvedLocations": approved,
        "userId": grant.user_id,
        "planId": Value::Null,
        "isBulkInstallation": false,
        "installToFutureLocations": false,
        "approveAllLocations": false,
    });
    if let Some(location_id) = &grant.location_id {
        body["locationId"] = json!(location_id);
    }
    (StatusCode::OK, Json(body)).into_response()
}

async fn location_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = match authenticate(&shared, &headers, "oauth.write") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let form = form_of(&body);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if auth.grant.user_type != UserType::Company || field("companyId") != auth.grant.company_id {
        return ghl_error(
            StatusCode::UNAUTHORIZED,
            "The token is not authorized for this scope.",
        );
    }
    let mut inner = shared.lock();
    let belongs = inner
        .locations
        .iter()
        .any(|l| l.id == field("locationId") && l.company_id == auth.grant.company_id);
    if !belongs {
        return ghl_error(StatusCode::BAD_REQUEST, "Location not found");
    }
    let grant = Grant {
        client_id: auth.grant.client_id.clone(),
        user_type: UserType::Location,
        company_id: auth.grant.company_id.clone(),
        location_id: Some(field("locationId").to_owned()),
        scopes: auth.grant.scopes.clone(),
        user_id: auth.grant.user_id.clone(),
    };
    let access_token = random_token("at");
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            grant: grant.clone(),
            expires_at: Instant::now() + shared.config.access_token_ttl,
        },
    );
    let body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": shared.config.access_token_ttl.as_secs(),
        "scope": grant.scopes.join(" "),
        "locationId": grant.location_id,
        "planId": Value::Null,
        "userId": grant.user_id,
        "appId": shared.config.app_id,
        "versionId": shared.config.app_id,
    });
    with_rate_headers(auth.rate, (StatusCode::OK, Json(body)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Authentication and rate limits of API calls

struct Rate {
    max: u32,
    remaining: u32,
    interval_ms: u128,
    daily_max: u32,
    daily_remaining: u32,
}

struct Auth {
    grant: Grant,
    rate: Rate,
}

impl Auth {
    /// The location a location token acts for; company tokens act for none.
    fn location(&self) -> Option<&str> {
        self.grant.location_id.as_deref()
    }

    fn may_touch(&self, location_id: &str) -> bool {
        self.location() == Some(location_id)
    }
}

fn with_rate_headers(rate: Rate, mut response: Response) -> Response {
    let pairs = [
        ("x-ratelimit-max", rate.max.to_string()),
        ("x-ratelimit-remaining", rate.remaining.to_string()),
        (
            "x-ratelimit-interval-milliseconds",
            rate.interval_ms.to_string(),
        ),
        ("x-ratelimit-limit-daily", rate.daily_max.to_string()),
        (
            "x-ratelimit-daily-remaining",
            rate.daily_remaining.to_string(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// Version header, bearer token, scope and the burst limit, in GHL's order.
fn authenticate(shared: &Shared, headers: &HeaderMap, scope: &str) -> Result<Auth, Response> {
    let version = headers
        .get("version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if version.trim().is_empty() {
        return Err(ghl_error(
            StatusCode::BAD_REQUEST,
            "version header was not found",
        ));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut inner = shared.lock();
    let grant = match inner.access_tokens.get(bearer) {
        Some(token) if token.expires_at > Instant::now() => token.grant.clone(),
        _ => return Err(invalid_token()),
    };
    // A write scope implies its read scope, as GHL's scope list describes.
    let read_of_write = scope
        .strip_suffix(".readonly")
        .map(|area| format!("{area}.write"));
    let allowed = grant
        .scopes
        .iter()
        .any(|s| s == scope || Some(s) == read_of_write.as_ref());
    if !allowed {
        return Err(ghl_error(
            StatusCode::UNAUTHORIZED,
            "The token is not authorized for this scope.",
        ));
    }
    let resource = grant
        .location_id
        .clone()
        .unwrap_or_else(|| grant.company_id.clone());
    let now = Instant::now();
    let config = &shared.config;
    let window = inner.windows.entry(resource).or_insert(Window {
        started: now,
        count: 0,
        day_started: now,
        day_count: 0,
    });
    if now.duration_since(window.started) >= config.burst_interval {
        window.started = now;
        window.count = 0;
    }
    if now.duration_since(window.day_started) >= Duration::from_secs(86_400) {
        window.day_started = now;
        window.day_count = 0;
    }
    let over = window.count >= config.burst_limit || window.day_count >= config.daily_limit;
    if !over {
        window.count += 1;
        window.day_count += 1;
    }
    let rate = Rate {
        max: config.burst_limit,
        remaining: config.burst_limit.saturating_sub(window.count),
        interval_ms: config.burst_interval.as_millis(),
        daily_max: config.daily_limit,
        daily_remaining: config.daily_limit.saturating_sub(window.day_count),
    };
    if over {
        return Err(with_rate_headers(
            rate,
            ghl_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        ));
    }
    Ok(Auth { grant, rate })
}

fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ghl_error(StatusCode::BAD_REQUEST, "Bad Request")),
        Err(e) => Err(ghl_error(
            StatusCode::BAD_REQUEST,
            format!("Unexpected token in JSON: {e}"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Contacts

/// class-validator checks of a contact body; `allowed` lists the whitelisted properties.
fn validate_contact(body: &Map<String, Value>, allowed: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, value) in body {
        if !allowed.contains(&key.as_str()) {
            errors.push(format!("property {key} should not exist"));
            continue;
        }
        match key.as_str() {
            "dnd" => {
                if !value.is_boolean() {
                    errors.push("dnd must be a boolean value".to_owned());
                }
            }
            "tags" => {
                let ok = value
                    .as_array()
                    .is_some_and(|tags| tags.iter().all(Value::is_string));
                if !ok {
                    errors.push("tags must be an array of strings".to_owned());
                }
            }
            "customFields" => {
                let ok = value.as_array().is_some_and(|fields| {
                    fields.iter().all(|f| {
                        f.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty())
                            || f.get("key")
                                .and_then(Value::as_str)
                                .is_some_and(|s| !s.is_empty())
                    })
                });
                if !ok {
                    errors.push(
                        "customFields must be an array of {id or key, field_value}".to_owned(),
                    );
                }
            }
            "dndSettings" | "inboundDndSettings" => {
                if !value.is_object() {
                    errors.push(format!("{key} must be an object"));
                }
            }
            "email" => match value.as_str() {
                Some(email) if email.is_empty() || is_email(email) => {}
                Some(_) => errors.push("email must be an email".to_owned()),
                None if value.is_null() => {}
                None => errors.push("email must be a string".to_owned()),
            },
            _ => {
                if !value.is_string() && !value.is_null() {
                    errors.push(format!("{key} must be a string"));
                }
            }
        }
    }
    errors
}

fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|part| !part.is_empty())
        && !text.contains(char::is_whitespace)
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Writes `input` onto a stored contact the way GHL does: tags normalised and replaced,
/// custom fields merged by id, the name derived from first and last name unless given.
fn apply_contact_fields(contact: &mut Map<String, Value>, input: Map<String, Value>) {
    let name_given = input.contains_key("name");
    for (key, value) in input {
        match key.as_str() {
            "tags" => {
                let mut tags: Vec<String> = Vec::new();
                for tag in value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    let tag = tag.trim().to_lowercase();
                    if !tag.is_empty() && !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                contact.insert(key, json!(tags));
            }
            "customFields" => {
                let mut stored: Vec<Value> = contact
                    .get("customFields")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for field in value.as_array().into_iter().flatten() {
                    let id = field
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .or_else(|| field.get("key").and_then(Value::as_str))
                        .unwrap_or_default()
                        .to_owned();
                    let value = field
                        .get("field_value")
                        .or_else(|| field.get("value"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    stored.retain(|f| f.get("id").and_then(Value::as_str) != Some(id.as_str()));
                    stored.push(json!({ "id": id, "value": value }));
                }
                contact.insert(key, Value::Array(stored));
            }
            _ => {
                contact.insert(key, value);
            }
        }
    }
    if !name_given {
        let name = [
            str_field(contact, "firstName"),
            str_field(contact, "lastName"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        contact.insert(
            "name".to_owned(),
            if name.is_empty() {
                Value::Null
            } else {
                json!(name)
            },
        );
    }
    contact.insert("dateUpdated".to_owned(), json!(iso(Utc::now())));
}

fn new_contact(location_id: &str, input: Map<String, Value>) -> Map<String, Value> {
    let now = iso(Utc::now());
    let mut contact = Map::new();
    contact.insert("id".to_owned(), json!(random_id()));
    contact.insert("locationId".to_owned(), json!(location_id));
    contact.insert("dnd".to_owned(), json!(false));
    contact.insert("tags".to_owned(), json!([]));
    contact.insert("customFields".to_owned(), json!([]));
    contact.insert("dateAdded".to_owned(), json!(now));
    let mut input = input;
    input.remove("locationId");
    apply_contact_fields(&mut contact, input);
    contact
}

/// The first contact of the location with this email (case-insensitive), else this phone.
fn find_duplicate(
    inner: &Inner,
    location_id: &str,
    input: &Map<String, Value>,
) -> Option<(String, &'static str)> {
    let in_location = inner
        .contact_order
        .iter()
        .filter_map(|id| inner.contacts.get(id))
        .filter(|c| c.get("locationId").and_then(Value::as_str) == Some(location_id));
    let id_of = |c: &Map<String, Value>| str_field(c, "id").map(str::to_owned);
    if let Some(email) = str_field(input, "email") {
        let hit = in_location
            .clone()
            .find(|c| str_field(c, "email").is_some_and(|e| e.eq_ignore_ascii_case(email)));
        if let Some(id) = hit.and_then(id_of) {
            return Some((id, "email"));
        }
    }
    if let Some(phone) = str_field(input, "phone") {
        let hit = in_location
            .clone()
            .find(|c| str_field(c, "phone") == Some(phone));
        if let Some(id) = hit.and_then(id_of) {
            return Some((id, "phone"));
        }
    }
    None
}

/// Checks a create body's `locationId` against the token; returns the location.
fn create_location(auth: &Auth, body: &Map<String, Value>) -> Result<String, Response> {
    let Some(location_id) = str_field(body, "locationId") else {
        return Err(unprocessable(vec![
            "locationId should not be empty".to_owned()
        ]));
    };
    if !auth.may_touch(location_id) {
        return Err(no_location_access());
    }
    Ok(location_id.to_owned())
}

async fn create_contact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = match authenticate(&shared, &headers, "contacts.write") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let response = (|| {
        let input = parse_json_object(&body)?;
        let errors = validate_contact(&input, CREATE_FIELDS);
        if !errors.is_empty() {
            return Err(unprocessable(errors));
        }
        let location_id = create_location(&auth, &input)?;
        let mut inner = shared.lock();
        if !shared.config.allow_duplicate_contacts {
            if let Some((id, field)) = find_duplicate(&inner, &location_id, &input) {
                let name = inner
                    .contacts
                    .get(&id)
                    .and_then(|c| c.get("name").cloned())
                    .unwrap_or(Value::Null);
                let body = json!({
                    "statusCode": 400,
                    "message": "This location does not allow duplicated contacts.",
                    "meta": { "contactName": name, "contactId": id, "matchingField": field },
                });
                return Err((StatusCode::BAD_REQUEST, Json(body)).into_response());
            }
        }
        let contact = new_contact(&location_id, input);
        let id = str_field(&contact, "id").unwrap_or_default().to_owned();
        inner.contact_order.push(id.clone());
        inner.contacts.insert(id, contact.clone());
        Ok((StatusCode::CREATED, Json(json!({ "contact": contact }))).into_response())
    })();
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

async fn upsert_contact(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = match authenticate(&shared, &headers, "contacts.write") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let response = (|| {
        let input = parse_json_object(&body)?;
        let mut errors = validate_contact(&input, CREATE_FIELDS);
        if str_field(&input, "email").is_none() && str_field(&input, "phone").is_none() {
            errors.push("email or phone is required".to_owned());
        }
        if !errors.is_empty() {
            return Err(unprocessable(errors));
        }
        let location_id = create_location(&auth, &input)?;
        let mut inner = shared.lock();
        let trace_id = uuid::Uuid::new_v4().to_string();
        let (contact, created) = match find_duplicate(&inner, &location_id, &input) {
            Some((id, _)) => {
                let mut input = input;
                input.remove("locationId");
                let Some(stored) = inner.contacts.get_mut(&id) else {
                    return Err(ghl_error(StatusCode::BAD_REQUEST, "Contact not found"));
                };
                apply_contact_fields(stored, input);
                (stored.clone(), false)
            }
            None => {
                let contact = new_contact(&location_id, input);
                let id = str_field(&contact, "id").unwrap_or_default().to_owned();
                inner.contact_order.push(id.clone());
                inner.contacts.insert(id, contact.clone());
                (contact, true)
            }
        };
        let body = json!({ "new": created, "contact": contact, "traceId": trace_id });
        Ok((StatusCode::OK, Json(body)).into_response())
    })();
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

/// The stored contact, if it exists and the token may see its location.
fn owned_contact<'a>(
    inner: &'a mut Inner,
    auth: &Auth,
    id: &str,
) -> Result<&'a mut Map<String, Value>, Response> {
    let Some(contact) = inner.contacts.get_mut(id) else {
        return Err(ghl_error(StatusCode::BAD_REQUEST, "Contact not found"));
    };
    let location = contact
        .get("locationId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !auth.may_touch(location) {
        return Err(no_location_access());
    }
    Ok(contact)
}

async fn get_contact(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let auth = match authenticate(&shared, &headers, "contacts.readonly") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let mut inner = shared.lock();
    let response = owned_contact(&mut inner, &auth, &id)
        .map(|c| (StatusCode::OK, Json(json!({ "contact": c }))).into_response());
    drop(inner);
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

async fn update_contact(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = match authenticate(&shared, &headers, "contacts.write") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let response = (|| {
        let input = parse_json_object(&body)?;
        let allowed: Vec<&str> = CREATE_FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "locationId")
            .collect();
        let errors = validate_contact(&input, &allowed);
        if !errors.is_empty() {
            return Err(unprocessable(errors));
        }
        let mut inner = shared.lock();
        let contact = owned_contact(&mut inner, &auth, &id)?;
        apply_contact_fields(contact, input);
        let body = json!({ "succeded": true, "contact": contact });
        Ok((StatusCode::OK, Json(body)).into_response())
    })();
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

async fn add_note(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = match authenticate(&shared, &headers, "contacts.write") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let response = (|| {
        let input = parse_json_object(&body)?;
        let mut errors = Vec::new();
        for key in input.keys() {
            if key != "body" && key != "userId" {
                errors.push(format!("property {key} should not exist"));
            }
        }
        let text = str_field(&input, "body").map(str::to_owned);
        if text.is_none() {
            errors.push("body should not be empty".to_owned());
        }
        if input.get("userId").is_some_and(|u| !u.is_string()) {
            errors.push("userId must be a string".to_owned());
        }
        if !errors.is_empty() {
            return Err(unprocessable(errors));
        }
        let mut inner = shared.lock();
        owned_contact(&mut inner, &auth, &id)?;
        let note = json!({
            "id": random_id(),
            "body": text,
            "userId": str_field(&input, "userId"),
            "dateAdded": iso(Utc::now()),
            "contactId": id,
        });
        inner
            .notes
            .entry(id.clone())
            .or_default()
            .push(note.clone());
        Ok((StatusCode::CREATED, Json(json!({ "note": note }))).into_response())
    })();
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

// ---------------------------------------------------------------------------------------------
// Opportunities

const SEARCH_PARAMS: &[&str] = &[
    "location_id",
    "contact_id",
    "pipeline_id",
    "pipeline_stage_id",
    "status",
    "assigned_to",
    "q",
    "limit",
    "page",
    "startAfter",
    "startAfterId",
    "order",
    "getTasks",
    "getNotes",
    "getCalendarEvents",
    "date",
    "endDate",
    "campaignId",
    "country",
    "id",
];

fn created_ms(opportunity: &Map<String, Value>) -> i64 {
    opportunity
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis())
}

async fn search_opportunities(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let auth = match authenticate(&shared, &headers, "opportunities.readonly") {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let response = search(&shared, &auth, query.as_deref());
    with_rate_headers(auth.rate, response.unwrap_or_else(|r| r))
}

fn search(shared: &Shared, auth: &Auth, query: Option<&str>) -> Result<Response, Response> {
    let q = query_map(query);
    let param = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let mut errors: Vec<String> = q
        .keys()
        .filter(|k| !SEARCH_PARAMS.contains(&k.as_str()))
        .map(|k| format!("property {k} should not exist"))
        .collect();
    let location_id = param("location_id");
    if location_id.is_none() {
        errors.push("location_id should not be empty".to_owned());
    }
    let status = param("status").unwrap_or("all");
    if !["open", "won", "lost", "abandoned", "all"].contains(&status) {
        errors.push(
            "status must be one of the following values: open, won, lost, abandoned, all"
                .to_owned(),
        );
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            errors.push("limit must not be greater than 100".to_owned());
            20
        }
    };
    let page = match param("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            errors.push("page must not be less than 1".to_owned());
            1
        }
    };
    let start_after = match param("startAfter").map(str::parse::<i64>) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(_)) => {
            errors.push("startAfter must be a number string".to_owned());
            None
        }
    };
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let location_id = location_id.unwrap_or_default();
    if !auth.may_touch(location_id) {
        return Err(no_location_access());
    }
    let text = param("q").map(str::to_lowercase);
    let inner = shared.lock();
    let mut matching: Vec<&Map<String, Value>> = inner
        .opportunities
        .iter()
        .filter(|o| str_field(o, "locationId") == Some(location_id))
        .filter(|o| status == "all" || str_field(o, "status") == Some(status))
        .filter(|o| {
            [
                ("pipeline_id", "pipelineId"),
                ("pipeline_stage_id", "pipelineStageId"),
                ("contact_id", "contactId"),
                ("assigned_to", "assignedTo"),
            ]
            .iter()
            .all(|(p, f)| param(p).is_none_or(|want| str_field(o, f) == Some(want)))
        })
        .filter(|o| {
            text.as_ref().is_none_or(|t| {
                let contact = o.get("contact");
                [
                    o.get("name"),
                    contact.and_then(|c| c.get("name")),
                    contact.and_then(|c| c.get("email")),
                ]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|s| s.to_lowercase().contains(t.as_str()))
            })
        })
        .collect();
    matching.sort_by(|a, b| {
        created_ms(a)
            .cmp(&created_ms(b))
            .then_with(|| str_field(a, "id").cmp(&str_field(b, "id")))
    });
    let total = matching.len();
    let after_cursor: Vec<&Map<String, Value>> = match start_after {
        Some(ms) => {
            let after_id = param("startAfterId").unwrap_or_default();
            matching
                .iter()
                .copied()
                .filter(|o| {
                    let key = (created_ms(o), str_field(o, "id").unwrap_or_default());
                    key > (ms, after_id)
                })
                .collect()
        }
        None => matching.iter().copied().skip((page - 1) * limit).collect(),
    };
    let items: Vec<Value> = after_cursor
        .iter()
        .take(limit)
        .map(|o| Value::Object((*o).clone()))
        .collect();
    let more = after_cursor.len() > limit;
    let last = items.last();
    let last_ms = last.and_then(Value::as_object).map(created_ms);
    let last_id = last.and_then(|o| o.get("id")).cloned();
    let next_page_url = match (more, last_ms, &last_id) {
        (true, Some(ms), Some(Value::String(id))) => {
            let mut next = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &q {
                if !matches!(k.as_str(), "startAfter" | "startAfterId" | "page") {
                    next.append_pair(k, v);
                }
            }
            next.append_pair("startAfter", &ms.to_string());
            next.append_pair("startAfterId", id);
            json!(format!(
                "{}/opportunities/search?{}",
                shared.base_url,
                next.finish()
            ))
        }
        _ => Value::Null,
    };
    let current_page = if start_after.is_some() {
        Value::Null
    } else {
        json!(page)
    };
    let body = json!({
        "opportunities": items,
        "meta": {
            "total": total,
            "nextPageUrl": next_page_url,
            "startAfterId": last_id,
            "startAfter": last_ms,
            "currentPage": current_page,
            "nextPage": if more { json!(page + 1) } else { Value::Null },
            "prevPage": if page > 1 { json!(page - 1) } else { Value::Null },
        },
        "aggregations": {},
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// GHL's timestamps: ISO 8601 UTC with milliseconds.
fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A GHL-looking object id: 20 alphanumerics.
fn random_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

fn random_token(kind: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ghl_{kind}_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_like_class_validator_roughly() {
        assert!(is_email("ann@example.com"));
        assert!(!is_email("ann@example"));
        assert!(!is_email("not-an-email"));
        assert!(!is_email("a b@example.com"));
    }

    #[test]
    fn contact_names_derive_from_first_and_last() {
        let mut input = Map::new();
        input.insert("firstName".into(), json!("Ann"));
        input.insert("lastName".into(), json!("Lee"));
        input.insert("tags".into(), json!([" VIP ", "vip", "Lead"]));
        let contact = new_contact("loc", input);
        assert_eq!(contact["name"], json!("Ann Lee"));
        assert_eq!(contact["tags"], json!(["vip", "lead"]));
    }
}
