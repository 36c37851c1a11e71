//! The Microsoft Graph calendar adapter against the Microsoft fake over loopback HTTP: every
//! RPC, zones as Windows names, transactionId idempotency, next links, error mapping, retries,
//! Retry-After, timeouts, the circuit breaker, the one forced refresh on 401, and input refused
//! before any call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::harness::Failure;
use maxai_fakes::microsoft::{FakeMicrosoft, FakeMicrosoftConfig};
use maxai_kit::auth::Principal;
use maxai_microsoft_calendar::convert::transaction_id_for;
use maxai_microsoft_calendar::MicrosoftCalendarAdapter;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::calendar::v1::calendar_service_server::CalendarService;
use maxai_proto::maxai::ports::calendar::v1::{
    Attendee, AttendeeRole, BusyStatus, CheckAvailabilityRequest, CreateEventRequest, Date, Event,
    EventStatus, ListEventsRequest, ResponseStatus, UpdateEventRequest,
};
use prost_types::{FieldMask, Timestamp};
use serde_json::json;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/outlook";
const ALICE: &str = "alice@contoso.example";
const BOB: &str = "bob@contoso.example";
// 2026-01-05T15:00:00Z, 10:00 in New York.
const T0: i64 = 1_767_625_200;

struct Env {
    fake: FakeMicrosoft,
    creds: Arc<StaticCredentials>,
    adapter: MicrosoftCalendarAdapter,
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
        provider: ConnectionProvider::MicrosoftCalendar.into(),
        access_token: token.into(),
        external_account_id: ALICE.into(),
        ..Default::default()
    }
}

async fn env() -> Env {
    let fake = FakeMicrosoft::start(FakeMicrosoftConfig::default()).await;
    fake.add_user(ALICE);
    fake.add_user(BOB);
    let token = fake
        .issue_access_token(ALICE, &["Calendars.ReadWrite"])
        .unwrap();
    let creds = StaticCredentials::new();
    creds.insert(credential(&token));
    let adapter =
        MicrosoftCalendarAdapter::with_http(fake.base_url(), http_config(), creds.clone());
    Env {
        fake,
        creds,
        adapter,
        token,
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
        summary: "Consult".into(),
        description: "First visit".into(),
        location: "Room 1".into(),
        start_time: ts(T0),
        end_time: ts(T0 + 1800),
        time_zone: "America/New_York".into(),
        attendees: vec![Attendee {
            email: BOB.into(),
            display_name: "Bob".into(),
            role: AttendeeRole::Required.into(),
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
        send_updates: 0,
        add_conference: false,
    })
}

fn list(min: i64, max: i64) -> Request<ListEventsRequest> {
    request(ListEventsRequest {
        context: context(""),
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
    assert_eq!(created.start_time, ts(T0));
    assert_eq!(created.end_time, ts(T0 + 1800));
    assert_eq!(created.time_zone, "America/New_York");
    assert_eq!(created.summary, "Consult");
    assert_eq!(created.description, "First visit");
    assert_eq!(created.location, "Room 1");
    assert_eq!(created.organizer_email, ALICE);
    assert_eq!(created.status, EventStatus::Confirmed as i32);
    assert!(created
        .conference_url
        .starts_with("https://teams.microsoft.com/"));
    assert!(!created.etag.is_empty() && !created.ical_uid.is_empty());
    assert_eq!(created.attendees[0].email, BOB);
    assert_eq!(
        created.attendees[0].response_status,
        ResponseStatus::NeedsAction as i32
    );

    let sent = &env.fake.requests_to("POST", "/v1.0/me/events")[0];
    assert!(sent
        .header("prefer")
        .unwrap()
        .contains("outlook.timezone=\"UTC\""));
    let body = sent.json().unwrap();
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-01-05T10:00:00", "timeZone": "Eastern Standard Time"})
    );
    assert_eq!(
        body["transactionId"],
        transaction_id_for(CONN, "exec-1/step-1")
    );
    assert_eq!(body["onlineMeetingProvider"], "teamsForBusiness");
    assert_eq!(
        body["attendees"][0],
        json!({"emailAddress": {"address": BOB, "name": "Bob"}, "type": "required"})
    );

    let listed = env
        .adapter
        .list_events(list(T0 - 3600, T0 + 3600))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    assert_eq!(listed.events[0].id, created.id);
    assert_eq!(listed.events[0].start_time, ts(T0));
    let sent = &env.fake.requests_to("GET", "/v1.0/me/calendarView")[0];
    assert_eq!(sent.query["startDateTime"], "2026-01-05T14:00:00Z");
    assert_eq!(sent.query["$top"], "100");

    let update = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            summary: "Consult (moved)".into(),
            start_time: ts(T0 + 3600),
            end_time: ts(T0 + 5400),
            ..created.clone()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["summary".into(), "start_time".into(), "end_time".into()],
        }),
        send_updates: 0,
    };
    let updated = env
        .adapter
        .update_event(request(update))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(updated.summary, "Consult (moved)");
    assert_eq!(updated.start_time, ts(T0 + 3600));
    assert_eq!(updated.time_zone, "America/New_York");
    assert_ne!(updated.etag, created.etag);
    let patch = env
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.header("if-match"),
        Some(format!("W/\"{}\"", created.etag).as_str())
    );
    assert_eq!(
        patch.json().unwrap()["start"]["dateTime"],
        "2026-01-05T11:00:00"
    );

    env.fake
        .insert_event(
            BOB,
            json!({
                "subject": "Busy",
                "showAs": "oof",
                "start": {"dateTime": "2026-01-05T15:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2026-01-05T16:00:00", "timeZone": "UTC"},
            }),
        )
        .unwrap();
    let check = CheckAvailabilityRequest {
        context: context(""),
        calendar_ids: vec![BOB.into(), "ghost@contoso.example".into()],
        time_min: ts(T0 - 3600),
        time_max: ts(T0 + 7200),
        time_zone: "America/New_York".into(),
    };
    let answer = env
        .adapter
        .check_availability(request(check))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.calendars[0].calendar_id, BOB);
    assert_eq!(answer.calendars[0].busy.len(), 1);
    assert_eq!(answer.calendars[0].busy[0].start_time, ts(T0));
    assert_eq!(
        answer.calendars[0].busy[0].status,
        BusyStatus::OutOfOffice as i32
    );
    assert_eq!(answer.calendars[1].error, "ErrorInvalidUser");
    let sent = &env
        .fake
        .requests_to("POST", "/v1.0/me/calendar/getSchedule")[0];
    assert_eq!(
        sent.json().unwrap()["startTime"],
        json!({"dateTime": "2026-01-05T09:00:00", "timeZone": "Eastern Standard Time"})
    );
}

#[tokio::test]
async fn all_day_events_and_pages_by_next_link() {
    let env = env().await;
    let day = Event {
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
        .create_event(create(day, ""))
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
    for i in 0..2 {
        env.adapter
            .create_event(create(meeting(), &format!("page-{i}")))
            .await
            .unwrap();
    }
    let mut first = list(T0 - 86_400, T0 + 86_400);
    first.get_mut().page_size = 2;
    let page = env.adapter.list_events(first).await.unwrap().into_inner();
    assert_eq!(page.events.len(), 2);
    assert!(page.next_page_token.starts_with(env.fake.base_url()));
    let mut second = list(T0 - 86_400, T0 + 86_400);
    second.get_mut().page_token = page.next_page_token.clone();
    let rest = env.adapter.list_events(second).await.unwrap().into_inner();
    assert_eq!(rest.events.len(), 1);
    assert!(rest.next_page_token.is_empty());

    // A forged page token never gets the bearer token sent elsewhere.
    env.fake.clear_requests();
    let mut forged = list(T0, T0 + 60);
    forged.get_mut().page_token = "https://evil.example/v1.0/me/calendarView".into();
    let err = env.adapter.list_events(forged).await.unwrap_err();
    assert_eq!(violations(&err), ["page_token"]);
    assert!(env.fake.requests().is_empty());
}

#[tokio::test]
async fn a_retried_create_with_the_same_key_makes_one_event() {
    let env = env().await;
    let a = env
        .adapter
        .create_event(create(meeting(), "exec-9/step-1"))
        .await
        .unwrap();
    let b = env
        .adapter
        .create_event(create(meeting(), "exec-9/step-1"))
        .await
        .unwrap();
    assert_eq!(
        a.into_inner().event.unwrap().id,
        b.into_inner().event.unwrap().id
    );
    assert_eq!(env.fake.events(ALICE).len(), 1);

    env.fake.fail_next(1, Failure::Status(502));
    env.adapter
        .create_event(create(meeting(), "exec-9/step-2"))
        .await
        .unwrap();
    assert_eq!(env.fake.events(ALICE).len(), 2);
    assert_eq!(env.fake.requests().len(), 4);
}

#[tokio::test]
async fn provider_errors_map_to_grpc_codes_with_graphs_words() {
    let env = env().await;
    let created = env
        .adapter
        .create_event(create(meeting(), "k"))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    let mask = Some(FieldMask {
        paths: vec!["summary".into()],
    });

    let stale = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            etag: "DwAAABYAAAAstale".into(),
            ..created.clone()
        }),
        update_mask: mask.clone(),
        send_updates: 0,
    };
    let err = env.adapter.update_event(request(stale)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(metadata(&err, "provider_code"), "ErrorIrresolvableConflict");
    assert_eq!(metadata(&err, "http_status"), "412");

    let missing = UpdateEventRequest {
        context: context(""),
        event: Some(Event {
            id: "AAMkADno/such+id=".into(),
            etag: String::new(),
            ..created.clone()
        }),
        update_mask: mask.clone(),
        send_updates: 0,
    };
    let err = env
        .adapter
        .update_event(request(missing))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(metadata(&err, "provider_code"), "ErrorItemNotFound");
    assert_eq!(
        metadata(&err, "provider_message"),
        "The specified object was not found in the store."
    );

    let mut other_calendar = list(T0, T0 + 60);
    other_calendar.get_mut().calendar_id = "AAMkADsomeoneelse".into();
    let err = env.adapter.list_events(other_calendar).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let profile_only = env.fake.issue_access_token(ALICE, &["User.Read"]).unwrap();
    env.creds.insert(credential(&profile_only));
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(metadata(&err, "provider_code"), "ErrorAccessDenied");
}

#[tokio::test]
async fn a_401_forces_exactly_one_refresh() {
    let env = env().await;
    env.creds.insert(credential("eyJ.stale.token"));
    env.creds.insert_refreshed(credential(&env.token));
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.creds.refreshes(CONN), 1);
    let statuses: Vec<Option<u16>> = env.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(401), Some(200)]);

    env.fake.clear_requests();
    env.creds.insert(credential("eyJ.wrong.token"));
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        metadata(&err, "provider_code"),
        "InvalidAuthenticationToken"
    );
    assert_eq!(env.creds.refreshes(CONN), 2);
    assert_eq!(env.fake.requests().len(), 2);
    let everything = format!("{:?} {err:?}", env.fake.requests());
    for secret in [env.token.as_str(), "eyJ.wrong.token", "eyJ.stale.token"] {
        assert!(!everything.contains(secret), "leaked {secret}");
    }
}

#[tokio::test]
async fn throttling_is_waited_out_when_short_and_returned_when_long() {
    let env = env().await;
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(env.fake.requests().len(), 2);

    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(30),
        },
    );
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&err, "provider_code"), "TooManyRequests");
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_only_when_safe_and_slow_answers_time_out() {
    let env = env().await;
    env.fake.fail_next(2, Failure::Status(503));
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.fake.requests().len(), 3);

    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(500));
    let err = env
        .adapter
        .create_event(create(meeting(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests().len(), 1);

    env.fake.clear_requests();
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(700)));
    let err = env
        .adapter
        .create_event(create(meeting(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_the_cooldown() {
    let env = env().await;
    env.fake.fail_next(3, Failure::Status(500));
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(env.fake.requests().len(), 3);
    tokio::time::sleep(Duration::from_millis(250)).await;
    env.adapter.list_events(list(T0, T0 + 60)).await.unwrap();
    assert_eq!(env.fake.requests().len(), 4);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_call() {
    let env = env().await;
    let backwards = Event {
        start_time: ts(T0 + 60),
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

    let cancelled = Event {
        status: EventStatus::Cancelled.into(),
        time_zone: "Not/A_Zone".into(),
        ..meeting()
    };
    let err = env
        .adapter
        .create_event(create(cancelled, ""))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["event.time_zone", "event.status"]);

    let search = ListEventsRequest {
        context: context(""),
        time_min: ts(T0),
        query: "dentist".into(),
        ..Default::default()
    };
    let err = env.adapter.list_events(request(search)).await.unwrap_err();
    assert_eq!(violations(&err), ["time_max", "query"]);

    let long = CheckAvailabilityRequest {
        context: context(""),
        calendar_ids: vec![BOB.into(), "not-a-mailbox".into()],
        time_min: ts(T0),
        time_max: ts(T0 + 43 * 86_400),
        time_zone: String::new(),
    };
    let err = env
        .adapter
        .check_availability(request(long))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["calendar_ids[1]", "time_max"]);

    let update = UpdateEventRequest {
        context: context(""),
        event: Some(Event::default()),
        update_mask: Some(FieldMask {
            paths: vec!["html_link".into()],
        }),
        send_updates: 0,
    };
    let err = env.adapter.update_event(request(update)).await.unwrap_err();
    assert_eq!(violations(&err), ["event.id", "update_mask"]);

    env.creds.insert(ConnectionCredential {
        provider: ConnectionProvider::GoogleCalendar.into(),
        ..credential(&env.token)
    });
    let err = env
        .adapter
        .list_events(list(T0, T0 + 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}
