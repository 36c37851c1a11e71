//! GoHighLevel adapter: implements the CRM port (`maxai.ports.crm.v1.CrmService`) over the
//! LeadConnector API v2 (PROVIDERS.md §1.2) for one GHL location per connection.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL, `Version` header, timeouts, retries and breaker settings |
//! | [`api`] | the tonic service: check the connection, validate, convert, call GHL, map |
//! | [`convert`] | GHL JSON ⇄ port messages, page tokens |
//! | [`error`] | GHL error bodies (`message` as a string or an array) into provider errors |
//!
//! Fidelity choices worth knowing:
//! - the location is the connection credential's `external_account_id` (GHL `locationId`); a
//!   contact naming another location is refused before any call;
//! - every call sends `Authorization: Bearer`, `Version: 2021-07-28` and `Accept`; a 401 forces
//!   one credential refresh (the maxai-adapter plumbing does that), a 401 after it means the
//!   connection must be re-authorized (FAILED_PRECONDITION);
//! - retried on transient failures: GETs, `PUT /contacts/{id}` (whole-field writes) and
//!   `POST /contacts/upsert`; never a plain create or a note, since GHL has no idempotency key;
//! - tags: PROVIDERS.md does not document GHL's tag endpoints, so add/remove tags are applied
//!   by reading the contact and writing the merged list with `PUT` (with `tags` in the mask,
//!   the given list is the base and nothing is read). Two concurrent tag changes
//!   to one contact can therefore lose one of them;
//! - `context.idempotency_key` is not sent: GHL has no idempotency key, so retried or
//!   event-driven creates should set `upsert`;
//! - GHL answers an unknown contact with 400 "Contact not found" and a duplicate create with
//!   400 "This location does not allow duplicated contacts."; these become NOT_FOUND and
//!   ALREADY_EXISTS, everything else follows the shared status mapping;
//! - opportunity values carry the currency from the credential's `config.currency` when set
//!   (GHL returns a bare number in the location's currency), else an empty currency code.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod convert;
pub mod error;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::crm::v1::crm_service_server::CrmServiceServer;

pub use config::GhlConfig;

/// The CRM port for GoHighLevel connections.
pub struct GhlAdapter {
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
    api_version: String,
}

impl GhlAdapter {
    pub fn new(config: &GhlConfig, creds: Arc<dyn CredentialSource>) -> Self {
        Self::with_http_config(
            &config.base_url,
            &config.api_version,
            config.http_config(),
            creds,
        )
    }

    /// With explicit HTTP settings (tests use short timeouts and cooldowns).
    pub fn with_http_config(
        base_url: &str,
        api_version: &str,
        http: HttpConfig,
        creds: Arc<dyn CredentialSource>,
    ) -> Self {
        GhlAdapter {
            http: ProviderHttp::new(error::PROVIDER, base_url, http, error::parse_error),
            creds,
            api_version: api_version.to_owned(),
        }
    }
}

/// The adapter as a tonic service, ready to mount.
pub fn server(adapter: GhlAdapter) -> CrmServiceServer<GhlAdapter> {
    CrmServiceServer::new(adapter)
}
