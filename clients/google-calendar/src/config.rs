//! Settings of the Google Calendar adapter.
use std::time::Duration;

use maxai_adapter::HttpConfig;
use serde::Deserialize;

/// `[google_calendar]` in the platform config; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleCalendarConfig {
    /// Default `https://www.googleapis.com` (the fake's URL in tests and the sandbox).
    pub base_url: String,
    /// Per-attempt timeout in milliseconds; default 10000.
    pub timeout_ms: u64,
    /// Attempts of a call that is safe to repeat, the first included; default 3.
    pub max_attempts: u32,
}

impl Default for GoogleCalendarConfig {
    fn default() -> Self {
        GoogleCalendarConfig {
            base_url: "https://www.googleapis.com".to_owned(),
            timeout_ms: 10_000,
            max_attempts: 3,
        }
    }
}

impl GoogleCalendarConfig {
    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_millis(self.timeout_ms),
            max_attempts: self.max_attempts.max(1),
            ..HttpConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_google_and_unknown_keys_are_refused() {
        let config: GoogleCalendarConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config.base_url, "https://www.googleapis.com");
        assert_eq!(config.http().timeout, Duration::from_secs(10));
        assert!(serde_json::from_str::<GoogleCalendarConfig>(r#"{"base_uri":"x"}"#).is_err());
    }
}
