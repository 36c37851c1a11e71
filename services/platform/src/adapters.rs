//! The integration ports served by this process: one adapter per port (the calendar port routed
//! to Google or Microsoft by the connection), each taking its connection's credential from IAM
//! over gRPC with the platform's service identity.
use std::sync::Arc;

use maxai_adapter::{credentials::ServiceToken, CredentialSource, IamCredentials};
use maxai_kit::shared_state::Cache;
use serde::Deserialize;

/// gRPC services of the ports, for health and reflection.
pub const SERVICE_NAMES: [&str; 6] = [
    "maxai.ports.crm.v1.CrmService",
    "maxai.ports.messaging.v1.MessagingService",
    "maxai.ports.voice.v1.VoiceService",
    "maxai.ports.llm.v1.LlmService",
    "maxai.ports.workflow.v1.WorkflowService",
    "maxai.ports.calendar.v1.CalendarService",
];

/// `[adapters]`: where each provider is reached, and whether to use the sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptersConfig {
    /// Start faithful fake providers on loopback and point the adapters and the OAuth apps at
    /// them, so the platform runs with no provider account. `maxai up` only; a process that
    /// has provider OAuth apps configured (iam.connections) never uses the sandbox.
    pub sandbox: bool,
    pub ghl: maxai_ghl::GhlConfig,
    pub twilio: maxai_twilio::TwilioConfig,
    pub retell: maxai_retell::RetellConfig,
    pub openrouter: maxai_openrouter::OpenRouterConfig,
    pub n8n: maxai_n8n::N8nConfig,
    pub google_calendar: maxai_google_calendar::GoogleCalendarConfig,
    pub microsoft_calendar: maxai_microsoft_calendar::MicrosoftCalendarConfig,
}

impl Default for AdaptersConfig {
    fn default() -> Self {
        AdaptersConfig {
            sandbox: true,
            ghl: Default::default(),
            twilio: Default::default(),
            retell: Default::default(),
            openrouter: Default::default(),
            n8n: Default::default(),
            google_calendar: Default::default(),
            microsoft_calendar: Default::default(),
        }
    }
}

/// Adds every port's server to `routes`; credentials come from IAM at `iam` with `token`;
/// `idempotency` keeps the first result per idempotency key (durable: Redis, or the adapters'
/// database without it).
pub fn add_to(
    routes: &mut tonic::service::RoutesBuilder,
    config: &AdaptersConfig,
    idempotency: Arc<dyn Cache>,
    iam: tonic::transport::Channel,
    token: ServiceToken,
    max_message_bytes: usize,
) {
    let creds: Arc<dyn CredentialSource> = Arc::new(IamCredentials::new(iam, token));
    routes.add_service(
        maxai_ghl::server(maxai_ghl::GhlAdapter::new(&config.ghl, creds.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    );
    routes.add_service(
        maxai_twilio::server(maxai_twilio::TwilioAdapter::new(
            &config.twilio,
            creds.clone(),
            idempotency,
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes),
    );
    routes.add_service(
        maxai_retell::server(maxai_retell::RetellAdapter::new(
            &config.retell,
            creds.clone(),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes),
    );
    routes.add_service(
        maxai_openrouter::server(maxai_openrouter::OpenRouterAdapter::new(
            config.openrouter.clone(),
            creds.clone(),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes),
    );
    routes.add_service(
        maxai_n8n::server(maxai_n8n::N8nAdapter::new(
            config.n8n.clone(),
            creds.clone(),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes),
    );
    let calendar = maxai_calendar_router::CalendarRouter::new(
        creds.clone(),
        maxai_google_calendar::GoogleCalendarAdapter::new(&config.google_calendar, creds.clone()),
        maxai_microsoft_calendar::MicrosoftCalendarAdapter::new(&config.microsoft_calendar, creds),
    );
    routes.add_service(
        maxai_calendar_router::server(calendar)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    );
}
