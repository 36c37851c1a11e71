//! Google Calendar adapter: the calendar port (`maxai.ports.calendar.v1.CalendarService`) over
//! Google Calendar API v3 for the Google account behind a connection (PROVIDERS.md §8.1).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL (default `https://www.googleapis.com`), timeouts, attempts |
//! | `api` | the tonic service: validate → convert → Google call → map |
//! | [`convert`] | port messages ⇄ Google JSON, Google errors → (reason, message) |
//!
//! Fidelity choices worth knowing:
//! - the OAuth access token comes from the connection credential (IAM refreshes it); a 401
//!   makes the plumbing force one refresh and try again;
//! - CreateEvent is idempotent: with `context.idempotency_key` the Google event id is the
//!   base32hex SHA-256 of connection and key, so a retry meets Google's 409 `duplicate`, which
//!   is answered with the event already made (fetched by that id); without a key the create is
//!   never retried after an ambiguous failure;
//! - lists ask for `singleEvents=true&orderBy=startTime`, so recurring events come back as
//!   instances ordered by start, as the port promises;
//! - times are sent as UTC instants with the event's IANA `timeZone`, which Google keeps for
//!   display and recurrence; zone names are checked before any call;
//! - UpdateEvent is PATCH of the masked fields; with an etag it sends `If-Match` (412 →
//!   ABORTED) and is not retried, since a retry after a lost answer would meet its own change;
//! - Google's 403 `rateLimitExceeded` / `userRateLimitExceeded` are RESOURCE_EXHAUSTED like 429.
#![forbid(unsafe_code)]

mod api;
pub mod config;
pub mod convert;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarServiceServer;

pub use config::GoogleCalendarConfig;

/// The provider name in errors and metrics.
pub const PROVIDER: &str = "google_calendar";

/// The calendar port over Google Calendar; cheap to clone.
#[derive(Clone)]
pub struct GoogleCalendarAdapter {
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
}

impl GoogleCalendarAdapter {
    pub fn new(config: &GoogleCalendarConfig, creds: Arc<dyn CredentialSource>) -> Self {
        Self::with_http(&config.base_url, config.http(), creds)
    }

    /// With explicit HTTP settings (tests use short timeouts and breaker cooldowns).
    pub fn with_http(base_url: &str, http: HttpConfig, creds: Arc<dyn CredentialSource>) -> Self {
        GoogleCalendarAdapter {
            http: ProviderHttp::new(PROVIDER, base_url, http, convert::parse_error),
            creds,
        }
    }
}

/// The adapter as a tonic service, ready to mount.
pub fn server(adapter: GoogleCalendarAdapter) -> CalendarServiceServer<GoogleCalendarAdapter> {
    CalendarServiceServer::new(adapter)
}
