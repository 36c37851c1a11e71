//! The `maxai` binary as an operator uses it: configuration errors, commands, and a whole
//! platform process serving REST, gRPC (health) and metrics, then draining on SIGTERM.
use std::{
    net::TcpListener,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use serde_json::Value;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_maxai");

fn maxai(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("MAXAI_TELEMETRY__LOG_FORMAT", "pretty");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run maxai")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn invalid_configuration_stops_the_process_naming_the_key() {
    let cases = [
        ("MAXAI_SERVER__GRPC_PORT", "1", "grpc_port"),
        (
            "MAXAI_SERVER__HTTP_ADDR",
            "not-an-address",
            "server.http_addr",
        ),
        ("MAXAI_SERVER__DRAIN_SECS", "-3", "server.drain_secs"),
        (
            "MAXAI_FLAGS__DEFAULT_ENVIRONMENT",
            "Bad Env",
            "flags.default_environment",
        ),
        (
            "MAXAI_GATEWAY__UPSTREAM_CONNECTIONS",
            "0",
            "gateway.upstream_connections",
        ),
        ("MAXAI_TELEMETRY__LOG_FORMAT", "xml", "telemetry.log_format"),
        ("DATABASE_URL", "mysql://x", "database_url"),
    ];
    let port = free_port();
    for (key, value, named) in cases {
        let http = format!("127.0.0.1:{port}");
        let out = maxai(&["up"], &[("MAXAI_SERVER__HTTP_ADDR", &http), (key, value)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{key}={value}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(named),
            "{key}={value} should name {named}: {}",
            stderr(&out)
        );
        // Nothing was left listening.
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "{key}: port {port} still bound"
        );
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("maxai.toml");
    std::fs::write(&file, "[server]\ngrpc_adr = \"127.0.0.1:1\"\n").expect("write");
    let out = maxai(&["--config", file.to_str().expect("path"), "up"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("grpc_adr"), "{}", stderr(&out));
}

#[test]
fn commands_have_help_and_refuse_unknown_services() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["serve", "--help"],
        &["migrate", "--help"],
    ] {
        let out = maxai(args, &[]);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let out = maxai(&["serve", "prompt"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not implemented"), "{}", stderr(&out));
    let out = maxai(&["serve", "nonsense"], &[]);
    assert!(
        stderr(&out).contains("unknown service nonsense"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_applies_every_service_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("path");
    let out = maxai(&["migrate"], &[("MAXAI_STORAGE__DATA_DIR", data)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("migrated feature-flags (sqlite)")
            && stdout.contains("migrated iam (sqlite)"),
        "{stdout}"
    );
    assert!(dir.path().join("flags.db").exists() && dir.path().join("iam.db").exists());
}

#[test]
fn token_mints_a_jwt_from_the_local_key_store() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("path");
    let out = maxai(
        &[
            "token",
            "--subject",
            "tenants/platform/users/admin",
            "--ttl-secs",
            "60",
        ],
        &[("MAXAI_STORAGE__DATA_DIR", data)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert!(
        dir.path().join("iam-master.key").exists(),
        "the embedded key store made its master key"
    );
    let out = maxai(
        &["token", "--subject", "users/admin"],
        &[("MAXAI_STORAGE__DATA_DIR", data)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--subject must be"),
        "{}",
        stderr(&out)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Platform {
    child: Child,
    http: String,
    grpc: String,
    metrics: String,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, String)]) -> Platform {
    start_args(&["up"], env)
}

fn start_args(args: &[&str], env: &[(&str, String)]) -> Platform {
    let (g, h, m) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("MAXAI_SERVER__GRPC_ADDR", format!("127.0.0.1:{g}"))
        .env("MAXAI_SERVER__HTTP_ADDR", format!("127.0.0.1:{h}"))
        .env("MAXAI_SERVER__METRICS_ADDR", format!("127.0.0.1:{m}"))
        .env("MAXAI_SERVER__DRAIN_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Platform {
        child: cmd.spawn().expect("spawn maxai"),
        http: format!("http://127.0.0.1:{h}"),
        grpc: format!("http://127.0.0.1:{g}"),
        metrics: format!("http://127.0.0.1:{m}/metrics"),
    }
}

async fn wait_ready(p: &Platform) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{}/readyz", p.http)).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("platform did not become ready");
}

async fn flag_service_status(grpc: &str) -> Option<ServingStatus> {
    service_status(grpc, "maxai.flags.v1.FeatureFlagsService").await
}

async fn service_status(grpc: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(grpc.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: service.into(),
    };
    client
        .check(req)
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

/// The bootstrap platform admin's token, minted by `maxai token` from the same key store.
fn admin_token(env: &[(&str, String)]) -> String {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = maxai(
        &["token", "--subject", "tenants/platform/users/admin"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn create_flag(http: &str, key: &str, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{http}/v1/flags?flagId={key}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"stage":"STAGE_ALPHA"}"#)
        .send()
        .await
        .expect("create")
        .status()
}

async fn flag_exists(http: &str, key: &str, token: &str) -> bool {
    reqwest::Client::new()
        .get(format!("{http}/v1/flags/{key}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .status()
        .is_success()
}

/// `maxai up` with no external service: REST, gRPC health, metrics; SIGTERM flips health to
/// NOT_SERVING, drains, and exits cleanly; the data survives a restart.
#[tokio::test]
async fn up_serves_everything_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let data = (
        "MAXAI_STORAGE__DATA_DIR",
        dir.path().to_string_lossy().into_owned(),
    );
    let mut p = start(std::slice::from_ref(&data));
    wait_ready(&p).await;
    assert_eq!(
        create_flag(&p.http, "refused", "").await,
        reqwest::StatusCode::UNAUTHORIZED,
        "no credential, no call"
    );
    let token = admin_token(std::slice::from_ref(&data));
    assert_eq!(
        create_flag(&p.http, "persisted", &token).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        flag_service_status(&p.grpc).await,
        Some(ServingStatus::Serving)
    );
    let metrics = reqwest::get(&p.metrics)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("maxai_grpc_requests_total"), "{metrics}");
    assert!(metrics.contains("maxai_http_requests_total"), "{metrics}");

    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let mut saw_not_serving = false;
    let deadline = Instant::now() + Duration::from_millis(900);
    while Instant::now() < deadline {
        if flag_service_status(&p.grpc).await == Some(ServingStatus::NotServing) {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_not_serving,
        "health did not report NOT_SERVING while draining"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "maxai did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    let p2 = start(&[data]);
    wait_ready(&p2).await;
    assert!(
        flag_exists(&p2.http, "persisted", &token).await,
        "the flag survived a restart"
    );
    drop(p);
}

/// The same binary on PostgreSQL + Redis when `DATABASE_URL` / `REDIS_URL` are set.
#[tokio::test]
async fn up_on_postgres_and_redis() {
    let Some(backend) = maxai_testkit::postgres().await else {
        return;
    };
    let env = [
        (
            "DATABASE_URL",
            backend.storage.database_url.expose_secret().to_owned(),
        ),
        (
            "REDIS_URL",
            backend.storage.redis_url.expose_secret().to_owned(),
        ),
        (
            "MAXAI_STORAGE__REDIS_PREFIX",
            backend.storage.redis_prefix.clone(),
        ),
        (
            "MAXAI_IAM__MASTER_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
        ),
    ];
    let p = start(&env);
    wait_ready(&p).await;
    let token = admin_token(&env);
    assert_eq!(
        create_flag(&p.http, "on-postgres", &token).await,
        reqwest::StatusCode::OK
    );
    drop(p);
    let p = start(&env);
    wait_ready(&p).await;
    assert!(flag_exists(&p.http, "on-postgres", &token).await);
    let body: Value = reqwest::Client::new()
        .get(format!("{}/v1/flags", p.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(body["flags"].as_array().map(Vec::len), Some(1));
}

/// IAM in one process, feature-flags and the gateway in another (as Kubernetes runs them): the
/// second verifies tokens with IAM's JWKS and asks IAM's AuthorizationService over gRPC.
#[tokio::test]
async fn services_in_separate_processes_check_credentials_through_iam() {
    let dir = tempfile::tempdir().expect("dir");
    let data = (
        "MAXAI_STORAGE__DATA_DIR",
        dir.path().to_string_lossy().into_owned(),
    );
    let iam = start_args(&["serve", "iam"], std::slice::from_ref(&data));
    // IAM migrates its storage first; the other process opens IAM's key ring for its service
    // identity (webhook delivery).
    let deadline = Instant::now() + Duration::from_secs(20);
    while service_status(&iam.grpc, "maxai.iam.v1.AuthService").await
        != Some(ServingStatus::Serving)
    {
        assert!(Instant::now() < deadline, "iam did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let upstreams = (
        "MAXAI_GATEWAY__UPSTREAMS",
        format!("{{\"maxai.iam.v1\"=\"{}\"}}", iam.grpc),
    );
    let rest = start_args(
        // The gateway is ready only when every service it routes answers SERVING.
        &[
            "serve",
            "feature-flags",
            "webhook-ingress",
            "orchestrator",
            "gateway",
        ],
        &[data.clone(), upstreams],
    );
    wait_ready(&rest).await;
    let token = admin_token(std::slice::from_ref(&data));
    assert_eq!(
        create_flag(&rest.http, "remote", "").await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        create_flag(&rest.http, "remote", &token).await,
        reqwest::StatusCode::OK,
        "the admin's token verified with IAM's keys and authorized by IAM"
    );
    assert!(flag_exists(&rest.http, "remote", &token).await);
    // A principal IAM grants nothing is refused by the flags process itself, over gRPC too.
    let nobody = {
        let env: Vec<(&str, &str)> = vec![(data.0, data.1.as_str())];
        let out = maxai(
            &["token", "--subject", "tenants/platform/users/nobody"],
            &env,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        create_flag(&rest.http, "refused", &nobody).await,
        reqwest::StatusCode::FORBIDDEN
    );
    let channel = tonic::transport::Channel::from_shared(rest.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut flags =
        maxai_proto::maxai::flags::v1::feature_flags_service_client::FeatureFlagsServiceClient::new(
            maxai_kit::auth::authed(channel, &nobody).expect("token"),
        );
    let err = flags
        .list_flags(maxai_proto::maxai::flags::v1::ListFlagsRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    drop(iam);
}

/// A webhook acknowledged by a process that is then killed (SIGKILL, nothing flushed on the
/// way out) is delivered by the next process, once.
#[tokio::test]
async fn a_webhook_acknowledged_before_a_kill_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let data = (
        "MAXAI_STORAGE__DATA_DIR",
        dir.path().to_string_lossy().into_owned(),
    );
    let recorder = common::Recorder::default();
    let consumer = recorder.serve().await;
    let consumers = (
        "MAXAI_WEBHOOK__CONSUMERS",
        format!("{{recorder=\"{consumer}\"}}"),
    );
    let off = ("MAXAI_WEBHOOK__DISPATCH__ENABLED", "false".to_owned());
    let mut first = start(&[data.clone(), consumers.clone(), off]);
    wait_ready(&first).await;
    let token = admin_token(std::slice::from_ref(&data));
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/tenants?tenantId=acme",
            serde_json::json!({"displayName": "Acme", "contactEmail": "ops@acme.example"}),
        ),
        (
            "/v1/tenants/acme/clients?clientId=smile",
            serde_json::json!({"displayName": "Smile", "timeZone": "UTC"}),
        ),
        (
            "/v1/tenants/acme/clients/smile/webhookEndpoints?webhookEndpointId=stripe",
            serde_json::json!({"displayName": "Stripe", "provider": "PROVIDER_STRIPE", "stripe": {"accountId": "acct_agency1"}, "secret": common::WHSEC}),
        ),
    ] {
        let resp = http
            .post(format!("{}{path}", first.http))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
    let body = common::invoice_paid("evt_killed");
    let resp = http
        .post(format!("{}/v1/webhooks/stripe", first.http))
        .header(
            "stripe-signature",
            common::stripe_signature(common::WHSEC, common::unix_now(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "acknowledged");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    assert!(recorder.got.lock().expect("lock").is_empty());

    let second = start(&[data, consumers]);
    wait_ready(&second).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.got.lock().expect("lock").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = recorder.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "delivered once after the restart");
    assert_eq!(got[0].0.r#type, "payments.invoice.paid");
    assert_eq!(got[0].0.provider_event_id, "evt_killed");
}
