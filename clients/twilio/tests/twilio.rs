//! The Twilio adapter against the fake Twilio over loopback: the real HTTP path, only the base
//! URL differs.
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::StaticCredentials;
use maxai_fakes::harness::Failure;
use maxai_fakes::twilio::{FakeTwilio, FakeTwilioConfig};
use maxai_kit::auth::Principal;
use maxai_kit::shared_state::MemoryCache;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionAuthMethod, ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::messaging::v1::make_call_request::Instructions;
use maxai_proto::maxai::ports::messaging::v1::messaging_service_server::MessagingService;
use maxai_proto::maxai::ports::messaging::v1::{
    CallStatus, CallStatusEvent, GetMessageStatusRequest, MakeCallRequest, MessageStatus,
    SendSmsRequest,
};
use maxai_twilio::{TwilioAdapter, TwilioConfig};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/twilio-main";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tok-secret-0123456789";
const FROM: &str = "+14155550100";
const TO: &str = "+14155550199";
const CALLBACK: &str = "https://api.maxai.example/v1/webhooks/twilio?endpoint=ep1";

struct Env {
    fake: FakeTwilio,
    creds: Arc<StaticCredentials>,
    adapter: TwilioAdapter,
}

fn credential(secret: &str) -> ConnectionCredential {
    ConnectionCredential {
        connection: CONN.to_owned(),
        provider: ConnectionProvider::Twilio as i32,
        auth_method: ConnectionAuthMethod::ApiKey as i32,
        api_key: secret.to_owned(),
        external_account_id: ACCOUNT.to_owned(),
        ..Default::default()
    }
}

fn config(base_url: &str) -> TwilioConfig {
    TwilioConfig {
        base_url: base_url.to_owned(),
        timeout_ms: 300,
        connect_timeout_ms: 300,
        max_attempts: 3,
        min_backoff_ms: 5,
        max_backoff_ms: 20,
        max_retry_after_secs: 2,
        breaker_failures: 3,
        breaker_cooldown_ms: 200,
        ..TwilioConfig::default()
    }
}

async fn env() -> Env {
    let fake = FakeTwilio::start(FakeTwilioConfig::default()).await;
    fake.add_account(ACCOUNT, TOKEN);
    fake.add_number(ACCOUNT, FROM);
    let creds = StaticCredentials::new();
    creds.insert(credential(TOKEN));
    let adapter = TwilioAdapter::new(
        &config(fake.base_url()),
        creds.clone(),
        Arc::new(MemoryCache::new(1000)),
    );
    Env {
        fake,
        creds,
        adapter,
    }
}

/// A request as the guard hands it on: with the verified caller of tenant `acme`.
fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Principal {
        subject: "tenants/acme/users/ann".to_owned(),
        tenant: "acme".to_owned(),
        token_id: "t1".to_owned(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    request
}

fn ctx(key: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: CONN.to_owned(),
        idempotency_key: key.to_owned(),
    })
}

fn sms(key: &str, body: &str) -> SendSmsRequest {
    SendSmsRequest {
        context: ctx(key),
        from_number: FROM.to_owned(),
        to_number: TO.to_owned(),
        body: body.to_owned(),
        ..Default::default()
    }
}

fn status_of(sid: &str) -> GetMessageStatusRequest {
    GetMessageStatusRequest {
        context: ctx(""),
        sid: sid.to_owned(),
    }
}

fn provider_code(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("provider_code").cloned())
        .unwrap_or_default()
}

fn provider_message(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("provider_message").cloned())
        .unwrap_or_default()
}

fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn send_sms_sends_the_form_and_reports_segments() {
    let env = env().await;
    let mut request = sms("exec-1/step-1", &"a".repeat(200));
    request.status_callback_url = CALLBACK.to_owned();
    request.validity_period = Some(prost_types::Duration {
        seconds: 600,
        nanos: 0,
    });
    let response = env
        .adapter
        .send_sms(req(request))
        .await
        .expect("sent")
        .into_inner();

    let messages = env.fake.messages();
    assert_eq!(messages.len(), 1);
    let sent = &messages[0];
    assert_eq!(response.sid, sent.sid);
    assert_eq!(response.status(), MessageStatus::Queued);
    assert_eq!(response.segments, 2);
    assert_eq!(response.price, None);
    let usage = response.usage.expect("usage");
    assert_eq!(usage.items.len(), 1);
    assert_eq!(usage.items[0].meter, "sms.segments");
    assert_eq!(usage.items[0].quantity, 2);
    assert_eq!(usage.items[0].cost, None);
    let created = response.create_time.expect("create time");
    assert!((created.seconds - chrono::Utc::now().timestamp()).abs() < 60);

    assert_eq!(sent.from, FROM);
    assert_eq!(sent.to, TO);
    assert_eq!(sent.status_callback.as_deref(), Some(CALLBACK));
    assert_eq!(sent.validity_period, Some(600));
    let recorded = env.fake.message_requests(ACCOUNT);
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        recorded[0].header("authorization"),
        Some("Basic [redacted]")
    );
}

#[tokio::test]
async fn send_sms_with_an_api_key_and_a_messaging_service() {
    let env = env().await;
    let key_sid = "SK0123456789abcdef0123456789abcdef";
    env.fake.add_api_key(ACCOUNT, key_sid, "key-secret");
    let service = "MG0123456789abcdef0123456789abcdef";
    env.fake.add_messaging_service(ACCOUNT, service, &[FROM]);
    env.creds.insert(ConnectionCredential {
        key_id: key_sid.to_owned(),
        ..credential("key-secret")
    });
    let mut request = sms("", "hi");
    request.from_number = String::new();
    request.messaging_service_sid = service.to_owned();
    request.media_urls = vec!["https://cdn.example/a.png".to_owned()];
    let response = env
        .adapter
        .send_sms(req(request))
        .await
        .expect("sent")
        .into_inner();
    assert_eq!(response.status(), MessageStatus::Accepted);
    assert!(response.sid.starts_with("MM"));
    let sent = &env.fake.messages()[0];
    assert_eq!(sent.messaging_service_sid.as_deref(), Some(service));
    assert_eq!(sent.media_urls, ["https://cdn.example/a.png"]);
}

#[tokio::test]
async fn message_status_follows_delivery_with_a_positive_price() {
    let env = env().await;
    let sid = env
        .adapter
        .send_sms(req(sms("k1", "hello")))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    let queued = env
        .adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(queued.status(), MessageStatus::Queued);
    assert_eq!(queued.price, None);
    assert_eq!(queued.send_time, None);

    env.fake.advance(&sid, "sent").await.expect("advanced");
    env.fake.advance(&sid, "delivered").await.expect("advanced");
    let delivered = env
        .adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(delivered.sid, sid);
    assert_eq!(delivered.status(), MessageStatus::Delivered);
    assert_eq!(delivered.segments, 1);
    assert_eq!(delivered.error_code, 0);
    let price = delivered.price.expect("final price");
    // Twilio's "-0.00790" is a charge of 0.0079 USD.
    assert_eq!(
        (price.currency_code.as_str(), price.units, price.nanos),
        ("USD", 0, 7_900_000)
    );
    assert!(delivered.send_time.is_some());
    assert!(delivered.create_time.is_some() && delivered.update_time.is_some());

    let failed = env
        .adapter
        .send_sms(req(sms("k2", "hello")))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    env.fake
        .fail_message(&failed, "undelivered", 30003)
        .await
        .expect("advanced");
    let undelivered = env
        .adapter
        .get_message_status(req(status_of(&failed)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(undelivered.status(), MessageStatus::Undelivered);
    assert_eq!(undelivered.error_code, 30003);
    assert_eq!(undelivered.error_message, "Unreachable destination handset");
}

#[tokio::test]
async fn make_call_sends_twiml_and_progress_events() {
    let env = env().await;
    let request = MakeCallRequest {
        context: ctx("call-1"),
        from_number: FROM.to_owned(),
        to_number: TO.to_owned(),
        instructions: Some(Instructions::Twiml(
            "<Response><Say>Hi</Say></Response>".to_owned(),
        )),
        status_callback_url: CALLBACK.to_owned(),
        status_callback_events: vec![
            CallStatusEvent::Answered as i32,
            CallStatusEvent::Completed as i32,
        ],
        ring_timeout: Some(prost_types::Duration {
            seconds: 20,
            nanos: 0,
        }),
        record: true,
    };
    let response = env
        .adapter
        .make_call(req(request))
        .await
        .expect("placed")
        .into_inner();
    assert!(response.sid.starts_with("CA"));
    assert_eq!(response.status(), CallStatus::Queued);
    assert_eq!(response.usage.map(|u| u.items.len()), Some(0));
    assert!(response.create_time.is_some());
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.sid, response.sid);
    assert_eq!(
        call.twiml.as_deref(),
        Some("<Response><Say>Hi</Say></Response>")
    );
    assert_eq!(call.status_callback.as_deref(), Some(CALLBACK));
    assert_eq!(call.status_callback_events, ["answered", "completed"]);
    assert_eq!(call.timeout_secs, Some(20));
    assert!(call.record);

    // A URL instead of TwiML; the same idempotency key answers from the first call.
    let by_url = MakeCallRequest {
        context: ctx("call-2"),
        from_number: FROM.to_owned(),
        to_number: TO.to_owned(),
        instructions: Some(Instructions::Url("https://twiml.example/answer".to_owned())),
        ..Default::default()
    };
    let first = env
        .adapter
        .make_call(req(by_url.clone()))
        .await
        .expect("placed")
        .into_inner();
    let again = env
        .adapter
        .make_call(req(by_url))
        .await
        .expect("placed")
        .into_inner();
    assert_eq!(first, again);
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].url.as_deref(),
        Some("https://twiml.example/answer")
    );
}

#[tokio::test]
async fn repeated_idempotency_key_sends_exactly_one_message() {
    let env = env().await;
    let first = env
        .adapter
        .send_sms(req(sms("exec-9/step-3", "hello")))
        .await
        .expect("sent")
        .into_inner();
    let repeat = env
        .adapter
        .send_sms(req(sms("exec-9/step-3", "hello")))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(first, repeat);
    assert_eq!(env.fake.messages().len(), 1);
    assert_eq!(env.fake.message_requests(ACCOUNT).len(), 1);

    let other = env
        .adapter
        .send_sms(req(sms("exec-9/step-4", "hello")))
        .await
        .expect("sent")
        .into_inner();
    assert_ne!(other.sid, first.sid);
    assert_eq!(env.fake.messages().len(), 2);

    // Concurrent duplicates: one goes to Twilio, the other gets its result.
    let (a, b) = tokio::join!(
        env.adapter.send_sms(req(sms("exec-9/step-5", "hello"))),
        env.adapter.send_sms(req(sms("exec-9/step-5", "hello"))),
    );
    assert_eq!(a.expect("a").into_inner(), b.expect("b").into_inner());
    assert_eq!(env.fake.messages().len(), 3);

    // Without a key every call sends.
    env.adapter.send_sms(req(sms("", "x"))).await.expect("sent");
    env.adapter.send_sms(req(sms("", "x"))).await.expect("sent");
    assert_eq!(env.fake.messages().len(), 5);
}

/// Without Redis the first result lives in the adapters' database: an adapter started again
/// (a restarted process) answers a repeated key from it instead of texting twice.
#[tokio::test]
async fn a_restarted_adapter_without_redis_still_sends_once_per_key() {
    for backend in maxai_testkit::backends().await {
        let env = env().await;
        let durable = |creds: Arc<StaticCredentials>| {
            let (fake, storage) = (env.fake.base_url().to_owned(), backend.storage.clone());
            async move {
                let cache = maxai_adapter::SqlCache::connect(&storage)
                    .await
                    .expect("the adapters' database");
                TwilioAdapter::new(&config(&fake), creds, Arc::new(cache))
            }
        };
        let before = durable(env.creds.clone()).await;
        let first = before
            .send_sms(req(sms("exec-7/step-2", "see you at 3")))
            .await
            .expect("sent")
            .into_inner();
        drop(before);
        let after = durable(env.creds.clone()).await;
        let repeat = after
            .send_sms(req(sms("exec-7/step-2", "see you at 3")))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(first, repeat, "{}", backend.name);
        assert_eq!(env.fake.messages().len(), 1, "{}", backend.name);
    }
}

#[tokio::test]
async fn twilio_errors_map_to_codes_with_the_provider_message() {
    let env = env().await;
    // E.164-shaped enough for us, too short for Twilio.
    let mut request = sms("e1", "hi");
    request.to_number = "+1234".to_owned();
    let err = env.adapter.send_sms(req(request)).await.expect_err("21211");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(provider_code(&err), "21211");
    assert!(provider_message(&err).contains("Invalid 'To' Phone Number"));

    let mut request = sms("e2", "hi");
    request.from_number = "+14155550123".to_owned();
    let err = env.adapter.send_sms(req(request)).await.expect_err("21606");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(provider_code(&err), "21606");
    assert!(
        err.message().contains("not a valid, SMS-capable"),
        "{err:?}"
    );

    let mut call = MakeCallRequest {
        context: ctx("e3"),
        from_number: "+14155550123".to_owned(),
        to_number: TO.to_owned(),
        instructions: Some(Instructions::Twiml("<Response/>".to_owned())),
        ..Default::default()
    };
    let err = env
        .adapter
        .make_call(req(call.clone()))
        .await
        .expect_err("21210");
    assert_eq!(
        (err.code(), provider_code(&err)),
        (Code::InvalidArgument, "21210".to_owned())
    );
    call.from_number = FROM.to_owned();

    let err = env
        .adapter
        .get_message_status(req(status_of("SM00000000000000000000000000000000")))
        .await
        .expect_err("404");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(provider_code(&err), "20404");
    let info = err.get_error_details().error_info().cloned().expect("info");
    assert_eq!(info.metadata["provider"], "twilio");
    assert_eq!(info.metadata["http_status"], "404");

    // A failed send can be tried again with the same key: nothing was kept for it.
    env.adapter
        .send_sms(req(sms("e2", "hi")))
        .await
        .expect("sent on retry");
    env.adapter
        .make_call(req(call))
        .await
        .expect("placed on retry");
}

#[tokio::test]
async fn refused_credential_is_refreshed_exactly_once() {
    let env = env().await;
    env.creds.insert(credential("stale-token"));
    env.creds.insert_refreshed(credential(TOKEN));
    env.adapter
        .send_sms(req(sms("r1", "hi")))
        .await
        .expect("sent after refresh");
    assert_eq!(env.creds.refreshes(CONN), 1);
    let statuses: Vec<_> = env
        .fake
        .message_requests(ACCOUNT)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [Some(401), Some(201)]);

    // Still wrong after the refresh: FAILED_PRECONDITION, no second refresh, no loop.
    env.fake.clear_requests();
    env.creds.insert(credential("wrong-token-abc"));
    env.creds.insert_refreshed(credential("wrong-token-abc"));
    let err = env
        .adapter
        .send_sms(req(sms("r2", "hi")))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(provider_code(&err), "20003");
    assert_eq!(provider_message(&err), "Authenticate");
    assert_eq!(env.creds.refreshes(CONN), 2);
    assert_eq!(env.fake.requests().len(), 2);
    // The secret appears nowhere: not in the error, not in what Twilio recorded.
    assert!(!format!("{err:?}").contains("wrong-token-abc"));
    for record in env.fake.requests() {
        let text = format!("{record:?}");
        assert!(
            !text.contains("wrong-token-abc") && !text.contains(TOKEN),
            "{text}"
        );
    }
    assert_eq!(env.fake.messages().len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_and_retry_after_is_honoured() {
    let env = env().await;
    let sid = env
        .adapter
        .send_sms(req(sms("", "hi")))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    env.adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect("after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.fake.requests().len(), 2);

    // A 429 means Twilio did nothing: even a send is repeated.
    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    env.adapter
        .send_sms(req(sms("rl-1", "hi")))
        .await
        .expect("sent");
    assert_eq!(env.fake.requests().len(), 2);
    assert_eq!(env.fake.messages().len(), 2);

    // A wait longer than the configured limit goes back to the caller at once.
    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let err = env
        .adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect_err("rate limited");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(provider_code(&err), "20429");
    assert_eq!(
        err.get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(60))
    );
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_only_for_safe_calls() {
    let env = env().await;
    let sid = env
        .adapter
        .send_sms(req(sms("", "hi")))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    env.fake.clear_requests();
    env.fake.fail_next(2, Failure::Status(500));
    env.adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect("third attempt");
    assert_eq!(env.fake.requests().len(), 3);

    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(503));
    let err = env
        .adapter
        .send_sms(req(sms("s1", "hi")))
        .await
        .expect_err("not retried");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(provider_code(&err), "20503");
    assert_eq!(env.fake.requests().len(), 1);
    assert_eq!(env.fake.messages().len(), 1);

    env.fake.fail_next(1, Failure::Status(500));
    let err = env
        .adapter
        .make_call(req(MakeCallRequest {
            context: ctx("c1"),
            from_number: FROM.to_owned(),
            to_number: TO.to_owned(),
            instructions: Some(Instructions::Twiml("<Response/>".to_owned())),
            ..Default::default()
        }))
        .await
        .expect_err("not retried");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests().len(), 2);
    assert!(env.fake.calls().is_empty());
}

#[tokio::test]
async fn timeouts_fail_sends_and_retry_lookups() {
    let env = env().await;
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(500)));
    let err = env
        .adapter
        .send_sms(req(sms("t1", "hi")))
        .await
        .expect_err("timed out");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.message_requests(ACCOUNT).len(), 1);
    // The slow answer did go out: the step's retry with the same key must not text again.
    let err = env
        .adapter
        .send_sms(req(sms("t1", "hi")))
        .await
        .expect_err("maybe sent");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(env.fake.message_requests(ACCOUNT).len(), 1);

    let sid = env
        .adapter
        .send_sms(req(sms("", "hi")))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    env.fake.clear_requests();
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(500)));
    env.adapter
        .get_message_status(req(status_of(&sid)))
        .await
        .expect("retried after the timeout");
    assert_eq!(env.fake.requests().len(), 2);
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_and_closes_after_cooldown() {
    let env = env().await;
    env.fake.fail_next(3, Failure::Status(500));
    for i in 0..3 {
        let err = env
            .adapter
            .send_sms(req(sms(&format!("b{i}"), "hi")))
            .await
            .expect_err("500");
        assert_eq!(err.code(), Code::Unknown);
    }
    assert_eq!(env.fake.requests().len(), 3);
    let err = env
        .adapter
        .send_sms(req(sms("b3", "hi")))
        .await
        .expect_err("circuit open");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit open"), "{err:?}");
    assert_eq!(env.fake.requests().len(), 3, "failed fast");

    tokio::time::sleep(Duration::from_millis(250)).await;
    env.adapter
        .send_sms(req(sms("b3", "hi")))
        .await
        .expect("trial call closes the circuit");
    env.adapter
        .send_sms(req(sms("b4", "hi")))
        .await
        .expect("closed");
    assert_eq!(env.fake.messages().len(), 2);
}

#[tokio::test]
async fn bad_input_is_refused_before_twilio_is_called() {
    let env = env().await;
    let err = env
        .adapter
        .send_sms(req(SendSmsRequest {
            context: ctx("v1"),
            from_number: "4155550100".to_owned(),
            to_number: "+1 415 555".to_owned(),
            body: "x".repeat(1601),
            media_urls: vec!["file:///etc/passwd".to_owned()],
            status_callback_url: "not a url".to_owned(),
            validity_period: Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "to_number",
            "from_number",
            "body",
            "media_urls[0]",
            "status_callback_url",
            "validity_period"
        ]
    );

    let err = env
        .adapter
        .send_sms(req(SendSmsRequest {
            context: ctx("v2"),
            to_number: TO.to_owned(),
            messaging_service_sid: "MGnope".to_owned(),
            ..Default::default()
        }))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&err), ["messaging_service_sid", "body"]);

    let err = env
        .adapter
        .make_call(req(MakeCallRequest {
            context: ctx("v3"),
            from_number: FROM.to_owned(),
            to_number: "+0123".to_owned(),
            instructions: None,
            status_callback_events: vec![CallStatusEvent::Unspecified as i32],
            ring_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&err),
        [
            "to_number",
            "twiml",
            "status_callback_events",
            "status_callback_events[0]",
            "ring_timeout"
        ]
    );
    let err = env
        .adapter
        .make_call(req(MakeCallRequest {
            context: ctx("v4"),
            from_number: FROM.to_owned(),
            to_number: TO.to_owned(),
            instructions: Some(Instructions::Url("javascript:alert(1)".to_owned())),
            ..Default::default()
        }))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&err), ["url"]);

    for sid in ["", "SM123", "../Calls/CA0123456789abcdef0123456789abcdef"] {
        let err = env
            .adapter
            .get_message_status(req(status_of(sid)))
            .await
            .expect_err("invalid");
        assert_eq!(violated_fields(&err), ["sid"], "{sid}");
    }

    // The connection: malformed, another tenant's, or no verified caller.
    let mut request = sms("v5", "hi");
    request.context = Some(CallContext {
        connection: "tenants/acme".to_owned(),
        idempotency_key: String::new(),
    });
    let err = env.adapter.send_sms(req(request)).await.expect_err("bad");
    assert_eq!(violated_fields(&err), ["context.connection"]);
    let mut request = sms("v6", "hi");
    request.context = Some(CallContext {
        connection: "tenants/other/clients/x/connections/twilio".to_owned(),
        idempotency_key: String::new(),
    });
    let err = env.adapter.send_sms(req(request)).await.expect_err("bad");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = env
        .adapter
        .send_sms(Request::new(sms("v7", "hi")))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);

    assert!(env.fake.requests().is_empty());
}

#[tokio::test]
async fn a_connection_that_is_not_a_twilio_account_is_refused() {
    let env = env().await;
    env.creds.insert(ConnectionCredential {
        provider: ConnectionProvider::Retell as i32,
        ..credential(TOKEN)
    });
    let err = env
        .adapter
        .send_sms(req(sms("p1", "hi")))
        .await
        .expect_err("wrong provider");
    assert_eq!(err.code(), Code::FailedPrecondition);
    env.creds.insert(ConnectionCredential {
        external_account_id: String::new(),
        ..credential(TOKEN)
    });
    let err = env
        .adapter
        .send_sms(req(sms("p2", "hi")))
        .await
        .expect_err("no account");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let unknown = GetMessageStatusRequest {
        context: Some(CallContext {
            connection: "tenants/acme/clients/dental/connections/missing".to_owned(),
            idempotency_key: String::new(),
        }),
        sid: "SM0123456789abcdef0123456789abcdef".to_owned(),
    };
    let err = env
        .adapter
        .get_message_status(req(unknown))
        .await
        .expect_err("no connection");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.fake.requests().is_empty());
}

/// Receives webhooks on loopback and keeps them byte for byte, as the gateway hands them on.
async fn receiver() -> (
    String,
    Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>,
    tokio::task::JoinHandle<()>,
) {
    let got: Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>> =
        Arc::default();
    let listener = maxai_fakes::harness::loopback().await.expect("loopback");
    let url = format!(
        "http://{}/v1/webhooks/twilio?endpoint=ep1",
        listener.local_addr().expect("addr")
    );
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/webhooks/twilio",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    keep.lock().expect("lock").push((headers, body));
                    "<Response></Response>"
                }
            },
        ),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, server)
}

#[tokio::test]
async fn fake_callbacks_verify_with_the_platform_verifier() {
    use maxai_webhook_ingress::signature::twilio::{verify, Signed};
    use maxai_webhook_ingress::signature::{Inbound, Rejection};

    let env = env().await;
    let (url, got, _server) = receiver().await;
    let mut request = sms("w1", "hello");
    request.status_callback_url = url.clone();
    let sid = env
        .adapter
        .send_sms(req(request))
        .await
        .expect("sent")
        .into_inner()
        .sid;
    env.fake.advance(&sid, "sent").await.expect("posted");
    env.fake.advance(&sid, "delivered").await.expect("posted");
    env.fake
        .send_inbound_sms(&url, TO, FROM, "Yes, book me in")
        .await
        .expect("posted");
    let call = env
        .adapter
        .make_call(req(MakeCallRequest {
            context: ctx("w2"),
            from_number: FROM.to_owned(),
            to_number: TO.to_owned(),
            instructions: Some(Instructions::Twiml("<Response/>".to_owned())),
            status_callback_url: url.clone(),
            status_callback_events: vec![
                CallStatusEvent::Initiated as i32,
                CallStatusEvent::Completed as i32,
            ],
            ..Default::default()
        }))
        .await
        .expect("placed")
        .into_inner();
    env.fake.complete_call(&call.sid, 42).await.expect("posted");

    let got = got.lock().expect("lock").clone();
    assert_eq!(got.len(), 5, "2 message statuses, 1 inbound, 2 call events");
    for (headers, body) in &got {
        let inbound = Inbound {
            body,
            headers,
            url: &url,
            now: std::time::SystemTime::now(),
        };
        let verified = verify(&inbound, &[TOKEN]).expect("the platform accepts it");
        assert_eq!(verified.signed, Signed::UrlAndForm);
        assert_eq!(
            verify(&inbound, &["another-token"]),
            Err(Rejection::BadSignature)
        );
        let elsewhere = Inbound {
            url: "https://evil.example/v1/webhooks/twilio?endpoint=ep1",
            ..inbound
        };
        assert_eq!(verify(&elsewhere, &[TOKEN]), Err(Rejection::BadSignature));
    }
}

#[tokio::test]
async fn a_duplicate_on_another_replica_waits_for_the_first_result() {
    let env = env().await;
    let cache = Arc::new(MemoryCache::new(1000));
    let replica_a = TwilioAdapter::new(
        &config(env.fake.base_url()),
        env.creds.clone(),
        cache.clone(),
    );
    let replica_b = TwilioAdapter::new(&config(env.fake.base_url()), env.creds.clone(), cache);
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(150)));
    let (first, duplicate) = tokio::join!(replica_a.send_sms(req(sms("x-1", "hi"))), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        replica_b.send_sms(req(sms("x-1", "hi"))).await
    },);
    let first = first.expect("sent").into_inner();
    let err = duplicate.expect_err("in flight elsewhere");
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.get_error_details().retry_info().is_some());
    // Once the first call finished, the other replica answers with its result.
    let later = replica_b
        .send_sms(req(sms("x-1", "hi")))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(later, first);
    assert_eq!(env.fake.messages().len(), 1);
}
