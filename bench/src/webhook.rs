//! Webhook ingest: distinct signed Stripe `invoice.paid` events through the gateway's raw route
//! `POST /v1/webhooks/stripe` into webhook-ingress, which verifies, validates, normalizes and
//! commits each (group commit) before answering 200; once on the embedded SQLite default and
//! once on this machine's PostgreSQL. Beside them the ceiling the PostgreSQL figure is judged
//! against: a bare idempotent insert, one autocommit statement (so one commit) per operation,
//! at the same concurrency.
use std::{
    net::SocketAddr,
    path::Path,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue, Method};
use maxai_kit::{
    auth::{authed, Guard, GuardLayer},
    config::StorageConfig,
    sealed::MasterKey,
    server::{serve_grpc, GrpcApp},
    storage::Db,
    CancellationToken,
};
use maxai_platform::PlatformConfig;
use maxai_proto::maxai::{
    iam::v1::{
        self as iam_pb, client_service_client::ClientServiceClient,
        tenant_service_client::TenantServiceClient,
    },
    webhook::v1::{self as pb, webhook_ingress_service_client::WebhookIngressServiceClient},
};
use secrecy::SecretString;
use sha2::Sha256;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection,
};
use tokio::runtime::Handle;

use crate::{
    baseline::spawn_server,
    flags,
    load::{self, HttpTarget, Load, MakeBody, Stats},
};

pub const PATH: &str = "/v1/webhooks/stripe";
const WHSEC: &str = "whsec_bench";
const ACCOUNT: &str = "acct_bench";
const TENANT: &str = "hooks";
const CLIENT: &str = "shop";
/// The machine's PostgreSQL, as an administrator: the bench makes its own database there.
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections left to whoever else uses the server (tests running beside the bench).
const PG_SPARE_CONNECTIONS: i64 = 8;
const INSERT: &str =
    "INSERT INTO bench_insert (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Distinct Stripe `invoice.paid` events: every one has a new `evt_` id (unique across runs),
/// so none is a duplicate, and is signed when it is made, so none is stale.
pub struct StripeEvents {
    run: String,
    next: AtomicU64,
}

impl StripeEvents {
    pub fn new() -> Arc<Self> {
        let mut run = uuid::Uuid::new_v4().simple().to_string();
        run.truncate(12);
        Arc::new(StripeEvents {
            run,
            next: AtomicU64::new(0),
        })
    }

    /// Events made so far.
    pub fn made(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The next event's id and body, created `t` (Unix seconds). The shape of
    /// schemas/webhook/stripe/invoice.paid.json, about 330 bytes.
    fn next_event(&self, t: i64) -> (String, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let run = &self.run;
        let id = format!("evt_{run}{n:012}");
        let body = format!(
            r#"{{"id":"{id}","object":"event","type":"invoice.paid","created":{t},"account":"{ACCOUNT}","livemode":false,"data":{{"object":{{"id":"in_{run}{n:012}","object":"invoice","customer":"cus_bench{}","currency":"usd","amount_due":4900,"amount_paid":4900,"status":"paid"}}}}}}"#,
            n % 1000
        );
        (id, body)
    }

    /// The next event and its `Stripe-Signature: t=<now>,v1=<hex hmac-sha256(whsec, "t.body")>`.
    pub fn signed(&self) -> (Bytes, Vec<(HeaderName, HeaderValue)>) {
        let t = unix_now();
        let (_, body) = self.next_event(t);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(WHSEC.as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body.as_bytes());
        let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        (
            Bytes::from(body),
            vec![(
                HeaderName::from_static("stripe-signature"),
                HeaderValue::try_from(signature).expect("ASCII"),
            )],
        )
    }

    /// A body maker for [`HttpTarget::bodies`].
    pub fn maker(self: &Arc<Self>) -> MakeBody {
        let me = self.clone();
        Arc::new(move || me.signed())
    }
}

/// What each load sends: a distinct signed event to the Stripe route.
pub fn target(events: &Arc<StripeEvents>) -> anyhow::Result<HttpTarget> {
    Ok(HttpTarget::new(Method::POST, [PATH.to_owned()], Bytes::new())?.bodies(events.maker()))
}

/// The embedded default: SQLite files under `data_dir`.
pub fn sqlite(config: &PlatformConfig, data_dir: &Path) -> StorageConfig {
    let mut storage = config.storage.clone();
    storage.database_url = SecretString::from(String::new());
    storage.redis_url = SecretString::from(String::new());
    storage.data_dir = data_dir.to_path_buf();
    storage
}

/// The tenant and client the endpoint belongs to, created in IAM as an operator would.
pub async fn create_tenant(iam: SocketAddr, token: &str) -> anyhow::Result<()> {
    let channel = load::endpoint(iam)?.connect().await?;
    TenantServiceClient::new(authed(channel.clone(), token)?)
        .create_tenant(iam_pb::CreateTenantRequest {
            tenant: Some(iam_pb::Tenant {
                display_name: "Webhook bench".into(),
                contact_email: "ops@hooks.example".into(),
                ..Default::default()
            }),
            tenant_id: TENANT.into(),
            request_id: String::new(),
        })
        .await
        .context("CreateTenant")?;
    ClientServiceClient::new(authed(channel, token)?)
        .create_client(iam_pb::CreateClientRequest {
            parent: format!("tenants/{TENANT}"),
            client: Some(iam_pb::Client {
                display_name: "Shop".into(),
                time_zone: "America/Chicago".into(),
                ..Default::default()
            }),
            client_id: CLIENT.into(),
            request_id: String::new(),
        })
        .await
        .context("CreateClient")?;
    Ok(())
}

/// webhook-ingress on one storage, behind the bench's guard, and a gateway in front of it.
pub struct Ingress {
    pub gateway: SocketAddr,
    storage: StorageConfig,
}

impl Ingress {
    /// Starts the service with the platform's `[webhook]` settings on `storage` (the dispatcher
    /// and retention job are not run), registers the Stripe endpoint and checks that one signed
    /// event is acknowledged through the gateway.
    pub async fn start(
        sut: &Handle,
        config: &PlatformConfig,
        storage: StorageConfig,
        guard: Arc<Guard>,
        token: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Ingress> {
        let (hook_config, max_message) = (config.webhook.clone(), config.server.max_message_bytes);
        let start_storage = storage.clone();
        // Started on the server runtime: the group committer is spawned where `start` runs.
        let started = sut
            .spawn(async move {
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                maxai_webhook_ingress::start(
                    &hook_config,
                    &start_storage,
                    MasterKey::from_bytes(key),
                    max_message,
                )
                .await
            })
            .await??;
        let server = started.server;
        let layer = GuardLayer::new(guard.clone(), max_message);
        let server_stop = stop.clone();
        let grpc = spawn_server(sut, move |l| async move {
            let mut routes = tonic::service::RoutesBuilder::default();
            routes.add_service(server);
            let app = GrpcApp {
                routes: routes.routes(),
                service_names: vec![maxai_webhook_ingress::SERVICE_NAME.to_owned()],
                guard: layer,
            };
            serve_grpc(l, app, server_stop, Duration::ZERO).await
        })
        .await?;
        let gateway = flags::serve_gateway(
            sut,
            config,
            grpc,
            vec![maxai_webhook_ingress::SERVICE_NAME.into()],
            guard,
            stop,
        )
        .await?;
        create_endpoint(grpc, token).await?;
        let ingress = Ingress { gateway, storage };
        ingress.check().await?;
        Ok(ingress)
    }

    async fn check(&self) -> anyhow::Result<()> {
        let events = StripeEvents::new();
        let mut conn = load::http_connect(self.gateway).await?;
        let (status, body) = load::http_call(&mut conn, target(&events)?.request(0)).await?;
        anyhow::ensure!(
            status == http::StatusCode::OK,
            "a signed event was answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// The REST paths of `n` events stored through the gateway (`n` ≤ 100), for the
    /// authenticated read of one stored row: `GET /v1/tenants/{t}/events/{id}`.
    pub async fn event_paths(
        &self,
        events: &Arc<StripeEvents>,
        token: &str,
        n: usize,
    ) -> anyhow::Result<Vec<String>> {
        let target = target(events)?;
        let mut conn = load::http_connect(self.gateway).await?;
        for i in 0..n as u64 {
            let (status, body) = load::http_call(&mut conn, target.request(i)).await?;
            anyhow::ensure!(status.is_success(), "seeding events: {status} {body:?}");
        }
        let list = HttpTarget::new(
            Method::GET,
            [format!("/v1/tenants/{TENANT}/events?pageSize={n}")],
            Bytes::new(),
        )?
        .bearer(token)?;
        let (status, body) = load::http_call(&mut conn, list.request(0)).await?;
        anyhow::ensure!(status.is_success(), "ListEvents: {status} {body:?}");
        let listed: serde_json::Value = serde_json::from_slice(&body)?;
        let paths: Vec<String> = listed["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(|name| format!("/v1/{name}")))
            .collect();
        anyhow::ensure!(
            paths.len() == n,
            "ListEvents gave {} of {n} events",
            paths.len()
        );
        Ok(paths)
    }

    /// Events stored and payloads quarantined so far.
    pub async fn stored(&self) -> anyhow::Result<(i64, i64)> {
        let mut storage = self.storage.clone();
        storage.max_connections = 2;
        let db = maxai_kit::storage::connect(
            &storage,
            maxai_webhook_ingress::STORAGE_NAME,
            &maxai_webhook_ingress::MIGRATIONS,
        )
        .await?;
        const EVENTS: &str = "SELECT count(*) FROM events";
        const QUARANTINED: &str = "SELECT count(*) FROM quarantined_events";
        Ok(match db {
            Db::Postgres(pool) => {
                let counts = (
                    sqlx::query_scalar(EVENTS).fetch_one(&pool).await?,
                    sqlx::query_scalar(QUARANTINED).fetch_one(&pool).await?,
                );
                pool.close().await;
                counts
            }
            Db::Sqlite(pool) => {
                let counts = (
                    sqlx::query_scalar(EVENTS).fetch_one(&pool).await?,
                    sqlx::query_scalar(QUARANTINED).fetch_one(&pool).await?,
                );
                pool.close().await;
                counts
            }
        })
    }
}

/// The Stripe endpoint of `acct_bench`, created over gRPC with the admin token.
async fn create_endpoint(grpc: SocketAddr, token: &str) -> anyhow::Result<()> {
    let channel = load::endpoint(grpc)?.connect().await?;
    WebhookIngressServiceClient::new(authed(channel, token)?)
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            parent: format!("tenants/{TENANT}/clients/{CLIENT}"),
            webhook_endpoint: Some(pb::WebhookEndpoint {
                display_name: "Stripe".into(),
                provider: pb::Provider::Stripe as i32,
                account: Some(pb::webhook_endpoint::Account::Stripe(pb::StripeAccount {
                    account_id: ACCOUNT.into(),
                })),
                secret: WHSEC.into(),
                ..Default::default()
            }),
            webhook_endpoint_id: "stripe".into(),
            request_id: String::new(),
        })
        .await
        .context("CreateWebhookEndpoint")?;
    Ok(())
}

/// A fresh database `maxai_bench_<uuid>` on the machine's PostgreSQL, dropped (with whatever is
/// still connected to it) when this is dropped, also when the bench fails.
pub struct Postgres {
    name: String,
    /// Connections the insert baseline may open.
    pub pool_size: u32,
    /// `synchronous_commit` and `fsync` of the server: what a commit costs.
    pub settings: String,
}

impl Postgres {
    /// Creates the database and the baseline's table. `service_pool`: the connections the
    /// webhook service will hold besides the baseline's.
    pub async fn create(service_pool: u32) -> anyhow::Result<Postgres> {
        let admin = PgConnectOptions::from_str(PG_ADMIN)?;
        let mut conn = tokio::time::timeout(Duration::from_secs(5), admin.connect())
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {PG_ADMIN} within 5 s"))?
            .with_context(|| format!("cannot connect to {PG_ADMIN}"))?;
        let free: i64 = sqlx::query_scalar(
            "SELECT current_setting('max_connections')::bigint \
             - current_setting('superuser_reserved_connections')::bigint \
             - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
        )
        .fetch_one(&mut conn)
        .await?;
        let sync: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut conn)
            .await?;
        let fsync: String = sqlx::query_scalar("SELECT current_setting('fsync')")
            .fetch_one(&mut conn)
            .await?;
        let pool_size = (free - i64::from(service_pool) - PG_SPARE_CONNECTIONS).min(64);
        anyhow::ensure!(
            pool_size >= 8,
            "PostgreSQL has {free} free connections; the bench needs {} besides {PG_SPARE_CONNECTIONS} spare",
            i64::from(service_pool) + 8
        );
        let name = format!("maxai_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        conn.close().await?;
        let pg = Postgres {
            name,
            pool_size: pool_size as u32,
            settings: format!("synchronous_commit={sync}, fsync={fsync}"),
        };
        let mut conn = pg.options()?.connect().await?;
        sqlx::query("CREATE TABLE bench_insert (id text PRIMARY KEY, body text NOT NULL)")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(pg)
    }

    fn url(&self) -> String {
        let base = PG_ADMIN.rsplit_once('/').map_or(PG_ADMIN, |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    fn options(&self) -> anyhow::Result<PgConnectOptions> {
        Ok(PgConnectOptions::from_str(&self.url())?.disable_statement_logging())
    }

    /// The platform's storage settings on this database (the service makes its own schema).
    pub fn storage(&self, config: &PlatformConfig) -> StorageConfig {
        let mut storage = config.storage.clone();
        storage.database_url = SecretString::from(self.url());
        storage.redis_url = SecretString::from(String::new());
        storage
    }

    /// The insert baseline on this database.
    pub fn insert(&self) -> anyhow::Result<Arc<PgInsert>> {
        Ok(Arc::new(PgInsert {
            options: self.options()?,
            pool_size: self.pool_size,
            events: StripeEvents::new(),
        }))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On its own thread and runtime: this may run inside the bench's runtime.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnectOptions::from_str(PG_ADMIN)?.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("maxai-bench: could not drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("maxai-bench: could not drop database {}", self.name),
        }
    }
}

/// `INSERT … ON CONFLICT (id) DO NOTHING` of an event-sized row, one autocommit statement each.
pub struct PgInsert {
    options: PgConnectOptions,
    pool_size: u32,
    events: Arc<StripeEvents>,
}

/// `concurrency` workers on a pool opened (every connection) before the clock starts and
/// closed after, so the connections are not held while the other measurements run. The pool
/// does not ping a connection before each statement (sqlx's default would add a round trip).
pub async fn load_insert(
    load: Load,
    target: Arc<PgInsert>,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let pool = PgPoolOptions::new()
        .max_connections(target.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .connect_with(target.options.clone())
        .await?;
    let mut held = Vec::with_capacity(target.pool_size as usize);
    for _ in 0..target.pool_size {
        held.push(pool.acquire().await?);
    }
    drop(held);
    let states = (0..concurrency)
        .map(|_| (pool.clone(), target.clone()))
        .collect();
    let op = |(pool, target): (sqlx::PgPool, Arc<PgInsert>)| async move {
        let (id, body) = target.events.next_event(unix_now());
        let done = sqlx::query(INSERT)
            .bind(id)
            .bind(body)
            .execute(&pool)
            .await?;
        anyhow::ensure!(done.rows_affected() == 1, "the insert was a duplicate");
        Ok((pool, target))
    };
    let stats = load::closed_loop(load, states, op).await;
    pool.close().await;
    Ok(stats)
}
