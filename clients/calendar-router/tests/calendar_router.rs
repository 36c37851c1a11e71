//! The calendar router against both calendar fakes: each call reaches the provider of its
//! connection's credential, and a connection of any other provider is refused before anything
//! is sent.

use std::time::Duration;

use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_calendar_router::CalendarRouter;
use maxai_fakes::google_calendar::FakeGoogleCalendar;
use maxai_fakes::microsoft::{FakeMicrosoft, FakeMicrosoftConfig};
use maxai_fakes::{FakeGoogle, FakeGoogleConfig, FakeGoogleUser};
use maxai_google_calendar::GoogleCalendarAdapter;
use maxai_kit::auth::Principal;
use maxai_microsoft_calendar::MicrosoftCalendarAdapter;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarService;
use maxai_proto::maxai::ports::calendar::v1::{
    CheckAvailabilityRequest, CreateEventRequest, Event, ListEventsRequest,
};
use prost_types::Timestamp;
use tonic::{Code, Request};

const GOOGLE: &str = "tenants/acme/clients/dental/connections/gcal";
const OUTLOOK: &str = "tenants/acme/clients/dental/connections/outlook";
const TWILIO: &str = "tenants/acme/clients/dental/connections/sms";
const ALICE: &str = "alice@example.com";
const T0: i64 = 1_767_625_200;

struct Env {
    _google: FakeGoogle,
    calendar: FakeGoogleCalendar,
    microsoft: FakeMicrosoft,
    router: CalendarRouter,
}

async fn env() -> Env {
    let google = FakeGoogle::start(FakeGoogleConfig::default()).await;
    google.add_user(FakeGoogleUser::new("1001", ALICE));
    let calendar = FakeGoogleCalendar::start(&google).await;
    let microsoft = FakeMicrosoft::start(FakeMicrosoftConfig::default()).await;
    microsoft.add_user(ALICE);

    let creds = StaticCredentials::new();
    let google_token = google
        .issue_access_token(ALICE, &["https://www.googleapis.com/auth/calendar"])
        .unwrap();
    let graph_token = microsoft
        .issue_access_token(ALICE, &["Calendars.ReadWrite"])
        .unwrap();
    for (connection, provider, token) in [
        (GOOGLE, ConnectionProvider::GoogleCalendar, google_token),
        (OUTLOOK, ConnectionProvider::MicrosoftCalendar, graph_token),
        (TWILIO, ConnectionProvider::Twilio, String::new()),
    ] {
        creds.insert(ConnectionCredential {
            connection: connection.into(),
            provider: provider.into(),
            access_token: token,
            api_key: "twilio-auth-token".into(),
            ..Default::default()
        });
    }
    let http = HttpConfig {
        timeout: Duration::from_secs(2),
        ..HttpConfig::default()
    };
    let router = CalendarRouter::new(
        creds.clone(),
        GoogleCalendarAdapter::with_http(calendar.base_url(), http.clone(), creds.clone()),
        MicrosoftCalendarAdapter::with_http(microsoft.base_url(), http, creds),
    );
    Env {
        _google: google,
        calendar,
        microsoft,
        router,
    }
}

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Principal {
        subject: "tenants/acme/users/ann".into(),
        tenant: "acme".into(),
        token_id: "t1".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    request
}

fn context(connection: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: connection.into(),
        idempotency_key: "exec-1/step-1".into(),
    })
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn create(connection: &str) -> Request<CreateEventRequest> {
    request(CreateEventRequest {
        context: context(connection),
        calendar_id: String::new(),
        event: Some(Event {
            summary: format!("via {connection}"),
            start_time: ts(T0),
            end_time: ts(T0 + 1800),
            time_zone: "Europe/Paris".into(),
            ..Default::default()
        }),
        send_updates: 0,
        add_conference: false,
    })
}

fn list(connection: &str) -> Request<ListEventsRequest> {
    request(ListEventsRequest {
        context: context(connection),
        time_min: ts(T0 - 3600),
        time_max: ts(T0 + 3600),
        ..Default::default()
    })
}

#[tokio::test]
async fn each_call_reaches_the_provider_of_its_connection() {
    let env = env().await;
    let g = env
        .router
        .create_event(create(GOOGLE))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(env.calendar.events(ALICE).len(), 1);
    assert!(env.microsoft.events(ALICE).is_empty());
    assert_eq!(g.time_zone, "Europe/Paris");

    let m = env
        .router
        .create_event(create(OUTLOOK))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(env.microsoft.events(ALICE).len(), 1);
    assert_eq!(env.calendar.events(ALICE).len(), 1);
    assert_eq!(m.time_zone, "Europe/Paris");
    assert_eq!(m.start_time, ts(T0));

    let google_list = env
        .router
        .list_events(list(GOOGLE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(google_list.events.len(), 1);
    assert_eq!(google_list.events[0].summary, format!("via {GOOGLE}"));
    let graph_list = env
        .router
        .list_events(list(OUTLOOK))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(graph_list.events.len(), 1);
    assert_eq!(graph_list.events[0].summary, format!("via {OUTLOOK}"));

    let check = |connection: &str| {
        request(CheckAvailabilityRequest {
            context: context(connection),
            calendar_ids: vec![ALICE.into()],
            time_min: ts(T0 - 3600),
            time_max: ts(T0 + 3600),
            time_zone: String::new(),
        })
    };
    for connection in [GOOGLE, OUTLOOK] {
        let answer = env
            .router
            .check_availability(check(connection))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.calendars[0].busy.len(), 1, "{connection}");
        assert_eq!(
            answer.calendars[0].busy[0].start_time,
            ts(T0),
            "{connection}"
        );
    }
}

#[tokio::test]
async fn other_providers_and_unknown_connections_are_refused_before_any_call() {
    let env = env().await;
    let err = env.router.create_event(create(TWILIO)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("CONNECTION_PROVIDER_TWILIO"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("twilio-auth-token"));

    let err = env
        .router
        .list_events(list("tenants/acme/clients/dental/connections/nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut foreign = list(GOOGLE);
    foreign.extensions_mut().insert(Principal {
        subject: "tenants/other/users/eve".into(),
        tenant: "other".into(),
        token_id: "t2".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    let err = env.router.list_events(foreign).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    assert!(env.calendar.requests().is_empty());
    assert!(env.microsoft.requests().is_empty());
}
