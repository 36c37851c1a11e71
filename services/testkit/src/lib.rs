//! Test harness shared by every crate's tests.
//!
//! - [`backends`]: SQLite (a temporary folder) always, and PostgreSQL (a fresh database) plus
//!   Redis (a fresh key prefix) when they are reachable. Under CI (`CI=true`) an unreachable
//!   PostgreSQL or Redis fails the test instead of skipping it.
//! - [`serve_grpc`] / [`serve_gateway`]: real servers on 127.0.0.1 port 0, stopped on drop.
//! - [`TestIam`]: real IAM on the test's backend (bootstrap platform admin included), the
//!   guard every test server is put behind, and tokens for any principal; [`Bearer`] sends one
//!   on every call of a tonic client.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use std::sync::Arc;

use maxai_kit::{
    auth::{Guard, GuardLayer, Verifier},
    config::StorageConfig,
    server::{serve_grpc as kit_serve, GrpcApp},
    shared_state::SharedState,
    CancellationToken,
};
use secrecy::SecretString;
use sqlx::{Connection, Executor, PgConnection};
use tokio::net::TcpListener;

/// PostgreSQL holding the per-test databases (`MAXAI_TEST_POSTGRES_URL` overrides).
pub fn postgres_admin_url() -> String {
    std::env::var("MAXAI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Redis for tests (`MAXAI_TEST_REDIS_URL` overrides).
pub fn redis_url() -> String {
    std::env::var("MAXAI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// One storage setup a test runs against.
pub struct Backend {
    pub name: &'static str,
    pub storage: StorageConfig,
    _dir: Option<tempfile::TempDir>,
}

fn storage(database_url: String, data_dir: PathBuf, redis_url: String) -> StorageConfig {
    StorageConfig {
        database_url: SecretString::from(database_url),
        data_dir,
        redis_url: SecretString::from(redis_url),
        redis_prefix: format!("maxai-test-{}:", uuid::Uuid::new_v4().simple()),
        max_connections: 8,
    }
}

/// SQLite in a fresh temporary folder, in-process cache.
pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temporary folder");
    Backend {
        name: "sqlite",
        storage: storage(String::new(), dir.path().to_path_buf(), String::new()),
        _dir: Some(dir),
    }
}

/// A fresh PostgreSQL database and a fresh Redis prefix, or `None` (outside CI) when either is
/// unreachable.
pub async fn postgres() -> Option<Backend> {
    let admin = postgres_admin_url();
    let mut conn =
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                assert!(!in_ci(), "PostgreSQL at {admin} is required in CI: {why}");
                eprintln!("skipping PostgreSQL backend: {why}");
                return None;
            }
        };
    if !redis_reachable().await {
        assert!(!in_ci(), "Redis at {} is required in CI", redis_url());
        eprintln!("skipping PostgreSQL + Redis backend: Redis unreachable");
        return None;
    }
    let name = format!("maxai_t_{}", uuid::Uuid::new_v4().simple());
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    Some(Backend {
        name: "postgres",
        storage: storage(
            format!("{base}/{name}"),
            PathBuf::from("unused"),
            redis_url(),
        ),
        _dir: None,
    })
}

async fn redis_reachable() -> bool {
    let addr = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Every backend reachable here: SQLite always, PostgreSQL + Redis when reachable (always in CI).
pub async fn backends() -> Vec<Backend> {
    let mut all = vec![sqlite()];
    all.extend(postgres().await);
    all
}

/// A server on 127.0.0.1:0 that stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `app` over gRPC on a fresh port.
pub async fn serve_grpc(app: GrpcApp) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = kit_serve(listener, app, token, Duration::ZERO).await {
            eprintln!("grpc server stopped: {e}");
        }
    });
    Running { addr, shutdown }
}

/// Default gateway settings for tests.
pub fn gateway_config() -> maxai_gateway::GatewayConfig {
    maxai_gateway::GatewayConfig {
        upstream: String::new(),
        max_body_bytes: 64 * 1024,
        timeout_ms: 10_000,
        upstream_connections: 1,
        upstreams: Default::default(),
        rate_limits: maxai_gateway::RateLimitConfig {
            enabled: true,
            per_ip: maxai_kit::rate_limit::Rate {
                per_minute: 600_000,
                burst: 10_000,
            },
            per_tenant: maxai_kit::rate_limit::Rate {
                per_minute: 600_000,
                burst: 10_000,
            },
            tenants: Default::default(),
            trust_forwarded_for: false,
        },
    }
}

/// The REST gateway for `services` in front of the gRPC server at `grpc`.
pub async fn serve_gateway(grpc: &Running, services: Vec<String>, iam: &TestIam) -> Running {
    serve_gateway_with(gateway_config(), &grpc.url(), services, iam).await
}

/// The REST gateway with its own settings (e.g. per-service upstreams), default upstream `url`.
pub async fn serve_gateway_with(
    config: maxai_gateway::GatewayConfig,
    url: &str,
    services: Vec<String>,
    iam: &TestIam,
) -> Running {
    let deps = maxai_gateway::GatewayDeps {
        guard: iam.guard.clone(),
        limiter: iam.shared.limiter.clone(),
        tenant_rates: None,
    };
    let gw =
        maxai_gateway::Gateway::new(config, url, services, 4 * 1024 * 1024, deps).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = maxai_kit::server::serve_http(listener, maxai_gateway::router(gw), token).await;
    });
    Running { addr, shutdown }
}

/// Asserts that every RPC of `services` with a `google.api.http` rule (every binding of it) is in
/// the gateway's OpenAPI document and answers over REST from the service itself: the router
/// neither misses the path nor refuses the method.
pub async fn assert_every_rpc_reachable(rest: &Running, services: &[&str], token: &str) {
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{}/openapi.json", rest.url()))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("openapi json");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (verb, op) in item.as_object().expect("path item") {
            operations.push((
                path.clone(),
                verb.clone(),
                op["operationId"].as_str().expect("operationId").to_owned(),
            ));
        }
    }
    for service in services {
        let methods = maxai_kit::descriptors::methods(service);
        assert!(!methods.is_empty(), "{service} is not in the contracts");
        for method in methods {
            if maxai_kit::descriptors::http_rule(&method).is_none() {
                continue;
            }
            let name = method.full_name();
            // A public method may refuse a credential it was given (a refresh token, an API
            // key): that answer comes from the service itself.
            let public = maxai_kit::descriptors::auth_rule(&method).is_some_and(|r| r.public);
            let ops: Vec<_> = operations
                .iter()
                .filter(|(_, _, id)| id == name || id.starts_with(&format!("{name}_")))
                .collect();
            assert!(!ops.is_empty(), "{name} missing from /openapi.json");
            for (path, verb, _) in ops {
                // Each path parameter gets a sample value.
                let mut concrete = String::new();
                let mut rest_of = path.as_str();
                while let Some(open) = rest_of.find('{') {
                    let close = rest_of[open..].find('}').expect("closing brace") + open;
                    concrete.push_str(&rest_of[..open]);
                    concrete.push_str("sample");
                    rest_of = &rest_of[close + 1..];
                }
                concrete.push_str(rest_of);
                let method_http =
                    reqwest::Method::from_bytes(verb.to_uppercase().as_bytes()).expect("verb");
                let mut req = http
                    .request(method_http, format!("{}{concrete}", rest.url()))
                    .bearer_auth(token);
                if verb != "get" && verb != "delete" {
                    req = req.header("content-type", "application/json").body("{}");
                }
                let resp = req.send().await.expect("send");
                let status = resp.status();
                let reply: serde_json::Value = resp.json().await.unwrap_or_default();
                let code = reply["code"].as_str().unwrap_or("");
                assert!(
                    !matches!(
                        code,
                        "ROUTE_NOT_FOUND"
                            | "METHOD_NOT_ALLOWED"
                            | "INVALID_JSON"
                            | "UNSUPPORTED_MEDIA_TYPE"
                    ) && (public || code != "UNAUTHENTICATED"),
                    "{name} via {verb} {concrete} did not reach the service: {status} {reply}"
                );
            }
        }
    }
}

/// IAM settings for tests: embedded key file, the bootstrap platform admin, Google sign-in off.
pub fn iam_config() -> maxai_iam::config::IamConfig {
    maxai_iam::config::IamConfig {
        // A fixed test key (base64 of 32 bytes): PostgreSQL backends need one configured.
        master_key: SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned()),
        issuer: "maxai".into(),
        access_token_ttl_secs: 900,
        bootstrap_admin: true,
        refresh_token_ttl_secs: 86_400,
        google: maxai_iam::config::GoogleConfig {
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
            discovery_url: String::new(),
            redirect_uri: String::new(),
            return_to_allowlist: Vec::new(),
            domain_verification_url: String::new(),
        },
        connections: Default::default(),
    }
}

/// Real IAM on a test backend, and the guard test servers are put behind.
pub struct TestIam {
    pub key_ring: Arc<maxai_iam::tokens::KeyRing>,
    pub guard: Arc<Guard>,
    pub shared: SharedState,
    servers: Option<maxai_iam::Servers>,
}

impl TestIam {
    /// Starts IAM on `backend` with `config`.
    pub async fn start_with(backend: &Backend, config: maxai_iam::config::IamConfig) -> Self {
        let shared = SharedState::connect(&backend.storage)
            .await
            .expect("shared state");
        let shutdown = CancellationToken::new();
        let servers = maxai_iam::start(
            &backend.storage,
            &config,
            &shared,
            4 << 20,
            shutdown.clone(),
        )
        .await
        .expect("start iam");
        let key_ring = servers.key_ring.clone();
        let verifier = Verifier::new(config.issuer.clone(), key_ring.clone());
        verifier
            .follow_revocations(shared.notifier.as_ref(), shutdown)
            .await
            .expect("follow revocations");
        let guard = Guard::new(verifier, servers.policy.clone());
        TestIam {
            key_ring,
            guard,
            shared,
            servers: Some(servers),
        }
    }

    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, iam_config()).await
    }

    /// IAM's gRPC servers (once), to serve beside the service under test.
    pub fn take_servers(&mut self) -> maxai_iam::Servers {
        self.servers.take().expect("IAM servers taken twice")
    }

    /// The guard layer for a test gRPC server.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer::new(self.guard.clone(), 4 << 20)
    }

    /// An access token for `subject` (`tenants/{t}/users/{u}` or `.../serviceAccounts/{s}`).
    pub fn token(&self, subject: &str) -> String {
        let tenant = maxai_kit::auth::tenant_of(subject)
            .unwrap_or_default()
            .to_owned();
        self.key_ring
            .issue(subject, &tenant, None)
            .expect("issue token")
            .0
    }

    /// A token of the bootstrap platform admin.
    pub fn admin(&self) -> String {
        self.token(maxai_iam::BOOTSTRAP_ADMIN)
    }
}

pub use maxai_kit::auth::{Authed, Bearer};

/// Connects to `url`; every call carries `token`.
pub async fn authed(url: &str, token: &str) -> Authed {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    maxai_kit::auth::authed(channel, token).expect("token")
}
