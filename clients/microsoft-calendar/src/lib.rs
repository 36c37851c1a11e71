//! Microsoft calendar adapter: the calendar port (`maxai.ports.calendar.v1.CalendarService`)
//! over Microsoft Graph v1.0 for the mailbox behind a connection (PROVIDERS.md §9).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | base URL (default `https://graph.microsoft.com`), timeouts, attempts |
//! | `api` | the tonic service: validate → convert → Graph call → map |
//! | [`convert`] | port messages ⇄ Graph JSON, Graph errors → (code, message) |
//! | [`tz`] | IANA ⇄ Windows zone names (CLDR windowsZones) |
//!
//! Fidelity choices worth knowing:
//! - the OAuth access token comes from the connection credential (IAM refreshes and rotates
//!   it); a 401 makes the plumbing force one refresh and try again;
//! - Graph takes wall times in a named zone: an instant is placed in the event's IANA zone and
//!   sent with the Windows name of that zone (IANA names without a Windows twin are sent as
//!   they are, which Graph also accepts); every call sends `Prefer: outlook.timezone="UTC"`,
//!   so answers are parsed as UTC and the event's zone is read from `originalStartTimeZone`;
//! - CreateEvent is idempotent: `transactionId` is derived from connection and
//!   `context.idempotency_key`, so Graph answers a retried create with the event it made;
//!   without a key the create is never retried after an ambiguous failure;
//! - ListEvents uses `calendarView` (recurrences expanded, needs both time_min and time_max);
//!   the page token is Graph's `@odata.nextLink`, followed only under the configured base URL
//!   so a forged token cannot send the bearer token elsewhere; free-text `query` is refused
//!   (calendarView cannot search) and `show_deleted` has no Graph equivalent;
//!   ListEventsResponse.time_zone stays empty (it would need MailboxSettings.Read);
//! - UpdateEvent is PATCH of the masked fields, with `If-Match: W/"<changeKey>"` when an etag
//!   is given (412 → ABORTED; then not retried); status CANCELLED is refused, since Graph
//!   cancels through a separate action that also mails the attendees;
//! - `send_updates` has no Graph knob: Graph always invites attendees;
//! - CheckAvailability is `getSchedule` (windows up to 42 days); scheduleItems give the
//!   intervals with Graph's finer statuses (tentative, oof, workingElsewhere); free ones are
//!   dropped.
#![forbid(unsafe_code)]

mod api;
pub mod config;
pub mod convert;
pub mod tz;

use std::sync::Arc;

use maxai_adapter::{CredentialSource, HttpConfig, ProviderHttp};
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarServiceServer;

pub use config::MicrosoftCalendarConfig;

/// The provider name in errors and metrics.
pub const PROVIDER: &str = "microsoft_graph";

/// The calendar port over Microsoft Graph; cheap to clone.
#[derive(Clone)]
pub struct MicrosoftCalendarAdapter {
    http: ProviderHttp,
    creds: Arc<dyn CredentialSource>,
}

impl MicrosoftCalendarAdapter {
    pub fn new(config: &MicrosoftCalendarConfig, creds: Arc<dyn CredentialSource>) -> Self {
        Self::with_http(&config.base_url, config.http(), creds)
    }

    /// With explicit HTTP settings (tests use short timeouts and breaker cooldowns).
    pub fn with_http(base_url: &str, http: HttpConfig, creds: Arc<dyn CredentialSource>) -> Self {
        MicrosoftCalendarAdapter {
            http: ProviderHttp::new(PROVIDER, base_url, http, convert::parse_error),
            creds,
        }
    }
}

/// The adapter as a tonic service, ready to mount.
pub fn server(
    adapter: MicrosoftCalendarAdapter,
) -> CalendarServiceServer<MicrosoftCalendarAdapter> {
    CalendarServiceServer::new(adapter)
}
