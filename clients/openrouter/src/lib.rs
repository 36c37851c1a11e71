//! OpenRouter adapter: implements the LLM port (`maxai.ports.llm.v1.LlmService`) over
//! OpenRouter's OpenAI-compatible API (PROVIDERS.md §6).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL, timeouts, attribution headers, model-list cache lifetime |
//! | [`api`] | the tonic service: validate → convert → provider call → map |
//! | [`convert`] | OpenRouter JSON ⇄ port messages, usage and exact money |
//! | [`models`] | the cached `/models` list: known models, prices, structured-output support |
//!
//! Fidelity choices:
//! - completions are never repeated after an ambiguous failure (5xx, timeout): they are not
//!   idempotent, OpenRouter has no idempotency key and every attempt costs money. A 429 or a
//!   refused connection is still retried by the plumbing, because the provider did nothing.
//!   `GET /models` is retried and cached ([`config::OpenRouterConfig::models_cache_secs`]);
//! - models are checked against the cached list before any completion, so an unknown model is
//!   a field violation that costs nothing (when the list cannot be fetched the check is skipped
//!   and OpenRouter's own 400 answers);
//! - an error reported with HTTP 200 before any content (`{"error": ...}` body) is mapped like
//!   the same status would be; one after content started is `FINISH_REASON_ERROR` with the
//!   partial text for GenerateText and PROVIDER_ERROR for GenerateStructured;
//! - costs are read from the JSON text of `usage.cost` (USD credits) into exact `Money`.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod convert;
pub mod models;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::llm::v1::llm_service_server::LlmServiceServer;

pub use config::OpenRouterConfig;

/// Provider name in errors, metrics and breaker keys.
pub const PROVIDER: &str = "openrouter";

/// The LLM port over OpenRouter.
pub struct OpenRouterAdapter {
    config: OpenRouterConfig,
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
    models: models::ModelCache,
}

impl OpenRouterAdapter {
    /// With the default resilience settings (timeouts from `config`).
    pub fn new(config: OpenRouterConfig, creds: Arc<dyn CredentialSource>) -> Self {
        let http = HttpConfig {
            timeout: config.timeout(),
            ..HttpConfig::default()
        };
        Self::with_http(config, http, creds)
    }

    /// With explicit retry, backoff and breaker settings (tests use short ones).
    pub fn with_http(
        config: OpenRouterConfig,
        http: HttpConfig,
        creds: Arc<dyn CredentialSource>,
    ) -> Self {
        let models = models::ModelCache::new(config.models_cache());
        let http = ProviderHttp::new(
            PROVIDER,
            config.base_url.clone(),
            http,
            convert::parse_error,
        );
        OpenRouterAdapter {
            config,
            http,
            creds,
            models,
        }
    }
}

/// The tonic server of the adapter, ready to be added to a router.
pub fn server(adapter: OpenRouterAdapter) -> LlmServiceServer<OpenRouterAdapter> {
    LlmServiceServer::new(adapter)
}
