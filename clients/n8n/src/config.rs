//! Configuration of the n8n adapter (`[adapters.n8n]` in the platform config).
use std::time::Duration;

use serde::Deserialize;

/// Every field has a documented default, so an empty section is a working configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct N8nConfig {
    /// Per-attempt timeout of REST API calls, milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// How long ExecuteWorkflow waits for the webhook's answer when the request sets no
    /// timeout, milliseconds. Default 30000.
    pub webhook_timeout_ms: u64,
    /// Longest webhook wait a request may ask for, milliseconds. Default 300000.
    pub max_webhook_timeout_ms: u64,
    /// Production webhook prefix (n8n's `N8N_ENDPOINT_WEBHOOK`). Default `webhook`.
    pub webhook_prefix: String,
    /// Payload field that carries the correlation id. Default `maxaiCorrelationId`.
    pub correlation_field: String,
    /// Execution listings tried to find a webhook run's execution id. Default 5.
    pub lookup_attempts: u32,
    /// Pause between those listings, milliseconds. Default 200.
    pub lookup_interval_ms: u64,
    /// Recent executions read per listing. Default 20.
    pub lookup_page_size: u32,
}

impl Default for N8nConfig {
    fn default() -> Self {
        N8nConfig {
            timeout_ms: 10_000,
            webhook_timeout_ms: 30_000,
            max_webhook_timeout_ms: 300_000,
            webhook_prefix: "webhook".to_owned(),
            correlation_field: "maxaiCorrelationId".to_owned(),
            lookup_attempts: 5,
            lookup_interval_ms: 200,
            lookup_page_size: 20,
        }
    }
}

impl N8nConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_millis(self.webhook_timeout_ms)
    }

    pub fn max_webhook_timeout(&self) -> Duration {
        Duration::from_millis(self.max_webhook_timeout_ms)
    }

    pub fn lookup_interval(&self) -> Duration {
        Duration::from_millis(self.lookup_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: N8nConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(c, N8nConfig::default());
        assert_eq!(c.webhook_prefix, "webhook");
        assert!(serde_json::from_str::<N8nConfig>(r#"{"timeout": 1}"#).is_err());
    }
}
