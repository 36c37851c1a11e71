//! The fake GoHighLevel over real HTTP: OAuth with rotation, contacts, notes, opportunities,
//! auth and rate-limit answers, injected failures, and webhook signatures checked against
//! the vectors the platform's verifier uses (PROVIDERS.md §1.1).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use maxai_fakes::ghl::{
    sign_ed25519, sign_rsa_sha256, FakeGhl, FakeGhlConfig, NewOpportunity, API_VERSION,
    RFC8032_TEST1_SECRET,
};
use maxai_fakes::harness::{loopback, Failure, REDACTED};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC8032_EMPTY_MESSAGE_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
// PROVIDERS.md [DERIVED] vector, also in services/webhook-ingress/src/signature/ghl.rs.
const CONTACT_CREATE: &str = r#"{"type":"ContactCreate","locationId":"loc_123","id":"contact_123","timestamp":"2025-01-28T14:35:00Z","webhookId":"wh_123"}"#;
const CONTACT_CREATE_ED25519: &str =
    "Mk96QNTG6wrPX740n1w7w59yNstiNGJOet19VncDJDh6XSVRIKkWbQVpDr8Tlzkx26HCeCCSEQuj2/2kvSJ2Bw==";

const CLIENT_ID: &str = "65f0c0ffee0000000000fa4e-lx1abcd";
const CLIENT_SECRET: &str = "s3cr3t-client-secret";
const REDIRECT: &str = "https://app.example.com/oauth/ghl/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn fake() -> FakeGhl {
    let fake = FakeGhl::start(FakeGhlConfig::default()).await;
    fake.add_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT]);
    fake.add_location("loc_1", "comp_1", "Acme Dental");
    fake.add_location("loc_2", "comp_1", "Acme Ortho");
    fake
}

/// Runs the authorize step; returns the code from the redirect.
async fn authorize(fake: &FakeGhl, state: Option<&str>) -> String {
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "contacts.readonly contacts.write oauth.write"),
    ];
    if let Some(state) = state {
        query.push(("state", state));
    }
    let response = http()
        .get(fake.authorize_url())
        .query(&query)
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
    let url = reqwest::Url::parse(&location).expect("url");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("state").as_deref(), state);
    get("code").expect("code")
}

async fn token_call(fake: &FakeGhl, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(format!("{}/oauth/token", fake.base_url()))
        .form(form)
        .send()
        .await
        .expect("token");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn api(
    fake: &FakeGhl,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    let mut req = http()
        .request(method, format!("{}{path}", fake.base_url()))
        .bearer_auth(token)
        .header("Version", API_VERSION)
        .header("Accept", "application/json");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.expect("api call");
    let status = response.status().as_u16();
    let mut headers = HeaderMap::new();
    for (k, v) in response.headers() {
        headers.insert(k.clone(), v.clone());
    }
    let value = response.json().await.unwrap_or(Value::Null);
    (status, headers, value)
}

#[tokio::test]
async fn code_flow_issues_tokens_and_refresh_rotates() {
    let fake = fake().await;
    fake.approve_next_as("loc_2");
    let code = authorize(&fake, Some("st-1")).await;

    let (status, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("user_type", "Location"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86_399);
    assert_eq!(body["userType"], "Location");
    assert_eq!(body["locationId"], "loc_2");
    assert_eq!(body["companyId"], "comp_1");
    assert_eq!(
        body["scope"],
        "contacts.readonly contacts.write oauth.write"
    );
    assert!(body["userId"].is_string());
    let access = body["access_token"].as_str().expect("access").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();

    // The token works on the API for its own location.
    let (status, _, _) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &access,
        Some(json!({"locationId": "loc_2", "firstName": "Ann"})),
    )
    .await;
    assert_eq!(status, 201);

    // A used code is dead.
    let (status, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "authorization_code"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Refresh rotates: a new refresh token, and the old one is refused afterwards.
    let refresh_form = |rt: &str| {
        vec![
            ("client_id", CLIENT_ID.to_owned()),
            ("client_secret", CLIENT_SECRET.to_owned()),
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", rt.to_owned()),
            ("user_type", "Location".to_owned()),
        ]
    };
    let form = refresh_form(&refresh);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token_call(&fake, &form).await;
    assert_eq!(status, 200, "{body}");
    let rotated = body["refresh_token"].as_str().expect("rotated").to_owned();
    assert_ne!(rotated, refresh);
    assert_eq!(body["locationId"], "loc_2");
    let (status, body) = token_call(&fake, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let form = refresh_form(&rotated);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(token_call(&fake, &form).await.0, 200);

    // Secrets never reach the record.
    for r in fake.requests_to("POST", "/oauth/token") {
        let form = r.form();
        assert_eq!(
            form.get("client_secret").map(String::as_str),
            Some(REDACTED)
        );
        for key in ["code", "refresh_token"] {
            if let Some(v) = form.get(key) {
                assert_eq!(v, REDACTED);
            }
        }
    }
    let recorded = format!("{:?}", fake.requests());
    assert!(!recorded.contains(CLIENT_SECRET));
    assert!(!recorded.contains(&access));
    assert!(!recorded.contains(&refresh));
}

#[tokio::test]
async fn wrong_client_secret_and_bad_redirect_are_refused() {
    let fake = fake().await;
    let code = authorize(&fake, None).await;
    let (status, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("grant_type", "authorization_code"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let response = http()
        .get(fake.authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "https://evil.example.com/cb"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn revoked_grant_kills_refresh_and_access_tokens() {
    let fake = fake().await;
    let code = authorize(&fake, None).await;
    let (_, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "authorization_code"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(body["locationId"], "loc_1");
    let access = body["access_token"].as_str().expect("access").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
    fake.revoke_grant("loc_1");
    let (status, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _, body) = api(&fake, reqwest::Method::GET, "/contacts/x", &access, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"statusCode":401,"message":"Invalid token: access token is invalid","error":"Unauthorized"})
    );
}

#[tokio::test]
async fn company_token_mints_location_tokens() {
    let fake = fake().await;
    let code = authorize(&fake, None).await;
    let (status, body) = token_call(
        &fake,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("user_type", "Company"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["userType"], "Company");
    assert!(body.get("locationId").is_none());
    assert_eq!(body["approvedLocations"], json!(["loc_1", "loc_2"]));
    let agency = body["access_token"].as_str().expect("agency").to_owned();

    let response = http()
        .post(format!("{}/oauth/locationToken", fake.base_url()))
        .bearer_auth(&agency)
        .header("Version", API_VERSION)
        .form(&[("companyId", "comp_1"), ("locationId", "loc_2")])
        .send()
        .await
        .expect("location token");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["locationId"], "loc_2");
    let location_token = body["access_token"].as_str().expect("token").to_owned();
    let (status, _, _) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/upsert",
        &location_token,
        Some(json!({"locationId": "loc_2", "email": "a@example.com"})),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn contacts_create_get_update_upsert_and_notes() {
    let fake = fake().await;
    let token = fake.issue_location_token("loc_1");
    let (status, headers, body) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &token,
        Some(json!({
            "locationId": "loc_1",
            "firstName": "Ann",
            "lastName": "Lee",
            "email": "ann@example.com",
            "phone": "+14155550123",
            "tags": ["VIP", " Lead "],
            "customFields": [{"key": "contact.reason", "field_value": "cleaning"}],
            "source": "retell voice agent",
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["x-ratelimit-max"], "100");
    assert_eq!(headers["x-ratelimit-remaining"], "99");
    assert_eq!(headers["x-ratelimit-interval-milliseconds"], "10000");
    assert_eq!(headers["x-ratelimit-limit-daily"], "200000");
    assert_eq!(headers["x-ratelimit-daily-remaining"], "199999");
    let contact = &body["contact"];
    let id = contact["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 20);
    assert_eq!(contact["name"], "Ann Lee");
    assert_eq!(contact["tags"], json!(["vip", "lead"]));
    assert_eq!(
        contact["customFields"],
        json!([{"id": "contact.reason", "value": "cleaning"}])
    );
    assert!(contact["dateAdded"]
        .as_str()
        .expect("dateAdded")
        .ends_with('Z'));

    let (status, _, body) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/contacts/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["contact"]["email"], "ann@example.com");

    let (status, _, body) = api(
        &fake,
        reqwest::Method::PUT,
        &format!("/contacts/{id}"),
        &token,
        Some(json!({"firstName": "Anna", "tags": ["new"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["succeded"], true);
    assert_eq!(body["contact"]["name"], "Anna Lee");
    assert_eq!(body["contact"]["tags"], json!(["new"]));

    // A create that duplicates an email is refused as GHL does by default.
    let (status, _, body) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &token,
        Some(json!({"locationId": "loc_1", "email": "ANN@example.com"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "This location does not allow duplicated contacts."
    );
    assert_eq!(body["meta"]["contactId"], json!(id));

    // Upsert matches by email, then by phone, else creates.
    let upsert = |body: Value| {
        api(
            &fake,
            reqwest::Method::POST,
            "/contacts/upsert",
            &token,
            Some(body),
        )
    };
    let (status, _, body) =
        upsert(json!({"locationId": "loc_1", "email": "ann@example.com", "city": "Austin"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["new"].as_bool(), body["contact"]["id"].as_str()),
        (Some(false), Some(id.as_str()))
    );
    assert_eq!(body["contact"]["city"], "Austin");
    assert!(body["traceId"].is_string());
    let (_, _, body) = upsert(json!({"locationId": "loc_1", "phone": "+14155550123"})).await;
    assert_eq!(body["new"], false);
    let (_, _, body) = upsert(json!({"locationId": "loc_1", "email": "bob@example.com"})).await;
    assert_eq!(body["new"], true);
    assert_eq!(fake.contacts_of("loc_1").len(), 2);

    let (status, _, body) = api(
        &fake,
        reqwest::Method::POST,
        &format!("/contacts/{id}/notes"),
        &token,
        Some(json!({"body": "Called; booked a cleaning.", "userId": "user_9"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["note"]["body"], "Called; booked a cleaning.");
    assert_eq!(body["note"]["contactId"], json!(id));
    assert_eq!(body["note"]["userId"], "user_9");
    assert_eq!(fake.notes(&id).len(), 1);
}

#[tokio::test]
async fn bad_input_is_422_with_an_array_message() {
    let fake = fake().await;
    let token = fake.issue_location_token("loc_1");
    let (status, _, body) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &token,
        Some(json!({"locationId": "loc_1", "email": "not-an-email", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["statusCode"], 422);
    assert_eq!(body["error"], "Unprocessable Entity");
    let messages = body["message"].as_array().expect("array message");
    assert!(
        messages.contains(&json!("email must be an email")),
        "{body}"
    );
    assert!(
        messages.contains(&json!("property colour should not exist")),
        "{body}"
    );
    assert!(fake.contacts_of("loc_1").is_empty());

    // PUT does not take locationId.
    let (_, _, created) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &token,
        Some(json!({"locationId": "loc_1", "firstName": "A"})),
    )
    .await;
    let id = created["contact"]["id"].as_str().expect("id");
    let (status, _, body) = api(
        &fake,
        reqwest::Method::PUT,
        &format!("/contacts/{id}"),
        &token,
        Some(json!({"locationId": "loc_1"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["message"],
        json!(["property locationId should not exist"])
    );
}

#[tokio::test]
async fn auth_version_scope_and_location_checks() {
    let fake = fake().await;
    let token = fake.issue_location_token("loc_1");
    let (_, _, created) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &token,
        Some(json!({"locationId": "loc_1", "firstName": "A"})),
    )
    .await;
    let id = created["contact"]["id"].as_str().expect("id").to_owned();

    // No Version header.
    let response = http()
        .get(format!("{}/contacts/{id}", fake.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"], "version header was not found");

    // A wrong key is the documented 401.
    let (status, _, body) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/contacts/{id}"),
        "wrong",
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Invalid token: access token is invalid");

    // Another location's token may not touch it.
    let other = fake.issue_location_token("loc_2");
    let (status, _, body) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/contacts/{id}"),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "The token does not have access to this location."
    );
    let (status, _, _) = api(
        &fake,
        reqwest::Method::POST,
        "/contacts/",
        &other,
        Some(json!({"locationId": "loc_1"})),
    )
    .await;
    assert_eq!(status, 403);

    // A read-only token cannot write.
    let reader = fake.issue_location_token_with_scopes("loc_1", &["contacts.readonly"]);
    let (status, _, _) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/contacts/{id}"),
        &reader,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = api(
        &fake,
        reqwest::Method::PUT,
        &format!("/contacts/{id}"),
        &reader,
        Some(json!({"firstName": "B"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"],
        "The token is not authorized for this scope."
    );

    // Unknown contact, and an unserved route.
    let (status, _, body) = api(&fake, reqwest::Method::GET, "/contacts/nope", &token, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Contact not found"))
    );
    let (status, _, body) = api(
        &fake,
        reqwest::Method::POST,
        &format!("/contacts/{id}/tags"),
        &token,
        Some(json!({"tags": ["x"]})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["message"],
        json!(format!("Cannot POST /contacts/{id}/tags"))
    );

    // Expired tokens are refused like unknown ones.
    fake.expire_access_tokens();
    let (status, _, _) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/contacts/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // The bearer token is redacted in the record.
    let authorization: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert!(!authorization.is_empty());
    assert!(authorization
        .iter()
        .all(|a| a == &format!("Bearer {REDACTED}")));
}

#[tokio::test]
async fn burst_limit_answers_429_per_location() {
    let fake = FakeGhl::start(FakeGhlConfig {
        burst_limit: 3,
        burst_interval: Duration::from_millis(300),
        ..FakeGhlConfig::default()
    })
    .await;
    let token = fake.issue_location_token("loc_1");
    let other = fake.issue_location_token("loc_2");
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) =
            api(&fake, reqwest::Method::GET, "/contacts/x", &token, None).await;
        assert_eq!(status, 400);
        assert_eq!(headers["x-ratelimit-remaining"], remaining);
    }
    let (status, headers, body) =
        api(&fake, reqwest::Method::GET, "/contacts/x", &token, None).await;
    assert_eq!(status, 429);
    assert_eq!(body["message"], "Too Many Requests");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    // Another location has its own budget.
    assert_eq!(
        api(&fake, reqwest::Method::GET, "/contacts/x", &other, None)
            .await
            .0,
        400
    );
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(
        api(&fake, reqwest::Method::GET, "/contacts/x", &token, None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn injected_failures_use_ghl_error_bodies() {
    let fake = fake().await;
    let token = fake.issue_location_token("loc_1");
    fake.fail_next(1, Failure::Status(503));
    fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(2),
        },
    );
    let (status, _, body) = api(&fake, reqwest::Method::GET, "/contacts/x", &token, None).await;
    assert_eq!(status, 503);
    assert_eq!(body["statusCode"], 503);
    let (status, headers, _) = api(&fake, reqwest::Method::GET, "/contacts/x", &token, None).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(
        api(&fake, reqwest::Method::GET, "/contacts/x", &token, None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn opportunities_search_filters_and_pages() {
    let fake = fake().await;
    let token = fake.issue_location_token("loc_1");
    let base = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    for i in 0..5i64 {
        fake.add_opportunity(
            "loc_1",
            NewOpportunity {
                name: format!("Deal {i}"),
                pipeline_id: "pipe_1".into(),
                pipeline_stage_id: "stage_1".into(),
                status: if i == 4 { "won".into() } else { "open".into() },
                monetary_value: Some("1250.50".into()),
                created_at: Some(base + chrono::Duration::minutes(i)),
                ..NewOpportunity::default()
            },
        );
    }
    fake.add_opportunity(
        "loc_2",
        NewOpportunity {
            name: "Elsewhere".into(),
            ..NewOpportunity::default()
        },
    );

    let search = |query: String| {
        let token = token.clone();
        let fake = &fake;
        async move {
            api(
                fake,
                reqwest::Method::GET,
                &format!("/opportunities/search?{query}"),
                &token,
                None,
            )
            .await
        }
    };
    let (status, _, page1) = search("location_id=loc_1&status=open&limit=2".into()).await;
    assert_eq!(status, 200, "{page1}");
    let names: Vec<&str> = page1["opportunities"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["Deal 0", "Deal 1"]);
    assert_eq!(page1["meta"]["total"], 4);
    assert_eq!(page1["meta"]["nextPage"], 2);
    assert_eq!(page1["opportunities"][0]["monetaryValue"], json!(1250.5));
    let after = page1["meta"]["startAfter"].as_i64().expect("startAfter");
    let after_id = page1["meta"]["startAfterId"]
        .as_str()
        .expect("startAfterId")
        .to_owned();

    let (_, _, page2) = search(format!(
        "location_id=loc_1&status=open&limit=2&startAfter={after}&startAfterId={after_id}"
    ))
    .await;
    let names: Vec<&str> = page2["opportunities"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["Deal 2", "Deal 3"]);
    assert_eq!(page2["meta"]["nextPage"], Value::Null);
    assert_eq!(page2["meta"]["nextPageUrl"], Value::Null);

    let (_, _, by_page) = search("location_id=loc_1&limit=2&page=3".into()).await;
    assert_eq!(by_page["opportunities"][0]["name"], "Deal 4");

    let (_, _, won) = search("location_id=loc_1&status=won&q=deal".into()).await;
    assert_eq!(won["meta"]["total"], 1);

    let (status, _, body) = search("location_id=loc_2".into()).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = search("location_id=loc_1&limit=500&locationId=x".into()).await;
    assert_eq!(status, 422);
    assert!(body["message"].as_array().expect("array").len() >= 2);
}

#[test]
fn signer_matches_the_rfc8032_and_derived_vectors() {
    let key = SigningKey::from_bytes(&RFC8032_TEST1_SECRET);
    assert_eq!(hex::encode(key.verifying_key().to_bytes()), RFC8032_PUBLIC);
    let empty = STANDARD.decode(sign_ed25519(&key, b"")).expect("base64");
    assert_eq!(hex::encode(empty), RFC8032_EMPTY_MESSAGE_SIGNATURE);
    assert_eq!(
        sign_ed25519(&key, CONTACT_CREATE.as_bytes()),
        CONTACT_CREATE_ED25519
    );
}

#[test]
fn legacy_rsa_signature_verifies_with_pkcs1v15_sha256() {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).expect("rsa key");
    let signature = sign_rsa_sha256(&key, CONTACT_CREATE.as_bytes()).expect("signature");
    let signature = STANDARD.decode(signature).expect("base64");
    let padding = || rsa::Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: vec![
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ]
        .into_boxed_slice(),
    };
    let public = key.to_public_key();
    let digest = Sha256::digest(CONTACT_CREATE.as_bytes());
    public
        .verify(padding(), &digest, &signature)
        .expect("verifies");
    let tampered = Sha256::digest(b"{}");
    assert!(public.verify(padding(), &tampered, &signature).is_err());
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    r.lock().expect("lock").push((headers, body));
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(received.clone());
    let listener = loopback().await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received, server)
}

#[tokio::test]
async fn webhooks_are_flat_signed_and_carry_timestamp_and_id() {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).expect("rsa key");
    let fake = FakeGhl::start(FakeGhlConfig {
        legacy_rsa_key: Some(key),
        ..FakeGhlConfig::default()
    })
    .await;
    let (url, received, _server) = receiver().await;
    let (sent, status, _) = fake
        .send_contact_created(
            &url,
            "loc_1",
            &json!({"id": "c_1", "firstName": "Ann", "locationId": "ignored"}),
        )
        .await
        .expect("deliver");
    assert_eq!(status, 200);
    let (_, _, _) = fake
        .send_appointment_created(
            &url,
            "loc_1",
            &json!({"id": "ap_1", "startTime": "2025-02-01T15:00:00+00:00"}),
        )
        .await
        .expect("deliver");

    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 2);
    let (headers, body) = &got[0];
    assert_eq!(body.as_ref(), sent.as_slice());
    let parsed: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(parsed["type"], "ContactCreate");
    assert_eq!(parsed["locationId"], "loc_1");
    assert_eq!(parsed["id"], "c_1");
    assert_eq!(parsed["firstName"], "Ann");
    assert!(parsed["webhookId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        chrono::DateTime::parse_from_rfc3339(parsed["timestamp"].as_str().expect("ts")).is_ok()
    );

    let public = VerifyingKey::from_bytes(
        &hex::decode(RFC8032_PUBLIC)
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    )
    .expect("key");
    let signature = STANDARD
        .decode(headers["x-ghl-signature"].to_str().expect("ascii"))
        .expect("base64");
    let signature = Signature::from_bytes(&signature.try_into().expect("64 bytes"));
    public
        .verify_strict(body, &signature)
        .expect("ed25519 verifies");
    assert!(headers.contains_key("x-wh-signature"));

    let appointment: Value = serde_json::from_slice(&got[1].1).expect("json");
    assert_eq!(appointment["type"], "AppointmentCreate");
    assert_eq!(appointment["appointment"]["id"], "ap_1");
}
