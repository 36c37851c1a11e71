//! The calendar port served once for every calendar connection: each call goes to the Google
//! or the Microsoft adapter according to the `provider` of the connection's credential, read
//! through the same [`CredentialSource`] the adapters use (cached, so the lookup costs nothing
//! extra in production). Any other provider is FAILED_PRECONDITION: the caller named a
//! connection that is not a calendar.
//!
//! The router checks the connection against the caller's tenant before it looks anything up;
//! the chosen adapter then runs its own checks on the untouched request.
#![forbid(unsafe_code)]

use std::sync::Arc;

use maxai_adapter::{Connection, CredentialSource};
use maxai_google_calendar::GoogleCalendarAdapter;
use maxai_kit::{Error, ErrorKind};
use maxai_microsoft_calendar::MicrosoftCalendarAdapter;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::{
    CalendarService, CalendarServiceServer,
};
use maxai_proto::maxai::ports::calendar::v1::{
    CheckAvailabilityRequest, CheckAvailabilityResponse, CreateEventRequest, CreateEventResponse,
    ListEventsRequest, ListEventsResponse, UpdateEventRequest, UpdateEventResponse,
};
use tonic::{Request, Response, Status};

/// One CalendarService over both calendar providers.
#[derive(Clone)]
pub struct CalendarRouter {
    creds: Arc<dyn CredentialSource>,
    google: GoogleCalendarAdapter,
    microsoft: MicrosoftCalendarAdapter,
}

enum Target<'a> {
    Google(&'a GoogleCalendarAdapter),
    Microsoft(&'a MicrosoftCalendarAdapter),
}

impl CalendarRouter {
    pub fn new(
        creds: Arc<dyn CredentialSource>,
        google: GoogleCalendarAdapter,
        microsoft: MicrosoftCalendarAdapter,
    ) -> Self {
        CalendarRouter {
            creds,
            google,
            microsoft,
        }
    }

    async fn target<T>(
        &self,
        request: &Request<T>,
        context: Option<&CallContext>,
    ) -> Result<Target<'_>, Status> {
        let connection = Connection::of(request, context)?;
        let credential = self.creds.credential(&connection.name, false).await?;
        match credential.provider() {
            ConnectionProvider::GoogleCalendar => Ok(Target::Google(&self.google)),
            ConnectionProvider::MicrosoftCalendar => Ok(Target::Microsoft(&self.microsoft)),
            other => Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "connection {} is a {} connection, not a calendar",
                    connection.name,
                    other.as_str_name()
                ),
            )
            .into()),
        }
    }
}

/// The router as a tonic service, ready to mount.
pub fn server(router: CalendarRouter) -> CalendarServiceServer<CalendarRouter> {
    CalendarServiceServer::new(router)
}

#[tonic::async_trait]
impl CalendarService for CalendarRouter {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        match self
            .target(&request, request.get_ref().context.as_ref())
            .await?
        {
            Target::Google(a) => a.list_events(request).await,
            Target::Microsoft(a) => a.list_events(request).await,
        }
    }

    async fn create_event(
        &self,
        request: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        match self
            .target(&request, request.get_ref().context.as_ref())
            .await?
        {
            Target::Google(a) => a.create_event(request).await,
            Target::Microsoft(a) => a.create_event(request).await,
        }
    }

    async fn update_event(
        &self,
        request: Request<UpdateEventRequest>,
    ) -> Result<Response<UpdateEventResponse>, Status> {
        match self
            .target(&request, request.get_ref().context.as_ref())
            .await?
        {
            Target::Google(a) => a.update_event(request).await,
            Target::Microsoft(a) => a.update_event(request).await,
        }
    }

    async fn check_availability(
        &self,
        request: Request<CheckAvailabilityRequest>,
    ) -> Result<Response<CheckAvailabilityResponse>, Status> {
        match self
            .target(&request, request.get_ref().context.as_ref())
            .await?
        {
            Target::Google(a) => a.check_availability(request).await,
            Target::Microsoft(a) => a.check_availability(request).await,
        }
    }
}
