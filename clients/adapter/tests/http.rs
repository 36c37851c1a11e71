//! ProviderHttp against a scripted loopback server: what is retried, how long it waits, when the
//! circuit opens and closes, and the one credential refresh on 401.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, ProviderHttp, Retry, StaticCredentials};
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::ConnectionCredential;

const CONN: &str = "tenants/acme/clients/dental/connections/crm";

/// Answers each request with the next scripted (status, Retry-After, delay), then 200; records
/// the Authorization header of every request.
/// (status, Retry-After seconds, delay in ms).
type Answer = (u16, Option<u64>, u64);

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn push(&self, status: u16, retry_after: Option<u64>, delay_ms: u64) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, retry_after, delay_ms));
    }
    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn start(script: Script) -> String {
    let app = Router::new().fallback(any(move |headers: HeaderMap| {
        let script = script.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            script.seen.lock().unwrap().push(auth);
            let next = script.answers.lock().unwrap().pop_front();
            let (status, retry_after, delay) = next.unwrap_or((200, None, 0));
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let mut response: Response = (
                StatusCode::from_u16(status).unwrap(),
                format!(r#"{{"code":"E{status}","message":"scripted {status}"}}"#),
            )
                .into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", secs.into());
            }
            response
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn parse_error(_status: u16, body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    (
        v["code"].as_str().unwrap_or_default().to_owned(),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn config() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_millis(300),
        max_attempts: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        breaker: BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(200),
        },
        ..HttpConfig::default()
    }
}

fn creds(token: &str) -> Arc<StaticCredentials> {
    let c = StaticCredentials::new();
    c.insert(ConnectionCredential {
        connection: CONN.into(),
        access_token: token.into(),
        ..Default::default()
    });
    c
}

async fn get(
    http: &ProviderHttp,
    creds: &StaticCredentials,
    retry: Retry,
) -> Result<u16, maxai_adapter::ProviderError> {
    let url = http.url("/thing");
    http.call(creds, CONN, retry, |c, cred| {
        c.get(&url).bearer_auth(&cred.access_token)
    })
    .await
    .map(|r| r.status)
}

#[tokio::test]
async fn safe_calls_are_retried_through_5xx_and_unsafe_ones_are_not() {
    let script = Script::default();
    let http = ProviderHttp::new("test", start(script.clone()).await, config(), parse_error);
    let creds = creds("tok");
    script.push(503, None, 0);
    script.push(500, None, 0);
    assert_eq!(get(&http, &creds, Retry::Safe).await.unwrap(), 200);
    assert_eq!(script.hits(), 3);

    script.push(503, None, 0);
    let err = get(&http, &creds, Retry::Never).await.unwrap_err();
    // It may have been carried out: UNKNOWN, which no caller retries by default.
    assert_eq!(err.kind, ErrorKind::Provider);
    assert!(
        err.message.contains("may have carried out"),
        "{}",
        err.message
    );
    assert_eq!(err.http_status, Some(503));
    assert_eq!(err.provider_code, "E503");
    assert!(err.message.starts_with("scripted 503"), "{}", err.message);
    assert_eq!(script.hits(), 4, "an unsafe call is sent once");
}

#[tokio::test]
async fn a_429_is_retried_even_for_unsafe_calls_after_its_retry_after() {
    let script = Script::default();
    let http = ProviderHttp::new("test", start(script.clone()).await, config(), parse_error);
    let creds = creds("tok");
    script.push(429, Some(1), 0);
    let started = Instant::now();
    assert_eq!(get(&http, &creds, Retry::Never).await.unwrap(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(script.hits(), 2);

    // Longer than the caller should wait: handed back at once with the provider's hint.
    script.push(429, Some(60), 0);
    let err = get(&http, &creds, Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(script.hits(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_the_providers_words() {
    let script = Script::default();
    let http = ProviderHttp::new("test", start(script.clone()).await, config(), parse_error);
    let creds = creds("tok");
    script.push(422, None, 0);
    let err = get(&http, &creds, Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("scripted 422"),
        "{}",
        status.message()
    );
    assert_eq!(script.hits(), 1);
}

#[tokio::test]
async fn a_slow_provider_times_out() {
    let script = Script::default();
    let mut cfg = config();
    cfg.max_attempts = 1;
    let http = ProviderHttp::new("test", start(script.clone()).await, cfg, parse_error);
    script.push(200, None, 1_000);
    let err = get(&http, &creds("tok"), Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn the_circuit_opens_for_one_connection_then_closes_after_the_cooldown() {
    let script = Script::default();
    let mut cfg = config();
    cfg.max_attempts = 1;
    let http = ProviderHttp::new("test", start(script.clone()).await, cfg, parse_error);
    let creds = creds("tok");
    for _ in 0..3 {
        script.push(502, None, 0);
        assert_eq!(
            get(&http, &creds, Retry::Safe)
                .await
                .unwrap_err()
                .http_status,
            Some(502)
        );
    }
    let err = get(&http, &creds, Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(err.http_status, None, "refused without calling");
    assert!(err.message.contains("circuit open"));
    assert_eq!(script.hits(), 3);

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        get(&http, &creds, Retry::Safe).await.unwrap(),
        200,
        "trial call goes through"
    );
    assert_eq!(
        get(&http, &creds, Retry::Safe).await.unwrap(),
        200,
        "closed again"
    );
    assert_eq!(script.hits(), 5);
}

#[tokio::test]
async fn a_401_refreshes_the_credential_once() {
    let script = Script::default();
    let http = ProviderHttp::new("test", start(script.clone()).await, config(), parse_error);
    let creds = creds("old");
    creds.insert_refreshed(ConnectionCredential {
        connection: CONN.into(),
        access_token: "new".into(),
        ..Default::default()
    });
    script.push(401, None, 0);
    assert_eq!(get(&http, &creds, Retry::Never).await.unwrap(), 200);
    assert_eq!(script.seen(), ["Bearer old", "Bearer new"]);
    assert_eq!(creds.refreshes(CONN), 1);

    // Refused again after the refresh: the connection needs re-authorizing, no loop.
    script.push(401, None, 0);
    script.push(401, None, 0);
    let err = get(&http, &creds, Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    assert_eq!(creds.refreshes(CONN), 2);
    assert_eq!(script.hits(), 4);
}

#[tokio::test]
async fn an_unknown_connection_fails_before_any_request() {
    let script = Script::default();
    let http = ProviderHttp::new("test", start(script.clone()).await, config(), parse_error);
    let empty = StaticCredentials::new();
    let err = get(&http, &empty, Retry::Safe).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    assert_eq!(script.hits(), 0);
}
