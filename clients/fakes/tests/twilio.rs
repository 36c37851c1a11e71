//! The Twilio fake against Twilio's documented behaviour: REST paths, Basic auth, form bodies,
//! error codes, segment counting, and webhooks signed so the official vectors verify.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use maxai_fakes::harness::{loopback, Failure, REDACTED};
use maxai_fakes::twilio::{self, FakeTwilio, FakeTwilioConfig};
use serde_json::Value;
use sha1::Sha1;

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "auth-token-one";
const OTHER_ACCOUNT: &str = "AC00000000000000000000000000000002";
const OTHER_TOKEN: &str = "auth-token-two";
const FROM: &str = "+14155550100";
const TO: &str = "+14155550199";

async fn fake() -> FakeTwilio {
    let fake = FakeTwilio::start(FakeTwilioConfig::default()).await;
    fake.add_account(ACCOUNT, TOKEN);
    fake.add_number(ACCOUNT, FROM);
    fake.add_account(OTHER_ACCOUNT, OTHER_TOKEN);
    fake
}

fn messages_url(fake: &FakeTwilio, account: &str) -> String {
    format!(
        "{}/2010-04-01/Accounts/{account}/Messages.json",
        fake.base_url()
    )
}

async fn post_form(
    url: &str,
    user: &str,
    password: &str,
    params: &[(&str, &str)],
) -> (u16, Value, HeaderMap) {
    let response = reqwest::Client::new()
        .post(url)
        .basic_auth(user, Some(password))
        .form(params)
        .send()
        .await
        .expect("fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.expect("json body");
    (status, body, headers)
}

async fn get_json(url: &str, user: &str, password: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("fake answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// A webhook receiver that keeps what it got and answers empty TwiML, as the platform does.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
}

impl Receiver {
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = loopback().await.expect("loopback");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let got = self.got.clone();
        let app = Router::new().route(
            "/hooks/twilio",
            post(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let got = got.clone();
                async move {
                    got.lock()
                        .expect("lock")
                        .push((uri.to_string(), headers, body));
                    "<Response></Response>"
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("{base}/hooks/twilio?account=acme"), server)
    }

    fn got(&self) -> Vec<(String, HeaderMap, Bytes)> {
        self.got.lock().expect("lock").clone()
    }
}

/// Verifies like Twilio's SDK validators (an independent implementation, not the fake's).
fn verifies(token: &str, url: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(signature) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in &params {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    expected == signature
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn signer_matches_the_official_vectors() {
    // twilio-python tests/unit/test_request_validator.py, token 12345 (PROVIDERS.md §3.1),
    // the same vectors the platform's verifier is tested with.
    let params = owned(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ]);
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        twilio::signature("12345", url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    assert_eq!(
        twilio::signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params
        ),
        "kvajT1Ptam85bY51eRf/AJRuM3w="
    );
    assert_eq!(
        twilio::signature(
            "12345",
            "http://mycompany.com:80/myapp.php?foo=1&bar=2",
            &params
        ),
        "0ZXoZLH/DfblKGATFgpif+LLRf4="
    );
    assert_eq!(
        twilio::signature(
            "12345",
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &params
        ),
        "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
    );
    let duplicates = owned(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
    ]);
    assert_eq!(
        twilio::signature("12345", url, &duplicates),
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    );
    assert_ne!(
        twilio::signature("54321", url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}

#[tokio::test]
async fn sends_a_message_like_twilio() {
    let fake = fake().await;
    let body = "€".repeat(81); // 162 septets: two GSM-7 parts
    let (status, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[("To", TO), ("From", FROM), ("Body", &body)],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    let sid = json["sid"].as_str().expect("sid").to_owned();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(json["status"], "queued");
    assert_eq!(json["num_segments"], "2");
    assert_eq!(json["num_media"], "0");
    assert_eq!(json["price"], Value::Null);
    assert_eq!(json["price_unit"], "USD");
    assert_eq!(json["direction"], "outbound-api");
    assert_eq!(json["account_sid"], ACCOUNT);
    assert_eq!(json["from"], FROM);
    assert_eq!(json["to"], TO);
    assert_eq!(json["error_code"], Value::Null);
    let created = json["date_created"].as_str().expect("date");
    assert!(
        chrono::DateTime::parse_from_rfc2822(created).is_ok(),
        "{created}"
    );
    assert!(created.ends_with("+0000"), "{created}");

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sid, sid);
    assert_eq!(messages[0].body, body);

    // Unicode text is UCS-2: 71 characters need two segments.
    let (_, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[("To", TO), ("From", FROM), ("Body", &"ж".repeat(71))],
    )
    .await;
    assert_eq!(json["num_segments"], "2");

    // Media makes an MMS and a body is then optional.
    let (status, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", FROM),
            ("MediaUrl", "https://example.com/a.png"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert!(json["sid"].as_str().is_some_and(|s| s.starts_with("MM")));
    assert_eq!(json["num_media"], "1");

    // Recorded, with the credential redacted.
    let recorded = fake.message_requests(ACCOUNT);
    assert_eq!(recorded.len(), 3);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Basic {REDACTED}").as_str())
    );
    assert_eq!(recorded[0].form().get("To").map(String::as_str), Some(TO));
    assert_eq!(recorded[0].status, Some(201));
}

#[tokio::test]
async fn refuses_bad_credentials_as_twilio_does() {
    let fake = fake().await;
    let url = messages_url(&fake, ACCOUNT);
    let params = [("To", TO), ("From", FROM), ("Body", "hi")];
    for (user, password) in [
        (ACCOUNT, "wrong"),
        (OTHER_ACCOUNT, OTHER_TOKEN),
        ("SK00000000000000000000000000000001", "secret"),
    ] {
        let (status, json, headers) = post_form(&url, user, password, &params).await;
        assert_eq!(status, 401, "{user}");
        assert_eq!(json["code"], 20003);
        assert_eq!(json["message"], "Authenticate");
        assert_eq!(
            json["more_info"],
            "https://www.twilio.com/docs/errors/20003"
        );
        assert_eq!(json["status"], 401);
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"Twilio API\"")
        );
    }
    // An unauthenticated request gets the same answer.
    let response = reqwest::Client::new()
        .post(&url)
        .form(&params)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    assert!(fake.messages().is_empty());

    // An API key of the account works; the same key against another account does not.
    fake.add_api_key(ACCOUNT, "SK00000000000000000000000000000001", "secret");
    let (status, _, _) = post_form(
        &url,
        "SK00000000000000000000000000000001",
        "secret",
        &params,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, _) = post_form(
        &messages_url(&fake, OTHER_ACCOUNT),
        "SK00000000000000000000000000000001",
        "secret",
        &params,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn validates_messages_with_twilio_codes() {
    let fake = fake().await;
    let url = messages_url(&fake, ACCOUNT);
    let long = "a".repeat(1601);
    let cases: [(&[(&str, &str)], u64); 7] = [
        (&[("From", FROM), ("Body", "hi")], 21604),
        (
            &[("To", "4155550199"), ("From", FROM), ("Body", "hi")],
            21211,
        ),
        (&[("To", TO), ("Body", "hi")], 21603),
        (
            &[("To", TO), ("From", "+14155550123"), ("Body", "hi")],
            21606,
        ),
        (&[("To", TO), ("From", FROM)], 21602),
        (&[("To", TO), ("From", FROM), ("Body", &long)], 21617),
        (
            &[("To", TO), ("MessagingServiceSid", "MG0"), ("Body", "hi")],
            21702,
        ),
    ];
    for (params, code) in cases {
        let (status, json, _) = post_form(&url, ACCOUNT, TOKEN, params).await;
        assert_eq!(status, 400, "{params:?}");
        assert_eq!(json["code"].as_u64(), Some(code), "{json}");
        assert_eq!(json["status"], 400);
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(fake.messages().is_empty());

    // A messaging service picks its sender and starts at `accepted`.
    fake.add_messaging_service(ACCOUNT, "MG01", &[FROM]);
    let (status, json, _) = post_form(
        &url,
        ACCOUNT,
        TOKEN,
        &[("To", TO), ("MessagingServiceSid", "MG01"), ("Body", "hi")],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["status"], "accepted");
    assert_eq!(json["from"], FROM);
    assert_eq!(json["messaging_service_sid"], "MG01");
}

#[tokio::test]
async fn status_callbacks_are_signed_and_the_price_becomes_final() {
    let fake = fake().await;
    let receiver = Receiver::default();
    let (callback, _server) = receiver.start().await;
    let (_, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", FROM),
            ("Body", "hello"),
            ("StatusCallback", &callback),
        ],
    )
    .await;
    let sid = json["sid"].as_str().expect("sid").to_owned();
    // No callback for the initial status.
    assert!(receiver.got().is_empty());

    let sent = fake
        .advance(&sid, "sent")
        .await
        .expect("delivered")
        .expect("a callback");
    assert_eq!(sent.status, 200);
    let delivered = fake
        .advance(&sid, "delivered")
        .await
        .expect("delivered")
        .expect("a callback");
    assert_eq!(
        delivered.response,
        Bytes::from_static(b"<Response></Response>")
    );

    let got = receiver.got();
    assert_eq!(got.len(), 2);
    for (uri, headers, body) in &got {
        // The receiver sees the path and query; Twilio signed the full URL.
        assert!(callback.ends_with(uri.as_str()), "{uri}");
        assert!(verifies(TOKEN, &callback, headers, body));
        assert!(!verifies(OTHER_TOKEN, &callback, headers, body));
        assert!(headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")));
    }
    let last: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(&got[1].2).into_owned().collect();
    assert_eq!(last.get("MessageSid"), Some(&sid));
    assert_eq!(
        last.get("MessageStatus").map(String::as_str),
        Some("delivered")
    );
    assert_eq!(last.get("SmsStatus").map(String::as_str), Some("delivered"));
    assert_eq!(last.get("AccountSid").map(String::as_str), Some(ACCOUNT));
    assert_eq!(
        last.get("ApiVersion").map(String::as_str),
        Some("2010-04-01")
    );
    assert!(!last.contains_key("ErrorCode"));

    let (status, json) = get_json(
        &format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
            fake.base_url()
        ),
        ACCOUNT,
        TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["status"], "delivered");
    assert_eq!(json["price"], "-0.00790");
    assert!(json["date_sent"].as_str().is_some());

    // A failure carries its error code, in the resource and the callback.
    let (_, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", FROM),
            ("Body", "hello"),
            ("StatusCallback", &callback),
        ],
    )
    .await;
    let failed_sid = json["sid"].as_str().expect("sid").to_owned();
    fake.fail_message(&failed_sid, "undelivered", 30003)
        .await
        .expect("delivered");
    let got = receiver.got();
    let params: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(&got[2].2).into_owned().collect();
    assert_eq!(params.get("ErrorCode").map(String::as_str), Some("30003"));
    let message = fake.message(&failed_sid).expect("kept");
    assert_eq!(message.error_code, Some(30003));
    assert_eq!(message.status, "undelivered");

    // Another account's credentials do not see the message.
    fake.add_number(OTHER_ACCOUNT, "+14155550111");
    let (status, json) = get_json(
        &format!(
            "{}/2010-04-01/Accounts/{OTHER_ACCOUNT}/Messages/{sid}.json",
            fake.base_url()
        ),
        OTHER_ACCOUNT,
        OTHER_TOKEN,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(json["code"], 20404);
}

#[tokio::test]
async fn auto_progress_delivers_on_its_own() {
    let fake = FakeTwilio::start(FakeTwilioConfig {
        auto_progress: Some(Duration::from_millis(20)),
        ..FakeTwilioConfig::default()
    })
    .await;
    fake.add_account(ACCOUNT, TOKEN);
    fake.add_number(ACCOUNT, FROM);
    let receiver = Receiver::default();
    let (callback, _server) = receiver.start().await;
    let (_, json, _) = post_form(
        &messages_url(&fake, ACCOUNT),
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", FROM),
            ("Body", "hello"),
            ("StatusCallback", &callback),
        ],
    )
    .await;
    let sid = json["sid"].as_str().expect("sid").to_owned();
    for _ in 0..50 {
        if receiver.got().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(receiver.got().len(), 2);
    assert_eq!(
        fake.message(&sid).map(|m| m.status),
        Some("delivered".to_owned())
    );
}

#[tokio::test]
async fn inbound_sms_is_signed_like_twilio() {
    let fake = fake().await;
    let receiver = Receiver::default();
    let (url, _server) = receiver.start().await;
    let delivery = fake
        .send_inbound_sms(&url, TO, FROM, "STOP please")
        .await
        .expect("delivered");
    assert_eq!(delivery.status, 200);
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let (_, headers, body) = &got[0];
    assert!(verifies(TOKEN, &url, headers, body));
    let params: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    assert_eq!(params.get("From").map(String::as_str), Some(TO));
    assert_eq!(params.get("To").map(String::as_str), Some(FROM));
    assert_eq!(params.get("Body").map(String::as_str), Some("STOP please"));
    assert_eq!(
        params.get("SmsStatus").map(String::as_str),
        Some("received")
    );
    assert_eq!(params.get("MessageSid"), params.get("SmsSid"));
    assert_eq!(params.get("AccountSid").map(String::as_str), Some(ACCOUNT));
    assert_eq!(fake.messages()[0].direction, "inbound");

    // A number no account owns cannot receive.
    assert!(fake
        .send_inbound_sms(&url, TO, "+14155550777", "hi")
        .await
        .is_err());
}

#[tokio::test]
async fn calls_run_and_complete_with_signed_progress() {
    let fake = fake().await;
    let receiver = Receiver::default();
    let (callback, _server) = receiver.start().await;
    let url = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
        fake.base_url()
    );

    let (status, json, _) = post_form(&url, ACCOUNT, TOKEN, &[("To", TO), ("From", FROM)]).await;
    assert_eq!((status, json["code"].as_u64()), (400, Some(21205)));
    let (status, json, _) = post_form(
        &url,
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", "+14155550123"),
            ("Twiml", "<Response/>"),
        ],
    )
    .await;
    assert_eq!((status, json["code"].as_u64()), (400, Some(21210)));

    let (status, json, _) = post_form(
        &url,
        ACCOUNT,
        TOKEN,
        &[
            ("To", TO),
            ("From", FROM),
            ("Twiml", "<Response><Say>Hi</Say></Response>"),
            ("StatusCallback", &callback),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "completed"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["status"], "queued");
    assert_eq!(json["price"], Value::Null);
    let sid = json["sid"].as_str().expect("sid").to_owned();
    assert!(sid.starts_with("CA"));

    let deliveries = fake.complete_call(&sid, 61).await.expect("delivered");
    assert_eq!(deliveries.len(), 2);
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    let statuses: Vec<String> = got
        .iter()
        .map(|(_, headers, body)| {
            assert!(verifies(TOKEN, &callback, headers, body));
            let params: std::collections::BTreeMap<String, String> =
                form_urlencoded::parse(body).into_owned().collect();
            params.get("CallStatus").cloned().unwrap_or_default()
        })
        .collect();
    assert_eq!(statuses, ["ringing", "completed"]);
    let completed: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(&got[1].2).into_owned().collect();
    assert_eq!(
        completed.get("CallDuration").map(String::as_str),
        Some("61")
    );
    assert_eq!(
        completed.get("SequenceNumber").map(String::as_str),
        Some("1")
    );
    assert_eq!(completed.get("CallSid"), Some(&sid));

    let (status, json) = get_json(
        &format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json",
            fake.base_url()
        ),
        ACCOUNT,
        TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["status"], "completed");
    assert_eq!(json["duration"], "61");
    // Two started minutes at 0.014.
    assert_eq!(json["price"], "-0.02800");
    // A second completion posts nothing again.
    assert!(fake.complete_call(&sid, 61).await.expect("ok").is_empty());
}

#[tokio::test]
async fn injected_failures_use_twilio_error_bodies() {
    let fake = fake().await;
    let url = messages_url(&fake, ACCOUNT);
    let params = [("To", TO), ("From", FROM), ("Body", "hi")];
    fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(2),
        },
    );
    let (status, json, headers) = post_form(&url, ACCOUNT, TOKEN, &params).await;
    assert_eq!(status, 429);
    assert_eq!(json["code"], 20429);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    fake.fail_next(1, Failure::Status(500));
    let (status, json, _) = post_form(&url, ACCOUNT, TOKEN, &params).await;
    assert_eq!((status, json["code"].as_u64()), (500, Some(20500)));
    assert!(fake.messages().is_empty());
    let (status, _, _) = post_form(&url, ACCOUNT, TOKEN, &params).await;
    assert_eq!(status, 201);
    let statuses: Vec<Option<u16>> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(500), Some(201)]);
}
