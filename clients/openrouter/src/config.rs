//! Configuration of the OpenRouter adapter (`[adapters.openrouter]` in the platform config).
use std::time::Duration;

use serde::Deserialize;

/// Every field has a documented default, so an empty section is a working configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenRouterConfig {
    /// API base. Default `https://openrouter.ai/api/v1`.
    pub base_url: String,
    /// Per-attempt timeout of short calls (`/models`), milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// Timeout of one completion, milliseconds: long generations take a while. Default 120000.
    pub completion_timeout_ms: u64,
    /// How long the model list (prices, capabilities) is reused, seconds. Default 3600.
    pub models_cache_secs: u64,
    /// Sent as `HTTP-Referer` (OpenRouter's app attribution); empty sends none. Default empty.
    pub app_url: String,
    /// Sent as `X-Title`; empty sends none. Default `MaxAI Platform`.
    pub app_title: String,
}

impl Default for OpenRouterConfig {
    fn default() -> Self {
        OpenRouterConfig {
            base_url: "https://openrouter.ai/api/v1".to_owned(),
            timeout_ms: 10_000,
            completion_timeout_ms: 120_000,
            models_cache_secs: 3600,
            app_url: String::new(),
            app_title: "MaxAI Platform".to_owned(),
        }
    }
}

impl OpenRouterConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn completion_timeout(&self) -> Duration {
        Duration::from_millis(self.completion_timeout_ms)
    }

    pub fn models_cache(&self) -> Duration {
        Duration::from_secs(self.models_cache_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_openrouter_and_unknown_keys_are_refused() {
        let c: OpenRouterConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(c, OpenRouterConfig::default());
        assert_eq!(c.base_url, "https://openrouter.ai/api/v1");
        assert!(serde_json::from_str::<OpenRouterConfig>(r#"{"base_urll": "x"}"#).is_err());
    }
}
