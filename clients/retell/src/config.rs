//! Configuration of the Retell adapter: where Retell is and how patiently it is called. Every
//! field has a documented default, so an empty table is a working production configuration.
use std::time::Duration;

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::HttpConfig;
use serde::Deserialize;

/// Retell's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.retellai.com";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetellConfig {
    /// Retell API base URL. Default `https://api.retellai.com`; tests and the sandbox point it
    /// at the fake.
    pub base_url: String,
    /// Timeout of one attempt (connect, send, whole answer), ms. Default 10000.
    pub timeout_ms: u64,
    /// Connect timeout, ms. Default 3000.
    pub connect_timeout_ms: u64,
    /// Attempts of a call that is safe to repeat, the first included. Default 3.
    pub max_attempts: u32,
    /// Smallest and largest backoff between attempts (full jitter), ms. Defaults 100 and 2000.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A `Retry-After` longer than this is returned to the caller instead of waited out, ms.
    /// Default 30000.
    pub max_retry_after_ms: u64,
    /// Consecutive transient failures of one connection that open its circuit. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast before a trial call, ms. Default 30000.
    pub breaker_cooldown_ms: u64,
}

impl Default for RetellConfig {
    fn default() -> Self {
        RetellConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_attempts: 3,
            min_backoff_ms: 100,
            max_backoff_ms: 2_000,
            max_retry_after_ms: 30_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

impl RetellConfig {
    /// Refuses values that would make every call fail or never retry sensibly.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err("retell.base_url must be an http(s) URL".to_owned());
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(
                "retell.timeout_ms and retell.connect_timeout_ms must be positive".to_owned(),
            );
        }
        if self.max_attempts == 0 || self.breaker_failures == 0 {
            return Err(
                "retell.max_attempts and retell.breaker_failures must be at least 1".to_owned(),
            );
        }
        if self.min_backoff_ms > self.max_backoff_ms {
            return Err("retell.min_backoff_ms must not exceed retell.max_backoff_ms".to_owned());
        }
        Ok(())
    }

    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_attempts: self.max_attempts,
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_retry_after: Duration::from_millis(self.max_retry_after_ms),
            breaker: BreakerConfig {
                failures: self.breaker_failures,
                cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_shared_http_defaults_and_retell() {
        let config = RetellConfig::default();
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.http(), HttpConfig::default());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let unknown = serde_json::from_str::<RetellConfig>(r#"{"base_uri": "x"}"#);
        assert!(unknown.is_err());
        let partial: RetellConfig =
            serde_json::from_str(r#"{"base_url": "http://127.0.0.1:9"}"#).expect("parse");
        assert_eq!(partial.timeout_ms, 10_000);
        let bad = RetellConfig {
            max_attempts: 0,
            ..RetellConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = RetellConfig {
            base_url: "api.retellai.com".into(),
            ..RetellConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
