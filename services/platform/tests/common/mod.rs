//! The platform as `maxai up` composes it, in-process on port 0, for end-to-end tests.
#![allow(dead_code)]

use std::time::Duration;

use hmac::Mac;
use maxai_kit::CancellationToken;
use maxai_platform::{run, Component, PlatformConfig, Sockets};
use maxai_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub struct Up {
    pub http: String,
    pub grpc: String,
    pub ring: maxai_iam::tokens::KeyRing,
    shutdown: CancellationToken,
    pub client: reqwest::Client,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Up {
    pub fn token(&self, subject: &str) -> String {
        let tenant = maxai_kit::auth::tenant_of(subject).unwrap_or_default();
        self.ring.issue(subject, tenant, None).expect("issue").0
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.http));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body.filter(|b| !b.is_null()) {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// As the platform admin; the call must succeed.
    pub async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let admin = self.token(maxai_iam::BOOTSTRAP_ADMIN);
        let (status, reply) = self.call(method, path, Some(&admin), Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {reply}");
        reply
    }
}

pub async fn up(backend: &Backend) -> Up {
    up_with(backend, |_| {}).await
}

pub async fn up_with(backend: &Backend, adjust: impl FnOnce(&mut PlatformConfig)) -> Up {
    up_config(
        backend,
        PlatformConfig::load(None).expect("defaults"),
        adjust,
    )
    .await
}

/// The platform with the sandbox providers, as `maxai up` runs it.
pub async fn up_sandbox(backend: &Backend) -> (Up, maxai_platform::sandbox::Sandbox) {
    let mut config = PlatformConfig::load(None).expect("defaults");
    let sandbox = maxai_platform::sandbox::start(&mut config)
        .await
        .expect("sandbox");
    (up_config(backend, config, |_| {}).await, sandbox)
}

pub async fn up_config(
    backend: &Backend,
    config: PlatformConfig,
    adjust: impl FnOnce(&mut PlatformConfig),
) -> Up {
    up_config_joined(backend, config, adjust).await.0
}

/// [`up_config`], plus the task running the platform: drop the `Up` and await the task to know
/// the platform has stopped (e.g. before starting another one on the same storage).
pub async fn up_config_joined(
    backend: &Backend,
    mut config: PlatformConfig,
    adjust: impl FnOnce(&mut PlatformConfig),
) -> (Up, tokio::task::JoinHandle<()>) {
    config.storage = backend.storage.clone();
    config.iam.master_key = secrecy::SecretString::from(KEY.to_owned());
    for addr in [
        &mut config.server.grpc_addr,
        &mut config.server.http_addr,
        &mut config.server.metrics_addr,
    ] {
        *addr = "127.0.0.1:0".parse().expect("addr");
    }
    // The matrix sends hundreds of calls from one address on purpose.
    config.gateway.rate_limits.enabled = false;
    adjust(&mut config);
    let sockets = Sockets::bind(&config).await.expect("bind");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run_config = config.clone();
    let token = shutdown.clone();
    let running = tokio::spawn(async move {
        let outcome = run(run_config, &Component::ALL, sockets, token, |l| {
            let _ = tx.send(l);
        })
        .await;
        if let Err(e) = outcome {
            eprintln!("platform stopped: {e:#}");
        }
    });
    let listeners = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("platform started in time")
        .expect("listeners");
    let ring = maxai_iam::key_ring(&config.storage, &config.iam)
        .await
        .expect("key ring");
    let up = Up {
        http: format!("http://{}", listeners.http.expect("http")),
        grpc: format!("http://{}", listeners.grpc.expect("grpc")),
        ring,
        shutdown,
        client: reqwest::Client::new(),
    };
    (up, running)
}

/// A consumer that records what it is handed and with which credential.
#[derive(Default, Clone)]
pub struct Recorder {
    pub got: std::sync::Arc<
        std::sync::Mutex<Vec<(maxai_proto::maxai::common::v1::CanonicalEvent, String)>>,
    >,
}

#[tonic::async_trait]
impl maxai_proto::maxai::webhook::v1::event_consumer_service_server::EventConsumerService
    for Recorder
{
    async fn consume_event(
        &self,
        request: tonic::Request<maxai_proto::maxai::webhook::v1::ConsumeEventRequest>,
    ) -> Result<tonic::Response<maxai_proto::maxai::webhook::v1::ConsumeEventResponse>, tonic::Status>
    {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let event = request.into_inner().event.unwrap_or_default();
        let mut got = self.got.lock().expect("lock");
        let duplicate = got.iter().any(|(e, _)| e.id == event.id);
        got.push((event, bearer));
        Ok(tonic::Response::new(
            maxai_proto::maxai::webhook::v1::ConsumeEventResponse { duplicate },
        ))
    }
}

impl Recorder {
    /// Serves this consumer on 127.0.0.1; returns its `http://` address.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let server = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    maxai_proto::maxai::webhook::v1::event_consumer_service_server::EventConsumerServiceServer::new(server),
                )
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        address
    }
}

/// The Stripe endpoint secret the tests register.
pub const WHSEC: &str = "whsec_test_secret";

pub fn unix_now() -> i64 {
    maxai_kit::storage::now_micros() / 1_000_000
}

pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn retell_signature(key: &str, ms: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(format!("{body}{ms}").as_bytes());
    format!("v={ms},d={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("key");
    mac.update(data.as_bytes());
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        mac.finalize().into_bytes(),
    )
}

pub fn invoice_paid(event_id: &str) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": "invoice.paid",
        "created": unix_now(),
        "account": "acct_agency1",
        "livemode": false,
        "data": {"object": {
            "id": "in_123", "object": "invoice", "customer": "cus_1", "currency": "usd",
            "amount_due": 4900, "amount_paid": 4900, "status": "paid"
        }}
    })
    .to_string()
}
