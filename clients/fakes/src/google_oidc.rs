//! Fake Google OAuth 2.0 / OpenID Connect provider (PROVIDERS.md §8.2).
//!
//! Serves Google's paths under a loopback base URL: discovery, the authorization endpoint
//! (auto-approves as a registered test user), the token endpoint (code with PKCE, refresh),
//! JWKS, userinfo and revocation. ID tokens are real RS256 JWTs, so adapters run their full
//! verification (kid → JWKS, iss, aud, exp, nonce, hd) against it.
//!
//! Fidelity choices worth knowing:
//! - error bodies and descriptions are Google's (`invalid_grant` / "Bad Request" for a used
//!   code, `redirect_uri_mismatch` at the token endpoint, "Token has been expired or revoked."
//!   for a dead refresh token, 401 `invalid_client` for a bad secret or unknown client);
//! - codes, access and refresh tokens carry Google's prefixes (`4/0…`, `ya29.…`, `1//0…`), so
//!   a code holds a `/` and must be URL-decoded by the caller;
//! - `email` / `profile` come back in `scope` as their userinfo URLs, and claims follow the
//!   granted scopes (no `email` claim without the `email` scope; no `id_token` without `openid`);
//! - stricter than Google on purpose while `strict` is on (the default): `state`, `nonce` and
//!   PKCE are required and `scope` must hold `openid`, because our adapters must always send
//!   them; the token endpoint only takes form bodies (Google also accepts JSON).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{Rng as _, RngCore as _};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
const AUTH_PATH: &str = "/o/oauth2/v2/auth";
const TOKEN_PATH: &str = "/token";
const USERINFO_PATH: &str = "/v1/userinfo";
const REVOKE_PATH: &str = "/revoke";
const CERTS_PATH: &str = "/oauth2/v3/certs";

/// Parameters whose values never reach [`FakeGoogle::requests`], so recorded traffic can be
/// printed in a failing test without leaking anything that looks like a credential.
const SECRET_PARAMS: &[&str] = &[
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "token",
    "access_token",
    "id_token",
    "assertion",
];
const REDACTED: &str = "[redacted]";
const MAX_BODY_BYTES: usize = 64 * 1024;
const RSA_BITS: usize = 2048;

/// How the fake behaves; `Default` mirrors Google's lifetimes.
#[derive(Clone, Debug)]
pub struct FakeGoogleConfig {
    /// `iss` of ID tokens and `issuer` of discovery; `None` means the base URL, since a
    /// loopback fake cannot be `https://accounts.google.com`.
    pub issuer: Option<String>,
    /// Require `state`, `nonce`, PKCE and the `openid` scope (Google accepts requests without).
    pub strict: bool,
    /// How long an authorization code can be exchanged.
    pub code_ttl: Duration,
    /// `expires_in` of access tokens (Google answers 3599).
    pub access_token_ttl: Duration,
    /// `exp - iat` of ID tokens.
    pub id_token_ttl: Duration,
    /// `Cache-Control: max-age` of the JWKS, which verifiers use to time their refetch.
    pub jwks_max_age: Duration,
}

impl Default for FakeGoogleConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            strict: true,
            code_ttl: Duration::from_secs(300),
            access_token_ttl: Duration::from_secs(3599),
            id_token_ttl: Duration::from_secs(3600),
            jwks_max_age: Duration::from_secs(21_600),
        }
    }
}

/// A Google account the fake can sign in as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeGoogleUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    /// Workspace domain; `None` is a consumer account, which Google marks by omitting `hd`.
    pub hd: Option<String>,
    pub name: String,
    pub picture: String,
}

impl FakeGoogleUser {
    /// A verified consumer account with a name taken from the email's local part.
    pub fn new(sub: impl Into<String>, email: impl Into<String>) -> Self {
        let sub = sub.into();
        let email = email.into();
        let name = email.split('@').next().unwrap_or_default().to_owned();
        let picture = format!("https://lh3.googleusercontent.com/a/{sub}=s96-c");
        Self {
            sub,
            email,
            email_verified: true,
            hd: None,
            name,
            picture,
        }
    }
}

/// A registered OAuth client ("Web application" in the Google console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeGoogleClient {
    pub client_id: String,
    pub client_secret: String,
    /// Exact-match list, as in the console: no prefix or trailing-slash leniency.
    pub redirect_uris: Vec<String>,
}

/// An injected failure, answered before the real handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    Status500,
    Status429 {
        retry_after_secs: u64,
    },
    /// Wait, then answer normally: for client timeouts.
    Slow(Duration),
}

/// One request the fake received, with secret values replaced by `[redacted]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Body parameters when the body was `application/x-www-form-urlencoded`.
    pub form: BTreeMap<String, String>,
    /// The scheme only, e.g. `Basic [redacted]`.
    pub authorization: Option<String>,
    /// `None` while the request is still being answered (e.g. a `Slow` failure).
    pub status: Option<u16>,
}

/// A running fake; the server stops when this is dropped.
pub struct FakeGoogle {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGoogle {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound or the RSA key cannot be generated: a test
    /// environment that broken cannot run any test that needs this fake.
    pub async fn start(config: FakeGoogleConfig) -> FakeGoogle {
        match Self::try_start(config).await {
            Ok(fake) => fake,
            Err(err) => panic!("fake google failed to start: {err}"),
        }
    }

    /// Starts on `127.0.0.1:0`, reporting failure instead of panicking.
    pub async fn try_start(config: FakeGoogleConfig) -> io::Result<FakeGoogle> {
        Self::try_start_on(TcpListener::bind(("127.0.0.1", 0)).await?, config).await
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub async fn try_start_on(
        listener: TcpListener,
        config: FakeGoogleConfig,
    ) -> io::Result<FakeGoogle> {
        let base_url = format!("http://{}", listener.local_addr()?);
        let issuer = config.issuer.clone().unwrap_or_else(|| base_url.clone());
        let key = published_key(0)?;
        let shared = Arc::new(Shared {
            config,
            base_url,
            issuer,
            inner: Mutex::new(Inner::new(KeyRing {
                current: key,
                previous: None,
                next_index: 1,
            })),
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            // A dead fake shows up as connection errors in the test that uses it.
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGoogle { shared, server })
    }

    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.shared.base_url)
    }

    /// Adds a user, or replaces the one with the same `sub`. The first user added is the
    /// one an authorization approves when nothing else picks one.
    pub fn add_user(&self, user: FakeGoogleUser) {
        let mut inner = self.shared.lock();
        match inner.users.iter_mut().find(|u| u.sub == user.sub) {
            Some(existing) => *existing = user,
            None => inner.users.push(user),
        }
    }

    /// Makes the next authorization approve this email, whatever its `login_hint` says.
    pub fn login_next_as(&self, email: &str) {
        self.shared.lock().next_login = Some(email.to_owned());
    }

    /// Registers a client, or replaces the one with the same `client_id`.
    pub fn add_client(&self, client: FakeGoogleClient) {
        self.shared
            .lock()
            .clients
            .insert(client.client_id.clone(), client);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The next `n` requests, on any path, fail with `mode`.
    pub fn fail_next(&self, n: usize, mode: FailureMode) {
        let mut inner = self.shared.lock();
        inner
            .failures
            .queued
            .extend(std::iter::repeat_n((None, mode), n));
    }

    /// The next `n` requests to `path` (e.g. `/token`) fail with `mode`.
    pub fn fail_next_at(&self, path: &str, n: usize, mode: FailureMode) {
        let mut inner = self.shared.lock();
        inner
            .failures
            .queued
            .extend(std::iter::repeat_n((Some(path.to_owned()), mode), n));
    }

    /// From now on each request fails with probability `share` (0.0 turns this off).
    pub fn fail_share(&self, share: f64, mode: FailureMode) {
        self.shared.lock().failures.share = (share > 0.0).then_some((share.min(1.0), mode));
    }

    pub fn clear_failures(&self) {
        self.shared.lock().failures = Failures::default();
    }

    /// Makes every issued access token expire now, to drive refresh-on-401 paths.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// What a live access token grants, as a Google resource server checks it.
    pub fn token_info(&self, access_token: &str) -> Option<GoogleTokenInfo> {
        self.tokens().info(access_token)
    }

    /// A handle on this fake's token table, so fake Google APIs (Calendar) accept exactly the
    /// access tokens this fake issued, and stop accepting them when they expire or are revoked.
    pub fn tokens(&self) -> GoogleTokens {
        GoogleTokens(self.shared.clone())
    }

    /// Issues an access token for a registered user (by email) without the browser flow, for
    /// tests of a Google API; `None` when no such user was added.
    pub fn issue_access_token(&self, email: &str, scopes: &[&str]) -> Option<String> {
        let mut inner = self.shared.lock();
        let sub = inner
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))?
            .sub
            .clone();
        let grant = inner.grants.len();
        inner.grants.push(Grant {
            client_id: DIRECT_GRANT_CLIENT.to_owned(),
            sub,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            revoked: false,
        });
        let token = random_token("ya29.");
        let expires_at = Instant::now() + self.shared.config.access_token_ttl;
        inner
            .access_tokens
            .insert(token.clone(), AccessToken { grant, expires_at });
        Some(token)
    }

    /// Claims of a valid ID token for `user` as seen by `client_id` (scopes `openid email
    /// profile`, no nonce): a baseline for negative tests to alter and [`Self::sign_id_token`].
    pub fn claims_for(&self, user: &FakeGoogleUser, client_id: &str) -> Value {
        let scopes = ["openid", "email", "profile"].map(String::from);
        self.shared
            .id_token_claims(user, client_id, &scopes, None, None)
    }

    /// Signs `claims` with the current published key, `kid` in the header.
    ///
    /// # Panics
    /// If signing fails, which it cannot for a JSON value and a key this fake generated.
    pub fn sign_id_token(&self, claims: Value) -> String {
        let key = self.shared.lock().keys.current.clone();
        sign_or_panic(&key, &key.kid, &claims)
    }

    /// Signs `claims` with a key the JWKS never publishes but under the current `kid`, so a
    /// verifier must fail on the signature itself rather than on a missing key.
    ///
    /// # Panics
    /// If the extra key cannot be generated or signing fails.
    pub fn sign_id_token_with_wrong_key(&self, claims: Value) -> String {
        let kid = self.current_kid();
        match stranger_key() {
            Ok(key) => sign_or_panic(&key, &kid, &claims),
            Err(err) => panic!("fake google could not generate the stranger key: {err}"),
        }
    }

    /// Starts signing with a new key and returns its `kid`. The JWKS keeps the previous key,
    /// as Google's does after a rotation, so tokens already issued still verify.
    ///
    /// # Panics
    /// If the new key cannot be generated.
    pub fn rotate_key(&self) -> String {
        let index = self.shared.lock().keys.next_index;
        // Generated outside the lock: the first use of a pool slot takes a while.
        let key = match published_key(index) {
            Ok(key) => key,
            Err(err) => panic!("fake google could not generate a key: {err}"),
        };
        let mut inner = self.shared.lock();
        let keys = &mut inner.keys;
        keys.previous = Some(std::mem::replace(&mut keys.current, key));
        keys.next_index = index + 1;
        keys.current.kid.clone()
    }

    pub fn current_kid(&self) -> String {
        self.shared.lock().keys.current.kid.clone()
    }
}

/// The client id recorded for tokens made by [`FakeGoogle::issue_access_token`].
const DIRECT_GRANT_CLIENT: &str = "fake-direct-grant";

/// What an access token grants: the user and the scopes as requested (`email`, not its URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleTokenInfo {
    pub sub: String,
    pub email: String,
    pub scopes: Vec<String>,
}

/// Shared view of a [`FakeGoogle`]'s access tokens; cheap to clone.
#[derive(Clone)]
pub struct GoogleTokens(Arc<Shared>);

impl GoogleTokens {
    /// The grant behind a live (unexpired, unrevoked) access token.
    pub fn info(&self, access_token: &str) -> Option<GoogleTokenInfo> {
        let inner = self.0.lock();
        let token = inner.access_tokens.get(access_token)?;
        if token.expires_at <= Instant::now() {
            return None;
        }
        let grant = inner.grants.get(token.grant).filter(|g| !g.revoked)?;
        let user = inner.users.iter().find(|u| u.sub == grant.sub)?;
        Some(GoogleTokenInfo {
            sub: user.sub.clone(),
            email: user.email.clone(),
            scopes: grant.scopes.clone(),
        })
    }

    /// Emails of the registered users, so a fake API can tell "no such account" apart.
    pub fn user_emails(&self) -> Vec<String> {
        self.0
            .lock()
            .users
            .iter()
            .map(|u| u.email.clone())
            .collect()
    }
}

/// Signs `claims` RS256 with this process's first published key, so other fakes (Microsoft)
/// issue real ID tokens without generating a second RSA key.
pub(crate) fn sign_with_shared_key(claims: &Value) -> io::Result<String> {
    let key = published_key(0)?;
    sign(&key, &key.kid, claims).map_err(io::Error::other)
}

/// The public JWK that verifies [`sign_with_shared_key`].
pub(crate) fn shared_jwk() -> io::Result<Value> {
    Ok(published_key(0)?.jwk())
}

// ---------------------------------------------------------------------------------------
// Keys

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

/// 2048-bit generation takes about a second even with optimised dependencies, so keys are
/// made once per process and shared by every fake in it (a token of one fake therefore
/// verifies against another's JWKS; use the issuer or audience to tell them apart).
static PUBLISHED_KEYS: Mutex<Vec<Arc<SigningKey>>> = Mutex::new(Vec::new());
static STRANGER_KEY: Mutex<Option<Arc<SigningKey>>> = Mutex::new(None);

fn published_key(index: usize) -> io::Result<Arc<SigningKey>> {
    let mut pool = PUBLISHED_KEYS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while pool.len() <= index {
        pool.push(Arc::new(generate_key()?));
    }
    pool.get(index)
        .cloned()
        .ok_or_else(|| io::Error::other("key pool slot missing"))
}

fn stranger_key() -> io::Result<Arc<SigningKey>> {
    let mut slot = STRANGER_KEY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(key) = slot.as_ref() {
        return Ok(key.clone());
    }
    let key = Arc::new(generate_key()?);
    *slot = Some(key.clone());
    Ok(key)
}

fn generate_key() -> io::Result<SigningKey> {
    let private =
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS).map_err(io::Error::other)?;
    let der = private.to_pkcs1_der().map_err(io::Error::other)?;
    let n = private.n().to_bytes_be();
    // Google's kids are 40 hex digits; deriving ours from the modulus keeps them stable per key.
    let kid = Sha256::digest(&n)[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(SigningKey {
        kid,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        n: URL_SAFE_NO_PAD.encode(&n),
        e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
    })
}

impl SigningKey {
    fn jwk(&self) -> Value {
        json!({"kid": self.kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": self.n, "e": self.e})
    }
}

fn sign(key: &SigningKey, kid: &str, claims: &Value) -> jsonwebtoken::errors::Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding)
}

fn sign_or_panic(key: &SigningKey, kid: &str, claims: &Value) -> String {
    match sign(key, kid, claims) {
        Ok(token) => token,
        Err(err) => panic!("fake google could not sign an id token: {err}"),
    }
}

struct KeyRing {
    current: Arc<SigningKey>,
    previous: Option<Arc<SigningKey>>,
    /// Pool slot the next rotation takes.
    next_index: usize,
}

// ---------------------------------------------------------------------------------------
// State

struct Shared {
    config: FakeGoogleConfig,
    base_url: String,
    issuer: String,
    inner: Mutex<Inner>,
}

struct Inner {
    users: Vec<FakeGoogleUser>,
    next_login: Option<String>,
    clients: HashMap<String, FakeGoogleClient>,
    codes: HashMap<String, CodeGrant>,
    /// Indexed by grant id; a revocation kills every token of its grant, as at Google.
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessToken>,
    refresh_tokens: HashMap<String, usize>,
    requests: Vec<(u64, RecordedRequest)>,
    next_request_id: u64,
    failures: Failures,
    keys: KeyRing,
}

impl Inner {
    fn new(keys: KeyRing) -> Self {
        Self {
            users: Vec::new(),
            next_login: None,
            clients: HashMap::new(),
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            requests: Vec::new(),
            next_request_id: 0,
            failures: Failures::default(),
            keys,
        }
    }
}

#[derive(Default)]
struct Failures {
    queued: VecDeque<(Option<String>, FailureMode)>,
    share: Option<(f64, FailureMode)>,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    sub: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    /// (challenge, method) when the request used PKCE.
    pkce: Option<(String, String)>,
    offline: bool,
    expires_at: Instant,
}

struct Grant {
    client_id: String,
    sub: String,
    scopes: Vec<String>,
    revoked: bool,
}

struct AccessToken {
    grant: usize,
    expires_at: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id_token_claims(
        &self,
        user: &FakeGoogleUser,
        client_id: &str,
        scopes: &[String],
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Value {
        let iat = unix_now();
        let mut claims = json!({
            "iss": self.issuer,
            "azp": client_id,
            "aud": client_id,
            "sub": user.sub,
            "iat": iat,
            "exp": iat + self.config.id_token_ttl.as_secs(),
        });
        let has = |s: &str| scopes.iter().any(|g| g == s);
        if let Some(hd) = &user.hd {
            claims["hd"] = json!(hd);
        }
        if has("email") {
            claims["email"] = json!(user.email);
            claims["email_verified"] = json!(user.email_verified);
        }
        if has("profile") {
            claims["name"] = json!(user.name);
            claims["picture"] = json!(user.picture);
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        if let Some(token) = access_token {
            // OIDC Core 3.1.3.6: left half of the SHA-256 of the access token.
            claims["at_hash"] = json!(URL_SAFE_NO_PAD.encode(&Sha256::digest(token)[..16]));
        }
        claims
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(DISCOVERY_PATH, get(discovery))
        .route(AUTH_PATH, get(authorize))
        .route(TOKEN_PATH, post(token))
        .route(CERTS_PATH, get(certs))
        .route(USERINFO_PATH, get(userinfo).post(userinfo))
        .route(REVOKE_PATH, post(revoke))
        .fallback(|| async { error_page(StatusCode::NOT_FOUND, "not_found", "Not Found") })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            record_and_inject,
        ))
        .with_state(shared)
}

/// Records every request (secrets redacted) and answers injected failures before routing.
async fn record_and_inject(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path().to_owned();
    let query = redacted(parts.uri.query().unwrap_or_default().as_bytes());
    let form = if is_form(&parts.headers) {
        redacted(&bytes)
    } else {
        BTreeMap::new()
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("{} {REDACTED}", v.split(' ').next().unwrap_or_default()));

    let (id, failure) = {
        let mut inner = shared.lock();
        let id = inner.next_request_id;
        inner.next_request_id += 1;
        let method = parts.method.to_string();
        let record = RecordedRequest {
            method,
            path: path.clone(),
            query,
            form,
            authorization,
            status: None,
        };
        inner.requests.push((id, record));
        (id, take_failure(&mut inner.failures, &path))
    };

    let response = match failure {
        Some(FailureMode::Status500) => injected(StatusCode::INTERNAL_SERVER_ERROR, "backendError"),
        Some(FailureMode::Status429 { retry_after_secs }) => {
            let mut response = injected(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Some(FailureMode::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };

    let mut inner = shared.lock();
    if let Some((_, record)) = inner.requests.iter_mut().rev().find(|(rid, _)| *rid == id) {
        record.status = Some(response.status().as_u16());
    }
    response
}

fn take_failure(failures: &mut Failures, path: &str) -> Option<FailureMode> {
    let position = failures
        .queued
        .iter()
        .position(|(p, _)| p.as_deref().is_none_or(|p| p == path));
    if let Some((_, mode)) = position.and_then(|i| failures.queued.remove(i)) {
        return Some(mode);
    }
    let (share, mode) = failures.share?;
    (rand::rng().random::<f64>() < share).then_some(mode)
}

fn injected(status: StatusCode, reason: &str) -> Response {
    let code = status.as_u16();
    let body = json!({"error": {"code": code, "message": "injected failure", "status": reason}});
    (status, Json(body)).into_response()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let base = &shared.base_url;
    // Google's document, endpoints rebased. It advertises more than the fake serves (device
    // flow, implicit response types); those paths answer 404 or an error page here.
    let doc = json!({
        "issuer": shared.issuer,
        "authorization_endpoint": format!("{base}{AUTH_PATH}"),
        "device_authorization_endpoint": format!("{base}/device/code"),
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "userinfo_endpoint": format!("{base}{USERINFO_PATH}"),
        "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
        "jwks_uri": format!("{base}{CERTS_PATH}"),
        "response_types_supported": [
            "code", "token", "id_token", "code token", "code id_token", "token id_token",
            "code token id_token", "none"
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss",
            "name", "picture", "sub"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": [
            "authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ],
    });
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(doc)).into_response()
}

async fn certs(State(shared): State<Arc<Shared>>) -> Response {
    let keys: Vec<Value> = {
        let inner = shared.lock();
        let ring = &inner.keys;
        std::iter::once(&ring.current)
            .chain(ring.previous.as_ref())
            .map(|k| k.jwk())
            .collect()
    };
    let cache = format!(
        "public, max-age={}, must-revalidate, no-transform",
        shared.config.jwks_max_age.as_secs()
    );
    (
        [(header::CACHE_CONTROL, cache)],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let bad = |detail: &str| error_page(StatusCode::BAD_REQUEST, "invalid_request", detail);
    let params = match unique_params(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(detail) => return bad(&detail),
    };
    let param = |name: &str| param_of(&params, name);

    // Until client and redirect_uri check out, errors are pages: redirecting to an
    // unverified URI would make the provider an open redirector.
    let Some(client_id) = param("client_id") else {
        return bad("Missing required parameter: client_id");
    };
    let Some(redirect_uri) = param("redirect_uri") else {
        return bad("Missing required parameter: redirect_uri");
    };
    let mut inner = shared.lock();
    let Some(client) = inner.clients.get(client_id) else {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        let detail = format!(
            "The redirect URI in the request, {redirect_uri}, does not match the ones \
             authorized for the OAuth client."
        );
        return error_page(StatusCode::BAD_REQUEST, "redirect_uri_mismatch", &detail);
    }

    match param("response_type") {
        None => return bad("Missing required parameter: response_type"),
        Some("code") => {}
        Some(other) => {
            let detail = format!("The fake serves the code flow only, not response_type={other}");
            return error_page(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                &detail,
            );
        }
    }
    let Some(scope) = param("scope") else {
        return bad("Missing required parameter: scope");
    };
    let scopes: Vec<String> = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let strict = shared.config.strict;
    if strict && !scopes.iter().any(|s| s == "openid") {
        return bad("scope must include openid (fake strict mode)");
    }
    for required in ["state", "nonce", "code_challenge"] {
        if strict && param(required).is_none() {
            return bad(&format!(
                "Missing required parameter: {required} (fake strict mode)"
            ));
        }
    }
    let pkce = match param("code_challenge") {
        None => None,
        Some(challenge) => {
            let method = param("code_challenge_method").unwrap_or("plain");
            if method != "plain" && method != "S256" {
                return bad(&format!("Invalid code_challenge_method: {method}"));
            }
            if !is_pkce_string(challenge) {
                return bad("Invalid code_challenge");
            }
            Some((challenge.to_owned(), method.to_owned()))
        }
    };
    let offline = match param("access_type") {
        None | Some("online") => false,
        Some("offline") => true,
        Some(other) => return bad(&format!("Invalid access_type: {other}")),
    };

    let wanted = inner
        .next_login
        .take()
        .or_else(|| param("login_hint").map(String::from));
    let user = wanted
        .and_then(|w| {
            inner
                .users
                .iter()
                .find(|u| u.email.eq_ignore_ascii_case(&w) || u.sub == w)
        })
        .or_else(|| inner.users.first())
        .cloned();
    let Some(user) = user else {
        let detail = "No test user registered: call FakeGoogle::add_user first";
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "no_test_user", detail);
    };

    let state = param("state");
    let hd_allowed = match param("hd") {
        None => true,
        Some("*") => user.hd.is_some(),
        Some(hd) => user
            .hd
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(hd)),
    };
    if !hd_allowed {
        let mut reply = vec![("error", "access_denied")];
        reply.extend(state.map(|s| ("state", s)));
        return redirect(redirect_uri, &reply);
    }

    let code = random_token("4/0");
    inner.codes.insert(
        code.clone(),
        CodeGrant {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            sub: user.sub.clone(),
            scopes: scopes.clone(),
            nonce: param("nonce").map(String::from),
            pkce,
            offline,
            expires_at: Instant::now() + shared.config.code_ttl,
        },
    );
    drop(inner);

    // Google's success redirect also carries scope, authuser, hd and prompt; clients must
    // ignore what they do not use.
    let granted = granted_scope(&scopes);
    let mut reply = Vec::new();
    reply.extend(state.map(|s| ("state", s)));
    reply.extend([
        ("code", code.as_str()),
        ("scope", granted.as_str()),
        ("authuser", "0"),
    ]);
    reply.extend(user.hd.as_deref().map(|hd| ("hd", hd)));
    reply.push(("prompt", "consent"));
    redirect(redirect_uri, &reply)
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return bad_request(
            "invalid_request",
            "Expected application/x-www-form-urlencoded",
        );
    }
    let params = match unique_params(&body) {
        Ok(params) => params,
        Err(detail) => return bad_request("invalid_request", &detail),
    };
    let param = |name: &str| param_of(&params, name);

    // client_secret_basic wins over client_secret_post when both are sent.
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(Some((id, secret))) => (Some(id), Some(secret)),
        Some(None) => return invalid_client("Unauthorized"),
        None => (
            param("client_id").map(String::from),
            param("client_secret").map(String::from),
        ),
    };
    let Some(client_id) = client_id else {
        return bad_request(
            "invalid_request",
            "Could not determine client ID from request.",
        );
    };
    let mut inner = shared.lock();
    let Some(client) = inner.clients.get(&client_id) else {
        return invalid_client("The OAuth client was not found.");
    };
    let Some(secret) = secret else {
        return bad_request("invalid_request", "client_secret is missing.");
    };
    if client.client_secret != secret {
        return invalid_client("Unauthorized");
    }

    match param("grant_type") {
        None => bad_request("invalid_request", "Missing required parameter: grant_type"),
        Some("authorization_code") => exchange_code(&shared, &mut inner, &client_id, &params),
        Some("refresh_token") => refresh(&shared, &mut inner, &client_id, &params),
        Some(other) => bad_request(
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
    }
}

fn exchange_code(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &HashMap<String, String>,
) -> Response {
    let param = |name: &str| param_of(params, name);
    let invalid_grant = |detail: &str| bad_request("invalid_grant", detail);
    let Some(code) = param("code") else {
        return bad_request("invalid_request", "Missing required parameter: code");
    };
    // Removed before any other check: a code is single-use even when the attempt fails,
    // which also stops verifier guessing.
    let Some(grant) = inner.codes.remove(code) else {
        return invalid_grant("Bad Request");
    };
    if grant.expires_at <= Instant::now() || grant.client_id != client_id {
        return invalid_grant("Bad Request");
    }
    match param("redirect_uri") {
        None => {
            return bad_request(
                "invalid_request",
                "Missing required parameter: redirect_uri",
            )
        }
        Some(uri) if uri != grant.redirect_uri => {
            return bad_request("redirect_uri_mismatch", "Bad Request")
        }
        Some(_) => {}
    }
    match (&grant.pkce, param("code_verifier")) {
        (None, None) => {}
        (None, Some(_)) => return invalid_grant("code_verifier or verifier is not needed."),
        (Some(_), None) => return invalid_grant("Missing code verifier."),
        (Some((challenge, method)), Some(verifier)) => {
            let derived = match method.as_str() {
                "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)),
                _ => verifier.to_owned(),
            };
            if !is_pkce_string(verifier) || derived != *challenge {
                return invalid_grant("Invalid code verifier.");
            }
        }
    }
    let Some(user) = inner.users.iter().find(|u| u.sub == grant.sub).cloned() else {
        return invalid_grant("Bad Request");
    };

    let grant_id = inner.grants.len();
    inner.grants.push(Grant {
        client_id: client_id.to_owned(),
        sub: grant.sub,
        scopes: grant.scopes.clone(),
        revoked: false,
    });
    let refresh_token = grant.offline.then(|| {
        let token = random_token("1//0");
        inner.refresh_tokens.insert(token.clone(), grant_id);
        token
    });
    token_response(
        shared,
        inner,
        grant_id,
        &user,
        grant.nonce.as_deref(),
        refresh_token,
    )
}

fn refresh(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &HashMap<String, String>,
) -> Response {
    let Some(token) = param_of(params, "refresh_token") else {
        return bad_request(
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    let live = inner
        .refresh_tokens
        .get(token)
        .and_then(|&id| Some((id, inner.grants.get(id)?)));
    let Some((grant_id, grant)) = live.filter(|(_, g)| !g.revoked && g.client_id == client_id)
    else {
        return bad_request("invalid_grant", "Token has been expired or revoked.");
    };
    let Some(user) = inner.users.iter().find(|u| u.sub == grant.sub).cloned() else {
        return bad_request("invalid_grant", "Token has been expired or revoked.");
    };
    // Google keeps the refresh token and issues no new one; the refreshed id_token has no nonce.
    token_response(shared, inner, grant_id, &user, None, None)
}

fn token_response(
    shared: &Shared,
    inner: &mut Inner,
    grant_id: usize,
    user: &FakeGoogleUser,
    nonce: Option<&str>,
    refresh_token: Option<String>,
) -> Response {
    let ttl = shared.config.access_token_ttl;
    let access_token = random_token("ya29.");
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            grant: grant_id,
            expires_at: Instant::now() + ttl,
        },
    );
    let Some(grant) = inner.grants.get(grant_id) else {
        return backend_error();
    };
    let mut body = json!({
        "access_token": access_token,
        "expires_in": ttl.as_secs(),
        "scope": granted_scope(&grant.scopes),
        "token_type": "Bearer",
    });
    if grant.scopes.iter().any(|s| s == "openid") {
        let claims = shared.id_token_claims(
            user,
            &grant.client_id,
            &grant.scopes,
            nonce,
            Some(&access_token),
        );
        match sign(&inner.keys.current, &inner.keys.current.kid, &claims) {
            Ok(id_token) => body["id_token"] = json!(id_token),
            Err(_) => return backend_error(),
        }
    }
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    (no_store_headers(), Json(body)).into_response()
}

async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let inner = shared.lock();
    let now = Instant::now();
    let grant = token
        .and_then(|t| inner.access_tokens.get(t))
        .filter(|t| t.expires_at > now)
        .and_then(|t| inner.grants.get(t.grant))
        .filter(|g| !g.revoked);
    let Some(user) = grant.and_then(|g| inner.users.iter().find(|u| u.sub == g.sub)) else {
        let challenge = "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";
        let body = json!({"error": "invalid_request", "error_description": "Invalid Credentials"});
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            Json(body),
        )
            .into_response();
    };
    let scopes = grant.map(|g| g.scopes.as_slice()).unwrap_or_default();
    // Same scope rules as the ID token, minus the token-only claims.
    let mut claims = shared.id_token_claims(user, "", scopes, None, None);
    if let Some(map) = claims.as_object_mut() {
        for token_only in ["iss", "azp", "aud", "iat", "exp"] {
            map.remove(token_only);
        }
    }
    Json(claims).into_response()
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Google takes the token from the query or the form body and asks for no client auth.
    let from_body = if is_form(&headers) {
        unique_params(&body).unwrap_or_default()
    } else {
        HashMap::new()
    };
    let from_query = unique_params(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let Some(token) = from_body.get("token").or_else(|| from_query.get("token")) else {
        return bad_request("invalid_request", "Bad Request");
    };
    let mut inner = shared.lock();
    let grant_id = match inner.refresh_tokens.get(token) {
        Some(&id) => Some(id),
        None => inner.access_tokens.get(token).map(|t| t.grant),
    };
    match grant_id
        .and_then(|id| inner.grants.get_mut(id))
        .filter(|g| !g.revoked)
    {
        Some(grant) => {
            grant.revoked = true;
            StatusCode::OK.into_response()
        }
        None => bad_request("invalid_token", "Token expired or revoked"),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn param_of<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn bad_request(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

fn invalid_client(description: &str) -> Response {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// Only reachable if the fake's own state is inconsistent.
fn backend_error() -> Response {
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_failure",
        "Backend Error",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, no_store_headers(), Json(body)).into_response()
}

fn no_store_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (
            header::CACHE_CONTROL,
            "no-cache, no-store, max-age=0, must-revalidate",
        ),
        (header::PRAGMA, "no-cache"),
    ]
}

/// Google's browser-facing error page, reduced to text a test can assert on.
fn error_page(status: StatusCode, error: &str, detail: &str) -> Response {
    let body = format!("Error {}: {error}\n\n{detail}\n", status.as_u16());
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
    let location = format!("{uri}{separator}{query}");
    match HeaderValue::from_str(&location) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid redirect_uri",
        ),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// OAuth forbids repeating a parameter (RFC 6749 §3.1), and Google rejects it.
fn unique_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(raw).map_err(|e| e.to_string())?;
    let mut params = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(format!("Parameter not allowed to be repeated: {name}"));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn redacted(raw: &[u8]) -> BTreeMap<String, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).unwrap_or_default();
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = if SECRET_PARAMS.contains(&k.as_str()) {
                REDACTED.to_owned()
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

/// `Some(None)` is a Basic header that does not decode: Google answers that as a bad client.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    // RFC 6749 §2.3.1: both parts are form-urlencoded before joining with ':'.
    let credentials = decoded.and_then(|d| {
        let (id, secret) = d.split_once(':')?;
        let unescape = |s: &str| -> Option<String> {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(&format!("v={s}")).ok()?;
            pairs.into_iter().next().map(|(_, v)| v)
        };
        Some((unescape(id)?, unescape(secret)?))
    });
    Some(credentials)
}

/// RFC 7636 §4.1: 43–128 characters from the unreserved set.
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Google reports `email` and `profile` under their userinfo URLs.
fn granted_scope(scopes: &[String]) -> String {
    scopes
        .iter()
        .map(|s| match s.as_str() {
            "email" => "https://www.googleapis.com/auth/userinfo.email",
            "profile" => "https://www.googleapis.com/auth/userinfo.profile",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
