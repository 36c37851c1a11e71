//! Settings of the Microsoft calendar adapter.
use std::time::Duration;

use maxai_adapter::HttpConfig;
use serde::Deserialize;

/// `[microsoft_calendar]` in the platform config; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MicrosoftCalendarConfig {
    /// Default `https://graph.microsoft.com` (the fake's URL in tests and the sandbox).
    pub base_url: String,
    /// Per-attempt timeout in milliseconds; default 10000.
    pub timeout_ms: u64,
    /// Attempts of a call that is safe to repeat, the first included; default 3.
    pub max_attempts: u32,
}

impl Default for MicrosoftCalendarConfig {
    fn default() -> Self {
        MicrosoftCalendarConfig {
            base_url: "https://graph.microsoft.com".to_owned(),
            timeout_ms: 10_000,
            max_attempts: 3,
        }
    }
}

impl MicrosoftCalendarConfig {
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
    fn defaults_point_at_graph_and_unknown_keys_are_refused() {
        let config: MicrosoftCalendarConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config.base_url, "https://graph.microsoft.com");
        assert_eq!(config.http().timeout, Duration::from_secs(10));
        assert!(serde_json::from_str::<MicrosoftCalendarConfig>(r#"{"base_uri":"x"}"#).is_err());
    }
}
