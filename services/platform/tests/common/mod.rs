//! The platform as `maxai up` composes it, in-process on port 0, for end-to-end tests.
#![allow(dead_code)]

use std::time::Duration;

use maxai_kit::CancellationToken;
use maxai_platform::{run, Component, PlatformConfig, Sockets};
use maxai_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::Value;

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
    let mut config = PlatformConfig::load(None).expect("defaults");
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
    tokio::spawn(async move {
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
    Up {
        http: format!("http://{}", listeners.http.expect("http")),
        grpc: format!("http://{}", listeners.grpc.expect("grpc")),
        ring,
        shutdown,
        client: reqwest::Client::new(),
    }
}
