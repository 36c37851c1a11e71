//! The Google Calendar fake over real HTTP, checked against PROVIDERS.md §8.1: tokens from the
//! Google OAuth fake (by the code flow and directly), events with client ids, etags and time
//! zones, recurring instances, freeBusy, Google's error shapes and injected rate limits.

use std::collections::HashMap;
use std::time::Duration;

use maxai_fakes::google_calendar::FakeGoogleCalendar;
use maxai_fakes::harness::{Failure, REDACTED};
use maxai_fakes::{FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser};
use reqwest::header::{LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

const CAL: &str = "https://www.googleapis.com/auth/calendar";
const ALICE: &str = "alice@example.com";

struct Env {
    google: FakeGoogle,
    calendar: FakeGoogleCalendar,
    http: reqwest::Client,
    token: String,
}

async fn env() -> Env {
    let google = FakeGoogle::start(FakeGoogleConfig::default()).await;
    google.add_user(FakeGoogleUser::new("1001", ALICE));
    google.add_user(FakeGoogleUser::new("1002", "bob@example.com"));
    let calendar = FakeGoogleCalendar::start(&google).await;
    let token = google.issue_access_token(ALICE, &[CAL]).unwrap();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    Env {
        google,
        calendar,
        http,
        token,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.calendar.base_url())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = req.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn insert(&self, body: Value) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url("/calendar/v3/calendars/primary/events"))
            .bearer_auth(&self.token)
            .json(&body);
        self.send(req).await
    }

    async fn list(&self, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let req = self
            .http
            .get(self.url("/calendar/v3/calendars/primary/events"))
            .bearer_auth(&self.token)
            .query(query);
        self.send(req).await
    }
}

fn timed(summary: &str, start: &str, end: &str, zone: &str) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
    })
}

fn reason(body: &Value) -> &str {
    body["error"]["errors"][0]["reason"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn events_round_trip_with_their_time_zone_and_order() {
    let env = env().await;
    let (status, later) = env
        .insert(timed(
            "Later",
            "2026-01-06T15:00:00Z",
            "2026-01-06T16:00:00Z",
            "America/New_York",
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{later}");
    // Google renders the instant with the offset of the event's zone and keeps the zone.
    assert_eq!(later["start"]["dateTime"], "2026-01-06T10:00:00-05:00");
    assert_eq!(later["start"]["timeZone"], "America/New_York");
    assert_eq!(later["status"], "confirmed");
    assert_eq!(later["organizer"]["email"], ALICE);
    assert!(later["etag"].as_str().unwrap().starts_with('"'));
    let (_, sooner) = env
        .insert(timed(
            "Sooner",
            "2026-01-05T09:00:00+01:00",
            "2026-01-05T10:00:00+01:00",
            "Europe/Paris",
        ))
        .await;
    let (_, outside) = env
        .insert(timed(
            "Outside",
            "2026-02-01T09:00:00Z",
            "2026-02-01T10:00:00Z",
            "UTC",
        ))
        .await;

    let window = [
        ("timeMin", "2026-01-01T00:00:00Z"),
        ("timeMax", "2026-01-31T00:00:00Z"),
        ("singleEvents", "true"),
        ("orderBy", "startTime"),
    ];
    let (status, list) = env.list(&window).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "calendar#events");
    assert_eq!(list["timeZone"], "UTC");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            sooner["id"].as_str().unwrap(),
            later["id"].as_str().unwrap()
        ]
    );
    assert!(!ids.contains(&outside["id"].as_str().unwrap()));

    // The list's timeZone re-renders offsets; the event keeps its own zone name.
    let mut tokyo = window.to_vec();
    tokyo.push(("timeZone", "Asia/Tokyo"));
    let (_, list) = env.list(&tokyo).await;
    assert_eq!(list["timeZone"], "Asia/Tokyo");
    assert_eq!(
        list["items"][1]["start"]["dateTime"],
        "2026-01-07T00:00:00+09:00"
    );
    assert_eq!(list["items"][1]["start"]["timeZone"], "America/New_York");

    // Paging with maxResults and the opaque token.
    let mut paged = window.to_vec();
    paged.push(("maxResults", "1"));
    let (_, first) = env.list(&paged).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    paged.push(("pageToken", &token));
    let (_, second) = env.list(&paged).await;
    assert_eq!(second["items"][0]["id"], later["id"]);
    assert!(second.get("nextPageToken").is_none());

    // orderBy=startTime needs singleEvents, as at Google.
    let (status, body) = env.list(&[("orderBy", "startTime")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "badRequest");
}

#[tokio::test]
async fn client_ids_must_be_base32hex_and_unique() {
    let env = env().await;
    let mut event = timed(
        "Call",
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        "UTC",
    );
    event["id"] = json!("abcdefghijklmnopqrstuv0123456789");
    let (status, created) = env.insert(event.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["id"], "abcdefghijklmnopqrstuv0123456789");
    assert_eq!(
        created["iCalUID"],
        "abcdefghijklmnopqrstuv0123456789@google.com"
    );

    let (status, body) = env.insert(event.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(reason(&body), "duplicate");
    assert_eq!(body["error"]["code"], 409);
    assert_eq!(env.calendar.events(ALICE).len(), 1);

    for bad in ["abcd", "has-dash-00000", "UPPERCASE00000", "wxyz000000"] {
        event["id"] = json!(bad);
        let (status, body) = env.insert(event.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reason(&body), "invalid", "{bad}");
    }
}

#[tokio::test]
async fn bad_times_are_refused_as_google_refuses_them() {
    let env = env().await;
    let (status, body) = env
        .insert(timed(
            "Backwards",
            "2026-01-05T11:00:00Z",
            "2026-01-05T10:00:00Z",
            "UTC",
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "timeRangeEmpty");
    let (_, body) = env
        .insert(json!({"summary": "x", "start": {"dateTime": "2026-01-05T10:00:00"}, "end": {"dateTime": "2026-01-05T11:00:00"}}))
        .await;
    assert_eq!(
        body["error"]["message"],
        "Missing time zone definition for start time."
    );
    let (_, body) = env
        .insert(timed(
            "x",
            "2026-01-05T10:00:00Z",
            "2026-01-05T11:00:00Z",
            "Mars/Olympus",
        ))
        .await;
    assert_eq!(reason(&body), "invalid");
    let (_, body) = env
        .insert(json!({"summary": "x", "start": {"date": "2026-01-05"}}))
        .await;
    assert_eq!(body["error"]["message"], "Missing end time.");
}

#[tokio::test]
async fn patch_honours_if_match_and_bumps_the_etag() {
    let env = env().await;
    let (_, created) = env
        .insert(timed(
            "Call",
            "2026-01-05T10:00:00Z",
            "2026-01-05T11:00:00Z",
            "UTC",
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let etag = created["etag"].as_str().unwrap();
    let path = format!("/calendar/v3/calendars/primary/events/{id}");

    let stale = env
        .http
        .patch(env.url(&path))
        .bearer_auth(&env.token)
        .header("If-Match", "\"1\"")
        .json(&json!({"summary": "Lost update"}));
    let (status, body) = env.send(stale).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(reason(&body), "conditionNotMet");

    let fresh = env
        .http
        .patch(env.url(&path))
        .bearer_auth(&env.token)
        .header("If-Match", etag)
        .json(&json!({"summary": "Moved", "start": {"dateTime": "2026-01-05T10:30:00Z", "timeZone": "UTC"}}));
    let (status, updated) = env.send(fresh).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["summary"], "Moved");
    assert_eq!(updated["start"]["dateTime"], "2026-01-05T10:30:00Z");
    assert_eq!(updated["end"]["dateTime"], "2026-01-05T11:00:00Z");
    assert_ne!(updated["etag"], created["etag"]);
    assert_eq!(updated["sequence"], 1);

    let backwards = env
        .http
        .patch(env.url(&path))
        .bearer_auth(&env.token)
        .json(&json!({"end": {"dateTime": "2026-01-05T09:00:00Z"}}));
    let (status, body) = env.send(backwards).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "timeRangeEmpty");

    let missing = env
        .http
        .patch(env.url("/calendar/v3/calendars/primary/events/nosuchevent"))
        .bearer_auth(&env.token)
        .json(&json!({"summary": "x"}));
    let (status, body) = env.send(missing).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reason(&body), "notFound");
}

#[tokio::test]
async fn tokens_are_checked_like_google_checks_them() {
    let env = env().await;
    let path = env.url("/calendar/v3/calendars/primary/events");
    for req in [
        env.http.get(&path),
        env.http
            .get(&path)
            .bearer_auth("ya29.not-a-token-we-issued"),
    ] {
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(reason(&body), "authError");
    }

    // A token without a calendar scope is a 403, not a 401.
    let narrow = env
        .google
        .issue_access_token(ALICE, &["openid", "email"])
        .unwrap();
    let (status, body) = env.send(env.http.get(&path).bearer_auth(&narrow)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body), "insufficientPermissions");

    // Another user's calendar is not found, not forbidden.
    let bob = env
        .http
        .get(env.url("/calendar/v3/calendars/bob%40example.com/events"));
    let (status, _) = env.send(bob.bearer_auth(&env.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Expired at the OAuth fake means refused here.
    env.google.expire_access_tokens();
    let (status, _) = env.list(&[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The bearer token never reaches the record.
    for r in env.calendar.requests() {
        assert!(!format!("{r:?}").contains(&env.token), "{r:?}");
        if let Some(auth) = r.header("authorization") {
            assert_eq!(auth, format!("Bearer {REDACTED}"));
        }
    }
}

#[tokio::test]
async fn a_token_from_the_oauth_code_flow_reaches_the_calendar() {
    let env = env().await;
    let redirect = "http://127.0.0.1:9/cb";
    env.google.add_client(FakeGoogleClient {
        client_id: "cal-client".into(),
        client_secret: "cal-secret".into(),
        redirect_uris: vec![redirect.into()],
    });
    // RFC 7636 appendix B pair.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let auth = Url::parse_with_params(
        &format!("{}/o/oauth2/v2/auth", env.google.base_url()),
        &[
            ("client_id", "cal-client"),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", &format!("openid email {CAL}")),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let response = env.http.get(auth).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
    let token: Value = env
        .http
        .post(format!("{}/token", env.google.base_url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("client_id", "cal-client"),
            ("client_secret", "cal-secret"),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let info = env.google.token_info(access).unwrap();
    assert_eq!(info.email, ALICE);
    let list = env
        .http
        .get(env.url("/calendar/v3/calendars/primary/events"))
        .bearer_auth(access);
    let (status, body) = env.send(list).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["summary"], ALICE);
}

#[tokio::test]
async fn recurring_events_expand_into_instances_at_the_same_wall_time() {
    let env = env().await;
    let mut series = timed(
        "Standup",
        "2026-03-06T09:00:00-05:00",
        "2026-03-06T09:15:00-05:00",
        "America/New_York",
    );
    series["recurrence"] = json!(["RRULE:FREQ=DAILY;COUNT=5"]);
    let (status, master) = env.insert(series).await;
    assert_eq!(status, StatusCode::OK, "{master}");
    let master_id = master["id"].as_str().unwrap();

    let window = [
        ("timeMin", "2026-03-07T00:00:00Z"),
        ("timeMax", "2026-03-10T00:00:00Z"),
        ("singleEvents", "true"),
        ("orderBy", "startTime"),
    ];
    let (_, list) = env.list(&window).await;
    let items = list["items"].as_array().unwrap();
    let starts: Vec<&str> = items
        .iter()
        .map(|e| e["start"]["dateTime"].as_str().unwrap())
        .collect();
    // DST starts on 2026-03-08 in New York: same 09:00 wall time, new offset.
    assert_eq!(
        starts,
        [
            "2026-03-07T09:00:00-05:00",
            "2026-03-08T09:00:00-04:00",
            "2026-03-09T09:00:00-04:00"
        ]
    );
    assert_eq!(items[1]["recurringEventId"], master_id);
    assert_eq!(items[1]["id"], format!("{master_id}_20260308T130000Z"));

    // Without singleEvents the series comes back once.
    let (_, list) = env.list(&[("timeMin", "2026-03-07T00:00:00Z")]).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0]["recurrence"].is_array());
}

#[tokio::test]
async fn free_busy_merges_clips_and_reports_unknown_calendars() {
    let env = env().await;
    for (s, e) in [
        ("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
        ("2026-01-05T09:30:00Z", "2026-01-05T11:00:00Z"),
        ("2026-01-05T13:00:00Z", "2026-01-05T19:00:00Z"),
    ] {
        env.calendar
            .insert_event(ALICE, timed("busy", s, e, "UTC"))
            .unwrap();
    }
    let mut free = timed(
        "free",
        "2026-01-05T12:00:00Z",
        "2026-01-05T12:30:00Z",
        "UTC",
    );
    free["transparency"] = json!("transparent");
    env.calendar.insert_event(ALICE, free).unwrap();

    let req = env
        .http
        .post(env.url("/calendar/v3/freeBusy"))
        .bearer_auth(&env.token)
        .json(&json!({
            "timeMin": "2026-01-05T08:00:00Z",
            "timeMax": "2026-01-05T18:00:00Z",
            "items": [{"id": "primary"}, {"id": "nobody@nowhere.example"}, {"id": "bob@example.com"}],
        }));
    let (status, body) = env.send(req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "calendar#freeBusy");
    assert_eq!(
        body["calendars"]["primary"]["busy"],
        json!([
            {"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T11:00:00Z"},
            {"start": "2026-01-05T13:00:00Z", "end": "2026-01-05T18:00:00Z"},
        ])
    );
    assert_eq!(
        body["calendars"]["nobody@nowhere.example"]["errors"][0]["reason"],
        "notFound"
    );
    assert_eq!(body["calendars"]["bob@example.com"]["busy"], json!([]));

    let req = env
        .http
        .post(env.url("/calendar/v3/freeBusy"))
        .bearer_auth(&env.token)
        .json(&json!({"timeMin": "2026-01-05T18:00:00Z", "timeMax": "2026-01-05T08:00:00Z", "items": []}));
    let (status, body) = env.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "timeRangeEmpty");
}

#[tokio::test]
async fn injected_rate_limits_use_googles_usage_limits_shape() {
    let env = env().await;
    env.calendar.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(2),
        },
    );
    env.calendar.fail_next(1, Failure::Status(403));
    let response = env
        .http
        .get(env.url("/calendar/v3/calendars/primary/events"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[RETRY_AFTER], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(reason(&body), "rateLimitExceeded");
    let (status, body) = env.list(&[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body), "rateLimitExceeded");

    env.calendar
        .fail_next(1, Failure::Slow(Duration::from_millis(50)));
    let (status, _) = env.list(&[]).await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<Option<u16>> = env.calendar.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(403), Some(200)]);
}

#[tokio::test]
async fn meet_links_need_conference_data_version_one() {
    let env = env().await;
    let mut event = timed(
        "Call",
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        "UTC",
    );
    event["conferenceData"] = json!({"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
    let (_, plain) = env.insert(event.clone()).await;
    assert!(plain.get("hangoutLink").is_none());
    let req = env
        .http
        .post(env.url("/calendar/v3/calendars/primary/events"))
        .query(&[("conferenceDataVersion", "1"), ("sendUpdates", "all")])
        .bearer_auth(&env.token)
        .json(&event);
    let (status, meet) = env.send(req).await;
    assert_eq!(status, StatusCode::OK, "{meet}");
    let link = meet["hangoutLink"].as_str().unwrap();
    assert!(link.starts_with("https://meet.google.com/"), "{link}");
    assert_eq!(meet["conferenceData"]["entryPoints"][0]["uri"], link);
}
