//! The Google Calendar adapter against the Google Calendar fake over loopback HTTP: every RPC,
//! idempotent creates, error mapping, retries, Retry-After, timeouts, the circuit breaker, the
//! one forced credential refresh on 401, and input refused before any call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::google_calendar::FakeGoogleCalendar;
use maxai_fakes::harness::Failure;
use maxai_fakes::{FakeGoogle, FakeGoogleConfig, FakeGoogleUser};
use maxai_google_calendar::convert::event_id_for;
use maxai_google_calendar::GoogleCalendarAdapter;
use maxai_kit::auth::Principal;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarService;
use maxai_proto::maxai::ports::calendar::v1::{
    Attendee, AttendeeRole, BusyStatus, CheckAvailabilityRequest, CreateEventRequest, Date, Event,
    EventStatus, ListEventsRequest, ResponseStatus, SendUpdates, UpdateEventRequest,
};
use prost_types::{FieldMask, Timestamp};
use serde_json::json;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/gcal";
const ALICE: &str = "alice@example.com";
const SCOPE: &str = "https://www.googleapis.com/auth/calendar";
// 2026-01-05T15:00:00Z, 10:00 in New York.
const T0: i64 = 1_767_625_200;

struct Env {
    google: FakeGoogle,
    fake: FakeGoogleCalendar,
    creds: Arc<StaticCredentials>,
    adapter: GoogleCalendarAdapter,
    token: String,
}

fn http_config() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        max_attempts: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        breaker: BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(200),
        },
    }
}

fn credential(token: &str) -> ConnectionCredential {
    ConnectionCredential {
        connection: CONN.into(),
        provider: ConnectionProvider::GoogleCalendar.into(),
        access_token: token.into(),
        external_account_id: ALICE.into(),
        ..Default::default()
    }
}

async fn env() -> Env {
    let google = FakeGoogle::start(FakeGoogleConfig::default()).await;
    google.add_user(FakeGoogleUser::new("1001", ALICE));
    let fake = FakeGoogleCalendar::start(&google).await;
    let token = google.issue_access_token(ALICE, &[SCOPE]).unwrap();
    let creds = StaticCredentials::new();
    creds.insert(credential(&token));
    let adapter = GoogleCalendarAdapter::with_http(fake.base_url(), http_config(), creds.clone());
    Env {
        google,
        fake,
        creds,
        adapter,
        token,
    }
}

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Principal {
        subject: "tenants/platform/services/orchestrator".into(),
        tenant: "platform".into(),
        token_id: "t1".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    request
}

fn context(key: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: CONN.into(),
        idempotency_key: key.into(),
    })
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn meeting() -> Event {
    Event {
        summary: "Cleaning".into(),
        description: "Six-month check".into(),
        location: "Room 2".into(),
        start_time: ts(T0),
        end_time: ts(T0 + 3600),
        time_zone: "America/New_York".into(),
        attendees: vec![Attendee {
            email: "pat@example.net".into(),
            display_name: "Pat".into(),
            role: AttendeeRole::Optional.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn create(event: Event, key: &str) -> Request<CreateEventRequest> {
    request(CreateEventRequest {
        context: context(key),
        calendar_id: String::new(),
        event: Some(event),
        send_updates: SendUpdates::All.into(),
        add_conference: false,
    })
}

fn list(min: i64, max: i64) -> Request<ListEventsRequest> {
    request(ListEventsRequest {
        context: context(""),
        calendar_id: "primary".into(),
        time_min: ts(min),
        time_max: ts(max),
        ..Default::default()
    })
}

fn metadata(status: &Status, key: &str) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}

fn violations(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_list_update_and_check_availability() {
    let env = env().await;
    let mut req = create(meeting(), "exec-1/step-1");
    req.get_mut().add_conference = true;
    let created = env
        .adapter
        .create_event(req)
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(created.id, event_id_for(CONN, "exec-1/step-1"));
    assert_eq!(created.calendar_id, "primary");
    assert_eq!(created.start_time, ts(T0));
    assert_eq!(created.end_time, ts(T0 + 3600));
    assert_eq!(created.time_zone, "America/New_York");
    assert_eq!(created.status, EventStatus::Confirmed as i32);
    assert_eq!(created.organizer_email, ALICE);
    assert!(created
        .conference_url
        .starts_with("https://meet.google.com/"));
    assert!(!created.etag.is_empty() && !created.html_link.is_empty());
    assert_eq!(created.attendees[0].role, AttendeeRole::Optional as i32);
    assert_eq!(
        created.attendees[0].response_status,
        ResponseStatus::NeedsAction as i32
    );

    let sent = &env
        .fake
        .requests_to("POST", "/calendar/v3/calendars/primary/events")[0];
    assert_eq!(sent.query["sendUpdates"], "all");
    assert_eq!(sent.query["conferenceDataVersion"], "1");
    let body = sent.json().unwrap();
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-01-05T15:00:00Z", "date": null, "timeZone": "America/New_York"})
    );
    assert_eq!(
        body["attendees"][0],
        json!({"email": "pat@example.net", "displayName": "Pat", "optional": true})
    );

    let listed = env
        .adapter
        .list_events(list(T0 - 86_400, T0 + 86_400))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    assert_eq!(listed.events[0].id, created.id);
    assert_eq!(listed.time_zone, "UTC");
    let sent = &env
        .fake
        .requests_to("GET", "/calendar/v3/calendars/primary/events")[0];
    assert_eq!(sent.query["singleEvents"], "true");
    assert_eq!(sent.query["orderBy"], "startTime");
    assert_eq!(sent.query["timeMin"], "2026-01-04T15:00:00Z");
    assert_eq!(sent.query["maxResults"], "100");

    let update = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            summary: "Cleaning (moved)".into(),
            ..created.clone()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["summary".into()],
        }),
        send_updates: SendUpdates::Unspecified.into(),
    };
    let updated = env
        .adapter
        .update_event(request(update))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(updated.summary, "Cleaning (moved)");
    assert_eq!(updated.description, "Six-month check");
    assert_ne!(updated.etag, created.etag);
    let path = format!("/calendar/v3/calendars/primary/events/{}", created.id);
    let sent = &env.fake.requests_to("PATCH", &path)[0];
    assert_eq!(sent.header("if-match"), Some(created.etag.as_str()));
    assert_eq!(sent.query["sendUpdates"], "none");
    assert_eq!(sent.json().unwrap(), json!({"summary": "Cleaning (moved)"}));

    let check = CheckAvailabilityRequest {
        context: context(""),
        calendar_ids: vec!["primary".into(), "ghost@nowhere.example".into()],
        time_min: ts(T0 - 3600),
        time_max: ts(T0 + 7200),
        time_zone: String::new(),
    };
    let answer = env
        .adapter
        .check_availability(request(check))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.calendars.len(), 2);
    assert_eq!(answer.calendars[0].calendar_id, "primary");
    assert_eq!(answer.calendars[0].busy.len(), 1);
    assert_eq!(answer.calendars[0].busy[0].start_time, ts(T0));
    assert_eq!(answer.calendars[0].busy[0].status, BusyStatus::Busy as i32);
    assert_eq!(answer.calendars[1].error, "notFound");
}

#[tokio::test]
async fn all_day_events_keep_their_dates() {
    let env = env().await;
    let event = Event {
        summary: "Closed".into(),
        all_day: true,
        start_date: Some(Date {
            year: 2026,
            month: 1,
            day: 5,
        }),
        end_date: Some(Date {
            year: 2026,
            month: 1,
            day: 6,
        }),
        ..Default::default()
    };
    let created = env
        .adapter
        .create_event(create(event, ""))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert!(created.all_day);
    assert_eq!(
        created.start_date,
        Some(Date {
            year: 2026,
            month: 1,
            day: 5
        })
    );
    assert_eq!(
        created.end_date,
        Some(Date {
            year: 2026,
            month: 1,
            day: 6
        })
    );
    assert_eq!(created.start_time, None);
}

#[tokio::test]
async fn a_retried_create_with_the_same_key_makes_one_event() {
    let env = env().await;
    let first = env
        .adapter
        .create_event(create(meeting(), "exec-9/step-1"))
        .await
        .unwrap();
    // Google answers the repeat with 409 duplicate; the adapter answers the event it made.
    let second = env
        .adapter
        .create_event(create(meeting(), "exec-9/step-1"))
        .await
        .unwrap();
    assert_eq!(
        first.into_inner().event.unwrap().id,
        second.into_inner().event.unwrap().id
    );
    assert_eq!(env.fake.events(ALICE).len(), 1);
    let statuses: Vec<Option<u16>> = env.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(200), Some(409), Some(200)]);

    // Safe to retry: a 500 on the first attempt is repeated and still makes one event.
    env.fake.fail_next(1, Failure::Status(500));
    env.adapter
        .create_event(create(meeting(), "exec-9/step-2"))
        .await
        .unwrap();
    assert_eq!(env.fake.events(ALICE).len(), 2);
}

#[tokio::test]
async fn provider_errors_map_to_grpc_codes_with_googles_words() {
    let env = env().await;
    let created = env
        .adapter
        .create_event(create(meeting(), "k1"))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();

    // 412: the etag is stale.
    let stale = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            etag: "\"1\"".into(),
            ..created.clone()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["summary".into()],
        }),
        send_updates: 0,
    };
    let err = env.adapter.update_event(request(stale)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(metadata(&err, "http_status"), "412");
    assert_eq!(metadata(&err, "provider_code"), "conditionNotMet");
    assert_eq!(metadata(&err, "provider_message"), "Precondition Failed");

    // 404: no such event.
    let missing = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            id: "nosuchevent1".into(),
            etag: String::new(),
            ..created.clone()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["summary".into()],
        }),
        send_updates: 0,
    };
    let err = env
        .adapter
        .update_event(request(missing))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(metadata(&err, "provider_code"), "notFound");

    // 400: a page token Google does not know.
    let mut bad_token = list(T0 - 60, T0 + 60);
    bad_token.get_mut().page_token = "garbage".into();
    let err = env.adapter.list_events(bad_token).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        metadata(&err, "provider_message"),
        "Invalid page token value."
    );

    // 403 rateLimitExceeded is rate limiting, not a permission problem.
    env.fake.fail_next(1, Failure::Status(403));
    let err = env
        .adapter
        .list_events(list(T0 - 60, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&err, "provider_code"), "rateLimitExceeded");

    // 403 for a token without a calendar scope is.
    let narrow = env.google.issue_access_token(ALICE, &["openid"]).unwrap();
    env.creds.insert(credential(&narrow));
    let err = env
        .adapter
        .list_events(list(T0 - 60, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(metadata(&err, "provider_code"), "insufficientPermissions");
}

#[tokio::test]
async fn a_401_forces_exactly_one_refresh() {
    let env = env().await;
    env.creds.insert(credential("ya29.stale-token"));
    env.creds.insert_refreshed(credential(&env.token));
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.creds.refreshes(CONN), 1);
    let statuses: Vec<Option<u16>> = env.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(401), Some(200)]);

    // A wrong token that refreshing does not fix: Google's authError, one refresh, no loop.
    env.fake.clear_requests();
    env.creds.insert(credential("ya29.wrong-token-abc"));
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(metadata(&err, "provider_code"), "authError");
    assert_eq!(env.creds.refreshes(CONN), 2);
    assert_eq!(env.fake.requests().len(), 2);

    // The token is in no record and no error.
    let everything = format!("{:?} {err:?} {}", env.fake.requests(), err.message());
    for secret in [
        env.token.as_str(),
        "ya29.wrong-token-abc",
        "ya29.stale-token",
    ] {
        assert!(!everything.contains(secret), "leaked {secret}");
    }
}

#[tokio::test]
async fn rate_limits_are_waited_out_when_short_and_returned_when_long() {
    let env = env().await;
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.fake.requests().len(), 2);

    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(60))
    );
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_only_when_safe() {
    let env = env().await;
    env.fake.fail_next(2, Failure::Status(503));
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.fake.requests().len(), 3);

    // A create without an idempotency key could duplicate the event: never repeated.
    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(500));
    let err = env
        .adapter
        .create_event(create(meeting(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests().len(), 1);
    assert!(env.fake.events(ALICE).is_empty());
}

#[tokio::test]
async fn a_slow_google_times_out() {
    let env = env().await;
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(700)));
    let started = Instant::now();
    let err = env
        .adapter
        .create_event(create(meeting(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert!(started.elapsed() < Duration::from_millis(650));
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_the_cooldown() {
    let env = env().await;
    env.fake.fail_next(3, Failure::Status(500));
    // Three attempts of one safe call: three consecutive failures open the circuit.
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(env.fake.requests().len(), 3);

    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(
        env.fake.requests().len(),
        3,
        "an open circuit sends nothing"
    );

    tokio::time::sleep(Duration::from_millis(250)).await;
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.fake.requests().len(), 4);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_call() {
    let env = env().await;
    let backwards = Event {
        start_time: ts(T0 + 3600),
        end_time: ts(T0),
        ..meeting()
    };
    let err = env
        .adapter
        .create_event(create(backwards, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["event.end_time"]);

    let odd = Event {
        time_zone: "Mars/Olympus_Mons".into(),
        attendees: vec![Attendee {
            email: "not-an-email".into(),
            ..Default::default()
        }],
        ..meeting()
    };
    let err = env.adapter.create_event(create(odd, "")).await.unwrap_err();
    assert_eq!(
        violations(&err),
        ["event.time_zone", "event.attendees[0].email"]
    );

    let mut big_page = list(T0, T0 + 60);
    big_page.get_mut().page_size = 251;
    let err = env.adapter.list_events(big_page).await.unwrap_err();
    assert_eq!(violations(&err), ["page_size"]);

    let update = UpdateEventRequest {
        context: context(""),
        event: Some(meeting()),
        update_mask: Some(FieldMask {
            paths: vec!["etag".into()],
        }),
        send_updates: 0,
    };
    let err = env.adapter.update_event(request(update)).await.unwrap_err();
    assert_eq!(
        violations(&err),
        ["event.id", "event.calendar_id", "update_mask"]
    );

    let check = CheckAvailabilityRequest {
        context: context(""),
        calendar_ids: Vec::new(),
        time_min: ts(T0),
        time_max: None,
        time_zone: String::new(),
    };
    let err = env
        .adapter
        .check_availability(request(check))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["calendar_ids", "time_max"]);

    let mut bad_connection = list(T0, T0 + 60);
    bad_connection.get_mut().context = Some(CallContext {
        connection: "tenants/acme".into(),
        idempotency_key: String::new(),
    });
    let err = env.adapter.list_events(bad_connection).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}

#[tokio::test]
async fn connections_of_other_tenants_or_providers_are_refused() {
    let env = env().await;
    let mut foreign = list(T0, T0 + 60);
    foreign.extensions_mut().insert(Principal {
        subject: "tenants/other/users/eve".into(),
        tenant: "other".into(),
        token_id: "t2".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    let err = env.adapter.list_events(foreign).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    env.creds.insert(ConnectionCredential {
        provider: ConnectionProvider::Twilio.into(),
        api_key: "twilio-secret".into(),
        ..credential("")
    });
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.fake.requests().is_empty());
}
