//! Settings of the GHL adapter; every key has a documented default, unknown keys are refused.
use std::time::Duration;

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::HttpConfig;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GhlConfig {
    /// API base URL. Default `https://services.leadconnectorhq.com`.
    pub base_url: String,
    /// `Version` header GHL requires. Default `2021-07-28` (contacts and opportunities).
    pub api_version: String,
    /// Timeout of one attempt, in milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// Connect timeout, in milliseconds. Default 3000.
    pub connect_timeout_ms: u64,
    /// Attempts of a retried (safe) call, the first included. Default 3.
    pub max_attempts: u32,
    /// Backoff bounds between attempts (full jitter), in milliseconds. Defaults 100 and 2000.
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A `Retry-After` longer than this is returned to the caller instead of waited out, in
    /// seconds. Default 30.
    pub max_retry_after_secs: u64,
    /// Consecutive transient failures that open the circuit of a connection. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast, in seconds. Default 30.
    pub breaker_cooldown_secs: u64,
}

impl Default for GhlConfig {
    fn default() -> Self {
        GhlConfig {
            base_url: "https://services.leadconnectorhq.com".to_owned(),
            api_version: "2021-07-28".to_owned(),
            timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_attempts: 3,
            min_backoff_ms: 100,
            max_backoff_ms: 2_000,
            max_retry_after_secs: 30,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
        }
    }
}

impl GhlConfig {
    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_attempts: self.max_attempts.max(1),
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_retry_after: Duration::from_secs(self.max_retry_after_secs),
            breaker: BreakerConfig {
                failures: self.breaker_failures.max(1),
                cooldown: Duration::from_secs(self.breaker_cooldown_secs),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_shared_http_defaults_and_unknown_keys_fail() {
        let config: GhlConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, GhlConfig::default());
        assert_eq!(config.http_config(), HttpConfig::default());
        assert!(serde_json::from_str::<GhlConfig>(r#"{"base_urll":"x"}"#).is_err());
        let config: GhlConfig =
            serde_json::from_str(r#"{"base_url":"http://127.0.0.1:1","max_attempts":1}"#)
                .expect("partial");
        assert_eq!(config.base_url, "http://127.0.0.1:1");
        assert_eq!(config.http_config().max_attempts, 1);
    }
}
