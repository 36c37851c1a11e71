//! The Microsoft fake over real HTTP, checked against PROVIDERS.md §9: the identity platform's
//! code flow with PKCE, rotating refresh tokens and Entra's error JSON; Graph events with
//! transactionId dedupe, `Prefer: outlook.timezone`, If-Match, getSchedule and Graph errors.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maxai_fakes::harness::{Failure, REDACTED};
use maxai_fakes::microsoft::{FakeMicrosoft, FakeMicrosoftClient, FakeMicrosoftConfig};
use reqwest::header::{LOCATION, RETRY_AFTER};
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

const ALICE: &str = "alice@contoso.example";
const BOB: &str = "bob@contoso.example";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t~value";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/microsoft/callback";
// RFC 7636 appendix B pair.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Env {
    fake: FakeMicrosoft,
    http: reqwest::Client,
    token: String,
}

async fn env() -> Env {
    let fake = FakeMicrosoft::start(FakeMicrosoftConfig::default()).await;
    fake.add_user(ALICE);
    fake.add_user(BOB);
    fake.add_client(FakeMicrosoftClient {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        redirect_uris: vec![REDIRECT.into()],
    });
    let token = fake
        .issue_access_token(ALICE, &["Calendars.ReadWrite"])
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    Env { fake, http, token }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = req.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url("/v1.0/me/events"))
            .bearer_auth(&self.token)
            .json(&body);
        self.send(req).await
    }

    async fn code(&self, extra: &[(&str, &str)]) -> String {
        let mut params = vec![
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            (
                "scope",
                "openid email offline_access https://graph.microsoft.com/Calendars.ReadWrite",
            ),
            ("state", "csrf-1"),
            ("nonce", "nonce-1"),
        ];
        params.extend_from_slice(extra);
        let url =
            Url::parse_with_params(&self.url("/common/oauth2/v2.0/authorize"), &params).unwrap();
        let response = self.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT));
        let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "csrf-1");
        assert!(q.contains_key("session_state"));
        q["code"].clone()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url("/common/oauth2/v2.0/token"))
            .form(form);
        self.send(req).await
    }
}

fn event(subject: &str, start: &str, end: &str, zone: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
    })
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn code_flow_with_pkce_then_rotating_refresh_tokens() {
    let env = env().await;
    let code = env
        .code(&[
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let exchange = [
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, tokens) = env.token(&exchange).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(
        tokens["scope"],
        "https://graph.microsoft.com/Calendars.ReadWrite"
    );
    let access = tokens["access_token"].as_str().unwrap();

    // The ID token verifies with the published keys.
    let keys: JwkSet = env
        .http
        .get(env.url(&format!("/{}/discovery/v2.0/keys", env.fake.tenant_id())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(keys.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[CLIENT]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["preferred_username"], ALICE);
    assert_eq!(claims["email"], ALICE);
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["tid"], env.fake.tenant_id());

    // The access token works at Graph.
    let me = env.http.get(env.url("/v1.0/me")).bearer_auth(access);
    let (status, me) = env.send(me).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["mail"], ALICE);

    // A code is single-use.
    let (status, body) = env.token(&exchange).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([54005]));
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS54005:"));

    // Refresh rotates: a new refresh token each time, the used one refused.
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        vec![
            ("client_id", CLIENT.to_owned()),
            ("client_secret", SECRET.to_owned()),
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token),
        ]
    };
    let form = refresh(first.clone());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, rotated) = env.token(&form).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(second, first);
    assert_ne!(rotated["access_token"], tokens["access_token"]);
    let (status, body) = env.token(&form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([70000]));

    // Secrets never reach the record.
    for r in env.fake.requests() {
        let text = format!("{r:?}");
        assert!(
            !text.contains(SECRET) && !text.contains(&first) && !text.contains(access),
            "{text}"
        );
    }
    let token_requests = env.fake.requests_to("POST", "/common/oauth2/v2.0/token");
    assert_eq!(token_requests[0].form()["client_secret"], REDACTED);
}

#[tokio::test]
async fn token_endpoint_errors_are_entras() {
    let env = env().await;
    let code = env.code(&[]).await;
    let (status, body) = env
        .token(&[
            ("client_id", CLIENT),
            ("client_secret", "wrong"),
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());

    let code = env
        .code(&[
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let (_, body) = env
        .token(&[
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            (
                "code_verifier",
                "not-the-verifier-not-the-verifier-not-the-ver",
            ),
        ])
        .await;
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([501481]));

    let (status, body) = env
        .token(&[
            ("client_id", "unknown-app"),
            ("grant_type", "refresh_token"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([700016]));

    // An unregistered redirect URI is an error page, never a redirect.
    let url = Url::parse_with_params(
        &env.url("/common/oauth2/v2.0/authorize"),
        &[
            ("client_id", CLIENT),
            ("redirect_uri", "https://evil.example/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
        ],
    )
    .unwrap();
    let response = env.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().starts_with("AADSTS50011"));
}

#[tokio::test]
async fn create_dedupes_on_transaction_id_and_renders_in_the_preferred_zone() {
    let env = env().await;
    let mut body = event(
        "Consult",
        "2026-01-05T10:00:00",
        "2026-01-05T11:00:00",
        "Eastern Standard Time",
    );
    body["transactionId"] = json!("7d1b0d6e-0000-4000-8000-000000000001");
    body["attendees"] =
        json!([{"emailAddress": {"address": BOB, "name": "Bob"}, "type": "required"}]);
    let (status, created) = env.create(body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Create answers in the event's own zone, Graph's seven-digit wall time.
    assert_eq!(created["start"]["dateTime"], "2026-01-05T10:00:00.0000000");
    assert_eq!(created["start"]["timeZone"], "Eastern Standard Time");
    assert_eq!(created["originalStartTimeZone"], "Eastern Standard Time");
    assert_eq!(created["attendees"][0]["status"]["response"], "none");
    assert_eq!(created["organizer"]["emailAddress"]["address"], ALICE);
    assert!(created["changeKey"].is_string());

    let (status, again) = env.create(body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["id"], created["id"]);
    assert_eq!(env.fake.events(ALICE).len(), 1);

    let view = |prefer: Option<&str>| {
        let mut req = env
            .http
            .get(env.url("/v1.0/me/calendarView"))
            .bearer_auth(&env.token)
            .query(&[
                ("startDateTime", "2026-01-05T00:00:00Z"),
                ("endDateTime", "2026-01-06T00:00:00Z"),
            ]);
        if let Some(zone) = prefer {
            req = req.header("Prefer", format!("outlook.timezone=\"{zone}\""));
        }
        req
    };
    let (_, utc) = env.send(view(None)).await;
    assert_eq!(
        utc["value"][0]["start"]["dateTime"],
        "2026-01-05T15:00:00.0000000"
    );
    assert_eq!(utc["value"][0]["start"]["timeZone"], "UTC");
    let response = view(Some("Pacific Standard Time")).send().await.unwrap();
    assert_eq!(
        response.headers()["preference-applied"],
        "outlook.timezone=\"Pacific Standard Time\""
    );
    let pacific: Value = response.json().await.unwrap();
    assert_eq!(
        pacific["value"][0]["start"]["dateTime"],
        "2026-01-05T07:00:00.0000000"
    );
    assert_eq!(
        pacific["value"][0]["start"]["timeZone"],
        "Pacific Standard Time"
    );

    // A window is required; unknown properties and zones are refused.
    let (status, body) = env
        .send(
            env.http
                .get(env.url("/v1.0/me/calendarView"))
                .bearer_auth(&env.token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code_of(&body), "ErrorInvalidParameters");
    let mut odd = event("x", "2026-01-05T10:00:00", "2026-01-05T11:00:00", "UTC");
    odd["colour"] = json!("red");
    let (_, body) = env.create(odd).await;
    assert_eq!(code_of(&body), "RequestBodyRead");
    let (_, body) = env
        .create(event(
            "x",
            "2026-01-05T10:00:00",
            "2026-01-05T11:00:00",
            "Mars Standard Time",
        ))
        .await;
    assert_eq!(code_of(&body), "TimeZoneNotSupportedException");
    let (status, body) = env
        .create(event(
            "x",
            "2026-01-05T11:00:00",
            "2026-01-05T10:00:00",
            "UTC",
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code_of(&body), "ErrorInvalidRequest");
}

#[tokio::test]
async fn calendar_view_pages_with_next_links() {
    let env = env().await;
    for hour in 8..11 {
        env.fake
            .insert_event(
                ALICE,
                event(
                    &format!("e{hour}"),
                    &format!("2026-01-05T{hour:02}:00:00"),
                    &format!("2026-01-05T{hour:02}:30:00"),
                    "UTC",
                ),
            )
            .unwrap();
    }
    let req = env
        .http
        .get(env.url("/v1.0/me/calendarView"))
        .bearer_auth(&env.token)
        .query(&[
            ("startDateTime", "2026-01-05T00:00:00Z"),
            ("endDateTime", "2026-01-06T00:00:00Z"),
            ("$top", "2"),
            ("$orderby", "start/dateTime"),
        ]);
    let (_, first) = env.send(req).await;
    assert_eq!(first["value"].as_array().unwrap().len(), 2);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&env.url("/v1.0/me/calendarView?")),
        "{next}"
    );
    let (_, second) = env.send(env.http.get(next).bearer_auth(&env.token)).await;
    assert_eq!(second["value"][0]["subject"], "e10");
    assert!(second.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn patch_needs_the_current_change_key_and_encoded_ids() {
    let env = env().await;
    let (_, created) = env
        .create(event(
            "Call",
            "2026-01-05T10:00:00",
            "2026-01-05T11:00:00",
            "UTC",
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1.0/me/events/{}", form_urlencoded_path(id));
    let stale = env
        .http
        .patch(env.url(&path))
        .bearer_auth(&env.token)
        .header("If-Match", "W/\"DwAAABYAAAAstale\"")
        .json(&json!({"subject": "Lost"}));
    let (status, body) = env.send(stale).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(code_of(&body), "ErrorIrresolvableConflict");

    let etag = created["@odata.etag"].as_str().unwrap();
    let fresh = env
        .http
        .patch(env.url(&path))
        .bearer_auth(&env.token)
        .header("If-Match", etag)
        .json(&json!({"subject": "Moved", "end": {"dateTime": "2026-01-05T12:00:00", "timeZone": "UTC"}}));
    let (status, updated) = env.send(fresh).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["subject"], "Moved");
    assert_eq!(updated["end"]["dateTime"], "2026-01-05T12:00:00.0000000");
    assert_ne!(updated["changeKey"], created["changeKey"]);

    let (status, body) = env
        .send(
            env.http
                .patch(env.url("/v1.0/me/events/AAMkADnope"))
                .bearer_auth(&env.token)
                .json(&json!({"subject": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code_of(&body), "ErrorItemNotFound");
}

fn form_urlencoded_path(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn get_schedule_reports_busy_items_views_and_unknown_users() {
    let env = env().await;
    env.fake
        .insert_event(
            BOB,
            event("Busy", "2026-01-05T09:00:00", "2026-01-05T10:00:00", "UTC"),
        )
        .unwrap();
    let mut oof = event("Away", "2026-01-05T10:00:00", "2026-01-05T10:30:00", "UTC");
    oof["showAs"] = json!("oof");
    env.fake.insert_event(BOB, oof).unwrap();
    let mut free = event("Free", "2026-01-05T11:00:00", "2026-01-05T12:00:00", "UTC");
    free["showAs"] = json!("free");
    env.fake.insert_event(BOB, free).unwrap();

    let req = env
        .http
        .post(env.url("/v1.0/me/calendar/getSchedule"))
        .bearer_auth(&env.token)
        .header("Prefer", "outlook.timezone=\"Eastern Standard Time\"")
        .json(&json!({
            "schedules": [BOB, "ghost@contoso.example"],
            "startTime": {"dateTime": "2026-01-05T09:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2026-01-05T12:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 30,
        }));
    let (status, body) = env.send(req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob = &body["value"][0];
    assert_eq!(bob["scheduleId"], BOB);
    assert_eq!(bob["availabilityView"], "223000");
    let items = bob["scheduleItems"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["status"], "busy");
    assert_eq!(items[0]["start"]["dateTime"], "2026-01-05T04:00:00.0000000");
    assert_eq!(items[0]["start"]["timeZone"], "Eastern Standard Time");
    assert_eq!(items[1]["status"], "oof");
    assert_eq!(
        body["value"][1]["error"]["responseCode"],
        "ErrorInvalidUser"
    );

    let too_long = env
        .http
        .post(env.url("/v1.0/me/calendar/getSchedule"))
        .bearer_auth(&env.token)
        .json(&json!({
            "schedules": [BOB],
            "startTime": {"dateTime": "2026-01-01T00:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2026-03-01T00:00:00", "timeZone": "UTC"},
        }));
    let (status, body) = env.send(too_long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code_of(&body), "ErrorInvalidParameters");
}

#[tokio::test]
async fn graph_auth_errors_and_throttling() {
    let env = env().await;
    let (status, body) = env
        .send(
            env.http
                .get(env.url("/v1.0/me/events"))
                .bearer_auth("eyJ.bogus.token"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code_of(&body), "InvalidAuthenticationToken");
    assert!(body["error"]["innerError"]["request-id"].is_string());

    let read_only = env.fake.issue_access_token(ALICE, &["User.Read"]).unwrap();
    let (status, body) = env
        .send(
            env.http
                .get(env.url("/v1.0/me/events"))
                .bearer_auth(&read_only),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code_of(&body), "ErrorAccessDenied");

    env.fake.expire_access_tokens();
    let (_, body) = env
        .send(
            env.http
                .get(env.url("/v1.0/me/events"))
                .bearer_auth(&env.token),
        )
        .await;
    assert_eq!(
        body["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );

    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(3),
        },
    );
    let response = env
        .http
        .get(env.url("/v1.0/me/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[RETRY_AFTER], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(code_of(&body), "TooManyRequests");
}

#[tokio::test]
async fn discovery_and_client_secret_basic() {
    let env = env().await;
    let tenant = env.fake.tenant_id().to_owned();
    let doc: Value = env
        .http
        .get(env.url(&format!("/{tenant}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], env.url(&format!("/{tenant}/v2.0")));
    assert_eq!(
        doc["token_endpoint"],
        env.url(&format!("/{tenant}/oauth2/v2.0/token"))
    );
    let common: Value = env
        .http
        .get(env.url("/common/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(common["issuer"], env.url("/{tenantid}/v2.0"));

    let code = env.code(&[]).await;
    let response = env
        .http
        .post(env.url(&format!("/{tenant}/oauth2/v2.0/token")))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let recorded = env.fake.requests();
    let auth = recorded.last().unwrap().header("authorization").unwrap();
    assert_eq!(auth, format!("Basic {REDACTED}"));
}
