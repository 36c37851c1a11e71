//! The adapter's settings (platform config section `twilio`). Every field has a default, so an
//! empty section talks to the real Twilio with the shared resilience defaults.
use std::time::Duration;

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::HttpConfig;
use serde::Deserialize;

/// Twilio's REST API host; paths start with `/2010-04-01`.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// Default `https://api.twilio.com`; the sandbox and tests point it at the fake.
    pub base_url: String,
    /// Timeout of one attempt, in milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// Connect timeout, in milliseconds. Default 3000.
    pub connect_timeout_ms: u64,
    /// Attempts of a call that is safe to repeat (GetMessageStatus), the first included.
    /// Default 3. SendSms and MakeCall are never repeated after an ambiguous failure.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds (exponential, full jitter). Default 100.
    pub min_backoff_ms: u64,
    /// Largest retry delay, in milliseconds. Default 2000.
    pub max_backoff_ms: u64,
    /// A `Retry-After` above this many seconds is handed back as RESOURCE_EXHAUSTED instead
    /// of waited out. Default 30.
    pub max_retry_after_secs: u64,
    /// Consecutive transient failures of one connection that open its circuit. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast, in milliseconds. Default 30000.
    pub breaker_cooldown_ms: u64,
    /// How long the first result of a SendSms/MakeCall is kept per idempotency key, in
    /// seconds: a repeat within it is answered from the cache. Default 86400 (24 h).
    pub dedupe_ttl_secs: u64,
    /// How long an in-flight marker blocks a concurrent duplicate, in seconds; it expires on its
    /// own if the replica that set it died. Default 60, raised to the longest one call can take.
    pub in_flight_ttl_secs: u64,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        let http = HttpConfig::default();
        TwilioConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout_ms: millis(http.timeout),
            connect_timeout_ms: millis(http.connect_timeout),
            max_attempts: http.max_attempts,
            min_backoff_ms: millis(http.min_backoff),
            max_backoff_ms: millis(http.max_backoff),
            max_retry_after_secs: http.max_retry_after.as_secs(),
            breaker_failures: http.breaker.failures,
            breaker_cooldown_ms: millis(http.breaker.cooldown),
            dedupe_ttl_secs: 24 * 60 * 60,
            in_flight_ttl_secs: 60,
        }
    }
}

impl TwilioConfig {
    /// The resilience settings of the shared provider HTTP client.
    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_attempts: self.max_attempts.max(1),
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_retry_after: Duration::from_secs(self.max_retry_after_secs),
            breaker: BreakerConfig {
                failures: self.breaker_failures.max(1),
                cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            },
        }
    }

    pub fn dedupe_ttl(&self) -> Duration {
        Duration::from_secs(self.dedupe_ttl_secs)
    }

    /// Never shorter than the longest one logical call can take (every attempt timing out
    /// after waiting out the longest Retry-After, plus a credential refresh), so a marker does
    /// not expire while its call is still under way.
    pub fn in_flight_ttl(&self) -> Duration {
        let http = self.http();
        let attempts = http.max_attempts.saturating_add(1);
        let worst = (http.timeout + http.max_retry_after + http.max_backoff) * attempts;
        Duration::from_secs(self.in_flight_ttl_secs.max(1)).max(worst)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_twilio_and_the_shared_policy() {
        let config = TwilioConfig::default();
        assert_eq!(config.base_url, "https://api.twilio.com");
        assert_eq!(config.http(), HttpConfig::default());
        assert_eq!(config.dedupe_ttl(), Duration::from_secs(86_400));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: TwilioConfig =
            serde_json::from_str(r#"{"timeout_ms": 500}"#).expect("known key");
        assert_eq!(parsed.timeout_ms, 500);
        assert_eq!(parsed.base_url, DEFAULT_BASE_URL);
        assert!(serde_json::from_str::<TwilioConfig>(r#"{"timeout": 500}"#).is_err());
    }
}
