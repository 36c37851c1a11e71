//! What every fake provider shares: a loopback server that stops when dropped, a record of the
//! requests it received (secrets redacted) and injected failures (status codes, 429 with
//! `Retry-After`, slowness) answered in the provider's own error shape before routing.
//!
//! A fake builds its axum `Router`, then calls [`Harness::serve`] with a function that renders
//! the provider's error body for an injected status, so a test asserts on what an adapter
//! really sent and drives the adapter's retry, timeout and circuit paths.
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::Rng as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Shown instead of a secret value in recorded requests.
pub const REDACTED: &str = "[redacted]";
/// Largest request body a fake reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Headers whose values are never recorded (the auth scheme is kept: `Bearer [redacted]`).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-n8n-api-key",
    "x-api-key",
    "cookie",
    "x-retell-signature",
    "x-twilio-signature",
];

/// An injected failure, answered before the real handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer this status (e.g. 500, 502, 503) with the provider's error body.
    Status(u16),
    /// Answer 429 with the provider's error body, with `Retry-After` when given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// Wait, then answer normally: for client timeouts.
    Slow(Duration),
}

/// One request a fake received, secrets replaced by [`REDACTED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Lower-case header names; secret headers keep only their scheme.
    pub headers: BTreeMap<String, String>,
    /// The body as received, except form parameters named secret, which are redacted.
    pub body: Vec<u8>,
    /// `None` while the request is still being answered (e.g. a `Slow` failure).
    pub status: Option<u16>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body's form parameters (last value wins), when it is a form.
    pub fn form(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Renders the provider's error response for an injected status.
pub type ErrorBody = Arc<dyn Fn(StatusCode) -> Response + Send + Sync>;

/// The record and the failure plan of one fake; cheap to clone.
#[derive(Clone)]
pub struct Harness {
    inner: Arc<Mutex<Inner>>,
    secret_params: &'static [&'static str],
}

#[derive(Default)]
struct Inner {
    requests: Vec<(u64, Recorded)>,
    next_id: u64,
    queued: VecDeque<(Option<String>, Failure)>,
    share: Option<(f64, Failure)>,
}

impl Harness {
    /// `secret_params`: form or query parameter names whose values are never recorded
    /// (`client_secret`, `refresh_token`, …).
    pub fn new(secret_params: &'static [&'static str]) -> Self {
        Harness {
            inner: Arc::new(Mutex::new(Inner::default())),
            secret_params,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Requests whose method and path match, e.g. `("POST", "/2010-04-01/Accounts/AC1/Messages.json")`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The next `n` requests, on any path, fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.lock()
            .queued
            .extend(std::iter::repeat_n((None, failure), n));
    }

    /// The next `n` requests whose path starts with `path_prefix` fail with `failure`.
    pub fn fail_next_at(&self, path_prefix: &str, n: usize, failure: Failure) {
        self.lock().queued.extend(std::iter::repeat_n(
            (Some(path_prefix.to_owned()), failure),
            n,
        ));
    }

    /// From now on each request fails with probability `share` (0.0 turns this off).
    pub fn fail_share(&self, share: f64, failure: Failure) {
        self.lock().share = (share > 0.0).then_some((share.min(1.0), failure));
    }

    pub fn clear_failures(&self) {
        let mut inner = self.lock();
        inner.queued.clear();
        inner.share = None;
    }

    /// Serves `router` on `listener` with recording and failure injection in front of it.
    pub fn serve(
        &self,
        listener: TcpListener,
        router: Router,
        error_body: ErrorBody,
    ) -> io::Result<Running> {
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = (self.clone(), error_body);
        let app = router.layer(middleware::from_fn_with_state(state, record_and_inject));
        let server = tokio::spawn(async move {
            // A dead fake shows up as connection errors in the test that uses it.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Running { base_url, server })
    }

    fn take_failure(&self, path: &str) -> Option<Failure> {
        let mut inner = self.lock();
        let position = inner
            .queued
            .iter()
            .position(|(p, _)| p.as_deref().is_none_or(|p| path.starts_with(p)));
        if let Some((_, failure)) = position.and_then(|i| inner.queued.remove(i)) {
            return Some(failure);
        }
        let (share, failure) = inner.share?;
        (rand::rng().random::<f64>() < share).then_some(failure)
    }

    fn record(&self, parts: &axum::http::request::Parts, body: &[u8]) -> u64 {
        let query = self.redacted(parts.uri.query().unwrap_or_default().as_bytes());
        let body = if is_form(&parts.headers) {
            let pairs = self.redacted(body);
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter())
                .finish()
                .into_bytes()
        } else {
            body.to_vec()
        };
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_owned();
                let value = value.to_str().unwrap_or_default();
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    match value.split_once(' ') {
                        Some((scheme, _)) => format!("{scheme} {REDACTED}"),
                        None => REDACTED.to_owned(),
                    }
                } else {
                    value.to_owned()
                };
                (name, value)
            })
            .collect();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.requests.push((
            id,
            Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query,
                headers,
                body,
                status: None,
            },
        ));
        id
    }

    fn finish(&self, id: u64, status: StatusCode) {
        let mut inner = self.lock();
        if let Some((_, r)) = inner.requests.iter_mut().rev().find(|(rid, _)| *rid == id) {
            r.status = Some(status.as_u16());
        }
    }

    fn redacted(&self, encoded: &[u8]) -> BTreeMap<String, String> {
        form_urlencoded::parse(encoded)
            .map(|(k, v)| {
                let v = if self.secret_params.contains(&k.as_ref()) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect()
    }
}

/// A running fake server; it stops when dropped.
pub struct Running {
    pub base_url: String,
    server: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Binds `127.0.0.1:0`; a test machine without loopback cannot run any fake.
pub async fn loopback() -> io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0)).await
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

async fn record_and_inject(
    State((harness, error_body)): State<(Harness, ErrorBody)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let id = harness.record(&parts, &bytes);
    let response = match harness.take_failure(parts.uri.path()) {
        Some(Failure::Status(code)) => {
            error_body(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Some(Failure::TooManyRequests { retry_after_secs }) => {
            let mut response = error_body(StatusCode::TOO_MANY_REQUESTS);
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(Failure::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    harness.finish(id, response.status());
    response
}

/// Posts a webhook the way a provider does: the exact body bytes with the given headers.
/// Returns the receiver's status and body.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<(u16, Bytes), reqwest::Error> {
    let mut req = client.post(url).body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let response = req.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?))
}
