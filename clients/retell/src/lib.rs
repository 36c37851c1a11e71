//! Retell AI adapter: the voice port (`maxai.ports.voice.v1.VoiceService`) over Retell's REST
//! API (PROVIDERS.md §2), for the Retell account behind each request's connection.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL (default `https://api.retellai.com`), timeouts, retries, breaker |
//! | [`api`] | the tonic service: validate → Retell calls → port answer |
//! | [`convert`] | Retell JSON ⇄ port messages, costs in cents → exact `Money` |
//!
//! Choices worth knowing:
//! - an agent's prompt lives in a Retell LLM: CreateAgent creates the LLM, then the agent on it
//!   (and deletes the LLM again if the agent cannot be created); `llm.llm_id` reuses an LLM as
//!   it is stored, so it cannot be combined with other `llm` fields;
//! - UpdateAgent sends exactly the masked paths (an emptied field as `null`: back to Retell's
//!   default); with an empty mask it sets every agent field, and every LLM field too unless
//!   `agent.llm` is absent, so a whole-agent update never wipes a prompt it did not carry;
//! - Retell documents no idempotency key, so creates are never repeated after an ambiguous
//!   failure (only after a 429 or a refused connection, when Retell did nothing); GETs and the
//!   PATCH updates, which are idempotent, are retried with backoff;
//! - Retell answers 422 "Cannot find requested asset under given api key." for unknown ids;
//!   that is NOT_FOUND here, every other 422 INVALID_ARGUMENT;
//! - usage: `voice.call.seconds` (Retell's billed whole seconds) carries the call's combined
//!   cost, then one `voice.call.product.<product>` item per product Retell itemizes, a
//!   breakdown of the same seconds; `provider_cost` is the combined cost, in USD.
#![forbid(unsafe_code)]

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::voice::v1::voice_service_server::VoiceServiceServer;

pub mod api;
pub mod config;
pub mod convert;

pub use config::RetellConfig;

/// Provider name in errors, metrics and breaker keys.
pub const PROVIDER: &str = "retell";

/// The voice port over Retell.
pub struct RetellAdapter {
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
}

impl RetellAdapter {
    pub fn new(config: &RetellConfig, creds: Arc<dyn CredentialSource>) -> Self {
        Self::with_http(&config.base_url, config.http(), creds)
    }

    /// An adapter with explicit HTTP behaviour (tests shorten timeouts and cooldowns).
    pub fn with_http(base_url: &str, http: HttpConfig, creds: Arc<dyn CredentialSource>) -> Self {
        RetellAdapter {
            http: ProviderHttp::new(PROVIDER, base_url, http, parse_error),
            creds,
        }
    }
}

/// The tonic server of the adapter, to mount on the platform's router.
pub fn server(adapter: RetellAdapter) -> VoiceServiceServer<RetellAdapter> {
    VoiceServiceServer::new(adapter)
}

/// Retell's error body is `{"status":"error","message":...}`; it has no error code of its own.
pub fn parse_error(_status: u16, body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct RetellError {
        message: Option<String>,
    }
    let message = match serde_json::from_slice::<RetellError>(body) {
        Ok(RetellError { message }) => message.unwrap_or_default(),
        // A proxy's page rather than Retell's JSON: keep its text, the adapter crate caps it.
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    (String::new(), message)
}
