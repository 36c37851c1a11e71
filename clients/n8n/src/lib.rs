//! n8n adapter: implements the workflow port (`maxai.ports.workflow.v1.WorkflowService`) over
//! n8n's public REST API and its production webhook triggers (PROVIDERS.md §7).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | timeouts, the webhook prefix, the correlation field, execution lookup pacing |
//! | [`api`] | the tonic service: validate → convert → provider call → map |
//! | [`convert`] | n8n JSON ⇄ port messages (workflows, executions, statuses, Struct ⇄ JSON) |
//!
//! Fidelity choices:
//! - n8n is self-hosted: the instance URL is the connection credential's `base_url`, the key
//!   its `api_key`, sent as `X-N8N-API-KEY`;
//! - only calls that are safe to repeat are retried after an ambiguous failure: GETs, the PUT of
//!   a whole workflow and (de)activation. Creating a workflow and triggering a webhook are not,
//!   since n8n takes no idempotency key and a repeat would duplicate the workflow or the run;
//! - ExecuteWorkflow posts to `{base}/webhook/{path}` with a correlation id (the call's
//!   idempotency key, or a fresh UUID) in the payload field named by
//!   [`config::N8nConfig::correlation_field`] and in `X-Correlation-Id`. n8n's "respond
//!   immediately" answer names no execution, so the adapter then lists recent executions with
//!   their data and picks the one whose data holds that id (a few tries, briefly paced); when
//!   none turns up in time the execution id is left empty, as the port allows (this needs the
//!   instance to save execution data, n8n's default; with `saveDataSuccessExecution: none` a
//!   finished run cannot be found);
//! - UpdateWorkflow reads the workflow, merges the masked fields and PUTs it whole (n8n replaces
//!   workflows), then activates or deactivates when `active` is masked and differs.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod convert;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::workflow::v1::workflow_service_server::WorkflowServiceServer;

pub use config::N8nConfig;

/// Provider name in errors, metrics and breaker keys.
pub const PROVIDER: &str = "n8n";

/// The workflow port over n8n.
pub struct N8nAdapter {
    config: N8nConfig,
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
}

impl N8nAdapter {
    /// With the default resilience settings (timeouts from `config`).
    pub fn new(config: N8nConfig, creds: Arc<dyn CredentialSource>) -> Self {
        let http = HttpConfig {
            timeout: config.timeout(),
            ..HttpConfig::default()
        };
        Self::with_http(config, http, creds)
    }

    /// With explicit retry, backoff and breaker settings (tests use short ones).
    pub fn with_http(
        config: N8nConfig,
        http: HttpConfig,
        creds: Arc<dyn CredentialSource>,
    ) -> Self {
        // No fixed base URL: every request is built on the connection's own instance URL.
        let http = ProviderHttp::new(PROVIDER, String::new(), http, convert::parse_error);
        N8nAdapter {
            config,
            http,
            creds,
        }
    }
}

/// The tonic server of the adapter, ready to be added to a router.
pub fn server(adapter: N8nAdapter) -> WorkflowServiceServer<N8nAdapter> {
    WorkflowServiceServer::new(adapter)
}
