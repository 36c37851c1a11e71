//! Provider HTTP calls with the resilience every adapter needs: a timeout per attempt; retries
//! with exponential backoff and full jitter, but only for calls that are safe to repeat (a 429 or
//! a refused connection is always safe: the provider did not act), while an unsafe call that
//! failed ambiguously is reported as UNKNOWN so no caller repeats it by default; `Retry-After` honoured, and a
//! wait longer than the caller should hold a request is handed back as RATE_LIMITED; a circuit
//! breaker per provider and connection; one forced credential refresh when the provider
//! answers 401 (an OAuth token revoked or expired early).
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use bytes::Bytes;
use http::HeaderMap;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::ConnectionCredential;
use serde::de::DeserializeOwned;

use crate::breaker::{Admission, BreakerConfig, Breakers};
use crate::credentials::CredentialSource;
use crate::error::ProviderError;

/// Timeouts, retries and the breaker of one provider's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Whole-attempt timeout (connect, send, headers and body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts of a retried call, the first included.
    pub max_attempts: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out: the error goes back to the caller.
    pub max_retry_after: Duration,
    pub breaker: BreakerConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(30),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Whether a call may be sent again after an ambiguous failure (5xx, timeout): GETs, idempotent
/// writes (PUT of a whole resource, upserts) and requests carrying a provider idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Safe,
    Never,
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct ProviderResponse {
    pub provider: &'static str,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ProviderResponse {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::new(
                self.provider,
                ErrorKind::Provider,
                format!("unexpected response body: {e}"),
            )
        })
    }
}

/// Reads the provider's error code and message from a non-2xx body.
pub type ErrorParser = fn(status: u16, body: &[u8]) -> (String, String);

/// One provider's HTTP client; clone it freely (the connection pool and breakers are shared).
#[derive(Clone)]
pub struct ProviderHttp {
    provider: &'static str,
    base_url: String,
    client: reqwest::Client,
    config: HttpConfig,
    breakers: Arc<Breakers>,
    parse_error: ErrorParser,
}

impl ProviderHttp {
    pub fn new(
        provider: &'static str,
        base_url: impl Into<String>,
        config: HttpConfig,
        parse_error: ErrorParser,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            // Building only fails when the TLS backend cannot load; the default client then
            // reports the same problem on the first call instead of at startup.
            .unwrap_or_default();
        ProviderHttp {
            provider,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client,
            breakers: Arc::new(Breakers::new(config.breaker)),
            config,
            parse_error,
        }
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `path` (starting with `/`) under the base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// One logical call for `connection`: `build` makes the request for each attempt with the
    /// connection's current credential.
    pub async fn call<F>(
        &self,
        creds: &dyn CredentialSource,
        connection: &str,
        retry: Retry,
        build: F,
    ) -> Result<ProviderResponse, ProviderError>
    where
        F: Fn(&reqwest::Client, &ConnectionCredential) -> reqwest::RequestBuilder,
    {
        let mut credential = self.credential(creds, connection, false).await?;
        let mut refreshed = false;
        loop {
            match self
                .attempts(connection, retry, |c| build(c, &credential))
                .await
            {
                Err(e) if e.http_status == Some(401) && !refreshed => {
                    tracing::info!(
                        provider = self.provider,
                        connection,
                        "provider refused the credential, refreshing it once"
                    );
                    refreshed = true;
                    credential = self.credential(creds, connection, true).await?;
                }
                other => return other,
            }
        }
    }

    /// A call that carries no connection credential (OAuth token endpoints, public lookups);
    /// `breaker_key` names what the circuit is kept for.
    pub async fn send<F>(
        &self,
        breaker_key: &str,
        retry: Retry,
        build: F,
    ) -> Result<ProviderResponse, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.attempts(breaker_key, retry, build).await
    }

    async fn credential(
        &self,
        creds: &dyn CredentialSource,
        connection: &str,
        force_refresh: bool,
    ) -> Result<ConnectionCredential, ProviderError> {
        creds
            .credential(connection, force_refresh)
            .await
            .map_err(|status| {
                let kind = match ErrorKind::from_code(status.code()) {
                    // The connection is unusable as it stands; retrying the port call won't help.
                    ErrorKind::Unauthenticated | ErrorKind::NotFound => {
                        ErrorKind::PreconditionFailed
                    }
                    kind => kind,
                };
                ProviderError::new(
                    self.provider,
                    kind,
                    format!(
                        "no usable credential for {connection}: {}",
                        status.message()
                    ),
                )
            })
    }

    async fn attempts<F>(
        &self,
        key: &str,
        retry: Retry,
        build: F,
    ) -> Result<ProviderResponse, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let breaker_key = format!("{}:{key}", self.provider);
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        loop {
            if let Admission::Refused { retry_after } = self.breakers.admit(&breaker_key) {
                return Err(ProviderError::new(
                    self.provider,
                    ErrorKind::Unavailable,
                    "circuit open: the provider failed repeatedly for this connection",
                )
                .with_retry_after(Some(retry_after)));
            }
            let (result, never_sent) = self.once(build(&self.client)).await;
            let transient = matches!(&result, Err(e) if e.is_transient());
            self.breakers.report(&breaker_key, transient);
            let error = match result {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            // A 429 or a refused connection means the provider did nothing: always safe.
            let repeatable = retry == Retry::Safe || never_sent || error.http_status == Some(429);
            if !repeatable && error.is_transient() {
                return Err(outcome_unknown(error));
            }
            if !(repeatable && error.is_transient()) {
                return Err(error);
            }
            let Some(mut delay) = delays.next() else {
                return Err(error);
            };
            if let Some(after) = error.retry_after {
                if after > self.config.max_retry_after {
                    return Err(error);
                }
                delay = delay.max(after);
            }
            tracing::warn!(
                provider = self.provider,
                status = error.http_status,
                delay_ms = delay.as_millis() as u64,
                "provider call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt; the flag says the request certainly never reached the provider.
    async fn once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (Result<ProviderResponse, ProviderError>, bool) {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (Err(self.transport_error(&e)), e.is_connect()),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(self.transport_error(&e)), false),
        };
        if (200..300).contains(&status) {
            let response = ProviderResponse {
                provider: self.provider,
                status,
                headers,
                body,
            };
            return (Ok(response), false);
        }
        let (code, message) = (self.parse_error)(status, &body);
        let message = if message.is_empty() {
            format!("HTTP {status}")
        } else {
            message
        };
        let wait = retry_after(&headers).or_else(|| {
            (status == 429)
                .then(|| rate_limit_reset(&headers))
                .flatten()
        });
        let error =
            ProviderError::http(self.provider, status, code, message).with_retry_after(wait);
        (Err(error), false)
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        // The URL is left out: some providers put account ids in paths, and logs need none.
        if e.is_timeout() {
            ProviderError::new(
                self.provider,
                ErrorKind::Timeout,
                "the provider did not answer in time",
            )
        } else {
            ProviderError::new(
                self.provider,
                ErrorKind::Unavailable,
                "cannot reach the provider",
            )
        }
    }
}

/// An unsafe call that failed after it may have reached the provider (a timeout, a 5xx) may
/// have been carried out: it is reported as UNKNOWN, which callers do not retry by default,
/// rather than as UNAVAILABLE, which they would, sending it twice.
fn outcome_unknown(mut error: ProviderError) -> ProviderError {
    error.kind = ErrorKind::Provider;
    error.message = format!(
        "{} (the provider may have carried out the request; it is not repeated)",
        error.message
    );
    error
}

/// When a 429 without `Retry-After` may be retried, from the rate-limit headers providers send
/// instead: `RateLimit-Reset` / `X-RateLimit-Reset` (seconds, or a Unix time), or GHL's window
/// (`X-RateLimit-Remaining: 0` with `X-RateLimit-Interval-Milliseconds`).
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let number =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    if let Some(reset) = number("ratelimit-reset").or_else(|| number("x-ratelimit-reset")) {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        // Large values are Unix times; small ones are seconds from now.
        let secs = if reset > 1_000_000_000 {
            reset.saturating_sub(now)
        } else {
            reset
        };
        return Some(Duration::from_secs(secs));
    }
    if number("x-ratelimit-remaining") == Some(0) {
        return number("x-ratelimit-interval-milliseconds").map(Duration::from_millis);
    }
    None
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(120);
        h.insert(
            http::header::RETRY_AFTER,
            soon.format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string()
                .parse()
                .unwrap(),
        );
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn rate_limit_headers_say_when_to_come_back() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_reset(&h), None);
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert(
            "x-ratelimit-interval-milliseconds",
            "10000".parse().unwrap(),
        );
        assert_eq!(
            rate_limit_reset(&h),
            Some(Duration::from_secs(10)),
            "GHL's window"
        );
        h.insert("x-ratelimit-remaining", "3".parse().unwrap());
        assert_eq!(rate_limit_reset(&h), None, "requests left: no wait");
        h.insert("x-ratelimit-reset", "5".parse().unwrap());
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(5)));
        let at = chrono::Utc::now().timestamp() + 30;
        h.insert("x-ratelimit-reset", at.to_string().parse().unwrap());
        let wait = rate_limit_reset(&h).unwrap();
        assert!(
            wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28),
            "{wait:?}"
        );
    }
}
