//! Twilio adapter: the messaging port (`maxai.ports.messaging.v1.MessagingService`: SendSms,
//! MakeCall, GetMessageStatus) over Twilio's REST API 2010-04-01 (PROVIDERS.md §3).
//!
//! The connection's credential (from IAM) carries the Account SID in `external_account_id` and
//! the auth token in `api_key`, or an API key: `key_id` = `SK…` and `api_key` = its secret; both
//! go out as HTTP Basic. Bodies are form-encoded, answers JSON.
//!
//! Choices worth knowing:
//! - Twilio has no idempotency key, so SendSms and MakeCall are never repeated after an
//!   ambiguous failure (5xx, timeout) and are deduplicated on `context.idempotency_key`: the
//!   first result is kept 24 h in the shared cache and answers repeats ([`dedupe`]). A 429 or
//!   a refused connection is still retried: Twilio did nothing then. GetMessageStatus is a GET
//!   and retried with backoff.
//! - Prices: Twilio reports charges as negative decimal strings; the port gets positive exact
//!   `Money` (never a float), and SendSms reports `sms.segments` usage with the cost when
//!   Twilio already knows it (usually only later, through GetMessageStatus).
//! - Everything the caller can get wrong (E.164 numbers, missing body, SIDs, callback URLs,
//!   ranges) is refused with field violations before Twilio is called; a SID must have a SID's
//!   shape because it goes into the URL path.
//! - Twilio 400s that the connection's owner must fix (21610 opted-out recipient, 21408 region
//!   not enabled, …) are FAILED_PRECONDITION; other 400s INVALID_ARGUMENT; a refused
//!   credential is retried once after a forced refresh, then FAILED_PRECONDITION.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL, timeouts, retries, breaker and dedupe windows |
//! | [`api`] | the tonic `MessagingService` implementation |
//! | [`convert`] | Twilio JSON ⇄ port messages, statuses, prices, dates, error bodies |
//! | [`dedupe`] | at-most-once SendSms/MakeCall per idempotency key |
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod convert;
pub mod dedupe;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, ProviderHttp};
use maxai_kit::shared_state::Cache;
use maxai_proto::maxai::ports::messaging::v1::messaging_service_server::MessagingServiceServer;

pub use config::TwilioConfig;

/// Provider name in errors, metrics and breaker keys.
pub const PROVIDER: &str = "twilio";

/// The messaging port over Twilio.
pub struct TwilioAdapter {
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
    dedupe: dedupe::Dedupe,
}

impl TwilioAdapter {
    /// `cache` keeps the first result per idempotency key: Redis in production, so every
    /// replica sees it.
    pub fn new(
        config: &TwilioConfig,
        creds: Arc<dyn CredentialSource>,
        cache: Arc<dyn Cache>,
    ) -> Self {
        TwilioAdapter {
            http: ProviderHttp::new(
                PROVIDER,
                config.base_url.clone(),
                config.http(),
                convert::parse_error,
            ),
            creds,
            dedupe: dedupe::Dedupe::new(cache, config.dedupe_ttl(), config.in_flight_ttl()),
        }
    }
}

/// The adapter as a tonic service, ready to add to a server.
pub fn server(adapter: TwilioAdapter) -> MessagingServiceServer<TwilioAdapter> {
    MessagingServiceServer::new(adapter)
}
