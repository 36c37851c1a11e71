//! The composition root: which services exist, how one process runs some or all of them with
//! the gateway and the metrics endpoint, and how migrations are applied.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod config;
pub mod demo;
pub mod sandbox;

use std::{net::SocketAddr, time::Instant};

use anyhow::Context;
use maxai_kit::{
    auth::{GrpcKeySource, Guard, GuardLayer, RemoteAuthorizer, Verifier},
    rate_limit::Rate,
    server::{serve_grpc, serve_http, GrpcApp},
    shared_state::SharedState,
    storage, CancellationToken,
};
use tokio::{net::TcpListener, task::JoinSet};

pub use config::PlatformConfig;

/// A component `maxai serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    FeatureFlags,
    Iam,
    WebhookIngress,
    /// The integration ports (provider adapters).
    Adapters,
    Orchestrator,
    Gateway,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::FeatureFlags,
        Component::Iam,
        Component::WebhookIngress,
        Component::Adapters,
        Component::Orchestrator,
        Component::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::FeatureFlags => "feature-flags",
            Component::Iam => "iam",
            Component::WebhookIngress => "webhook-ingress",
            Component::Adapters => "adapters",
            Component::Orchestrator => "orchestrator",
            Component::Gateway => "gateway",
        }
    }

    /// Parses a name; services whose contracts exist but whose implementation has not landed
    /// are named as such, so an operator is not left guessing.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        if let Some(c) = Component::ALL
            .into_iter()
            .find(|c| c.name() == name || (name == "flags" && *c == Component::FeatureFlags))
        {
            return Ok(c);
        }
        if PLANNED.contains(&name) {
            anyhow::bail!("service {name} has its contract under proto/ but is not implemented in this release");
        }
        anyhow::bail!(
            "unknown service {name}; known: {}",
            Component::ALL.map(Component::name).join(", ")
        )
    }
}

/// Services whose contracts are published but whose implementation is still to come.
pub const PLANNED: [&str; 3] = ["prompt", "billing-usage", "payments"];

/// gRPC services the gateway routes to (those implemented).
pub fn routed_services() -> Vec<String> {
    let mut names = vec![maxai_feature_flags::SERVICE_NAME.to_owned()];
    names.extend(maxai_iam::SERVICE_NAMES.map(String::from));
    names.push(maxai_webhook_ingress::SERVICE_NAME.to_owned());
    names.push(maxai_orchestrator::SERVICE_NAMES[0].to_owned());
    names
}

/// Where a running platform listens.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: SocketAddr,
}

/// Bound sockets, so tests can pass port 0 and read the real ports.
pub struct Sockets {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub metrics: TcpListener,
}

impl Sockets {
    pub async fn bind(config: &PlatformConfig) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for {what} on {addr}"))
        };
        Ok(Sockets {
            grpc: bind(config.server.grpc_addr, "gRPC").await?,
            http: bind(config.server.http_addr, "REST").await?,
            metrics: bind(config.server.metrics_addr, "metrics").await?,
        })
    }
}

/// Runs `components` until `shutdown` is cancelled. `ready` receives the listeners once every
/// component is serving.
pub async fn run(
    config: PlatformConfig,
    components: &[Component],
    sockets: Sockets,
    shutdown: CancellationToken,
    ready: impl FnOnce(Listeners),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let shared = SharedState::connect(&config.storage)
        .await
        .context("cache/notifier (storage.redis_url)")?;
    let mut tasks = JoinSet::new();
    let mut listeners = Listeners {
        grpc: None,
        http: None,
        metrics: sockets.metrics.local_addr()?,
    };

    let mut routes = tonic::service::RoutesBuilder::default();
    let mut names = Vec::new();
    if components.contains(&Component::FeatureFlags) {
        let flags = maxai_feature_flags::start(
            &config.flags,
            &config.storage,
            &shared,
            config.server.max_message_bytes,
            shutdown.clone(),
        )
        .await
        .context("feature-flags")?;
        routes.add_service(flags);
        names.push(maxai_feature_flags::SERVICE_NAME.to_owned());
    }
    let mut in_process = None;
    let mut in_process_ring = None;
    let mut tenant_rates = None;
    if components.contains(&Component::Iam) {
        let iam = maxai_iam::start(
            &config.storage,
            &config.iam,
            &shared,
            config.server.max_message_bytes,
            shutdown.clone(),
        )
        .await
        .context("iam")?;
        in_process = Some((iam.key_ring.clone(), iam.policy.clone()));
        in_process_ring = Some(iam.key_ring.clone());
        tenant_rates = Some(
            std::sync::Arc::new(IamTenantRates::new(iam.tenancy.clone()))
                as std::sync::Arc<dyn maxai_gateway::TenantRates>,
        );
        iam.add_to(&mut routes);
        names.extend(maxai_iam::SERVICE_NAMES.map(String::from));
    }
    let guard = guard(&config, &shared, in_process, shutdown.clone()).await?;
    let mut webhook = None;
    let mut config = config;
    if components.contains(&Component::Orchestrator) && config.webhook.consumers.is_empty() {
        // In one process the orchestrator consumes every event unless told otherwise.
        config
            .webhook
            .consumers
            .insert("orchestrator".to_owned(), String::new());
    }
    if components.contains(&Component::WebhookIngress) {
        let master =
            maxai_kit::sealed::MasterKey::for_storage(&config.iam.master_key, &config.storage)
                .context("webhook-ingress master key (iam.master_key)")?;
        let started = maxai_webhook_ingress::start(
            &config.webhook,
            &config.storage,
            master,
            config.server.max_message_bytes,
        )
        .await
        .context("webhook-ingress")?;
        routes.add_service(started.server);
        names.push(maxai_webhook_ingress::SERVICE_NAME.to_owned());
        webhook = Some((started.store, started.stored));
    }
    let own = format!("http://{}", loopback(sockets.grpc.local_addr()?));
    let service_ring = match &in_process_ring {
        Some(ring) => Some(ring.clone()),
        None if components.contains(&Component::WebhookIngress)
            || components.contains(&Component::Adapters)
            || components.contains(&Component::Orchestrator) =>
        {
            Some(std::sync::Arc::new(
                maxai_iam::key_ring(&config.storage, &config.iam)
                    .await
                    .context("the service identity's key ring")?,
            ))
        }
        None => None,
    };
    if components.contains(&Component::Adapters) {
        let iam_url = if components.contains(&Component::Iam) {
            own.clone()
        } else {
            upstream_for(&config, "maxai.iam.v1.ConnectionCredentialService")
        };
        let channel = tonic::transport::Channel::from_shared(iam_url.clone())
            .with_context(|| format!("IAM address {iam_url}"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let ring = service_ring
            .clone()
            .context("adapters need the service identity's key ring")?;
        let tokens = ServiceTokens::new(ring);
        // Without Redis the process cache would forget, at a restart, which sends happened.
        let idempotency: std::sync::Arc<dyn maxai_kit::shared_state::Cache> =
            if shared.backend == "memory" {
                std::sync::Arc::new(
                    maxai_adapter::SqlCache::connect(&config.storage)
                        .await
                        .context("the adapters' idempotency store")?,
                )
            } else {
                shared.cache.clone()
            };
        adapters::add_to(
            &mut routes,
            &config.adapters,
            idempotency,
            channel,
            std::sync::Arc::new(move || tokens.token()),
            config.server.max_message_bytes,
        );
        names.extend(adapters::SERVICE_NAMES.map(String::from));
    }
    if components.contains(&Component::Orchestrator) {
        let ports_url = if components.contains(&Component::Adapters) {
            own.clone()
        } else {
            upstream_for(&config, "maxai.ports.")
        };
        let channel = tonic::transport::Channel::from_shared(ports_url.clone())
            .with_context(|| format!("ports address {ports_url}"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let ring = service_ring
            .clone()
            .context("the orchestrator needs the service identity's key ring")?;
        let tokens = ServiceTokens::new(ring);
        let started = maxai_orchestrator::start(
            &config.orchestrator,
            &config.storage,
            maxai_orchestrator::PortCaller::new(
                channel,
                std::sync::Arc::new(move || tokens.token()),
                config.server.max_message_bytes,
            ),
            shutdown.clone(),
        )
        .await
        .context("orchestrator")?;
        routes.add_service(started.orchestrator);
        routes.add_service(started.consumer);
        names.extend(maxai_orchestrator::SERVICE_NAMES.map(String::from));
        let mut workers = started.tasks;
        // With Redis, replicas wake each other's workers; in one process they share the engine.
        if shared.backend == "redis" {
            workers.push(
                started
                    .engine
                    .wake_across(shared.notifier.clone(), shutdown.clone())
                    .await
                    .context("orchestrator wake-ups (storage.redis_url)")?,
            );
        }
        tasks.spawn(async move {
            for worker in workers {
                let _ = worker.await;
            }
            Ok(())
        });
    }
    if !names.is_empty() {
        listeners.grpc = Some(sockets.grpc.local_addr()?);
        let app = GrpcApp {
            routes: routes.routes(),
            service_names: names,
            guard: GuardLayer::new(guard.clone(), config.server.max_message_bytes),
        };
        let (token, drain) = (shutdown.clone(), config.server.drain());
        tasks.spawn(async move {
            serve_grpc(sockets.grpc, app, token, drain)
                .await
                .context("gRPC server")
        });
    }
    if let Some((store, stored)) = webhook {
        let ring = service_ring
            .clone()
            .context("webhook-ingress: the service identity's key ring")?;
        deliver_and_purge(&config, store, stored, &own, ring, &mut tasks, &shutdown)?;
    }
    if components.contains(&Component::Gateway) {
        let upstream = match listeners.grpc {
            Some(addr) if config.gateway.upstream.is_empty() => {
                format!("http://{}", loopback(addr))
            }
            _ => config.upstream(),
        };
        let gateway = maxai_gateway::Gateway::new(
            config.gateway.clone(),
            &upstream,
            routed_services(),
            config.server.max_message_bytes,
            maxai_gateway::GatewayDeps {
                guard: guard.clone(),
                limiter: shared.limiter.clone(),
                tenant_rates,
            },
        )?;
        listeners.http = Some(sockets.http.local_addr()?);
        let token = shutdown.clone();
        tasks.spawn(async move {
            serve_http(sockets.http, maxai_gateway::router(gateway), token)
                .await
                .context("REST gateway")
        });
    }
    let token = shutdown.clone();
    tasks.spawn(async move {
        serve_http(sockets.metrics, maxai_kit::metrics::router(), token)
            .await
            .context("metrics endpoint")
    });
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        backend = shared.backend,
        "platform serving"
    );
    ready(listeners);
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %format!("{e:#}"), "component stopped");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Tenants' own rate limits read from IAM's store in this process, each kept 30 s so the
/// gateway does not read storage per request.
struct IamTenantRates {
    tenancy: std::sync::Arc<dyn maxai_iam::store::TenancyStore>,
    known: maxai_kit::ttl_map::TtlMap<Option<Rate>>,
}

impl IamTenantRates {
    fn new(tenancy: std::sync::Arc<dyn maxai_iam::store::TenancyStore>) -> Self {
        IamTenantRates {
            tenancy,
            known: maxai_kit::ttl_map::TtlMap::new(100_000),
        }
    }
}

#[async_trait::async_trait]
impl maxai_gateway::TenantRates for IamTenantRates {
    async fn rate(&self, tenant: &str) -> Option<Rate> {
        if let Some(rate) = self.known.get(tenant) {
            return rate;
        }
        let rate = match self.tenancy.get_tenant(tenant).await {
            Ok(Some(t)) if t.rate_limits.requests_per_minute > 0 => Some(Rate {
                per_minute: t.rate_limits.requests_per_minute as u32,
                burst: t.rate_limits.burst.max(1) as u32,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, tenant, "tenant rate limits unreadable; using the default");
                None
            }
        };
        self.known
            .insert(tenant.to_owned(), rate, std::time::Duration::from_secs(30));
        rate
    }
}

/// The configured address of the service `full_name` (longest matching upstream prefix), else
/// the default upstream.
fn upstream_for(config: &PlatformConfig, full_name: &str) -> String {
    config
        .gateway
        .upstreams
        .iter()
        .filter(|(prefix, _)| full_name.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, url)| url.clone())
        .unwrap_or_else(|| config.upstream())
}

/// Starts the webhook dispatcher (each consumer reached over gRPC, `""` meaning this process)
/// and the retention job; both stop with `shutdown` and finish what is in flight.
fn deliver_and_purge(
    config: &PlatformConfig,
    store: std::sync::Arc<dyn maxai_webhook_ingress::store::EventStore>,
    stored: std::sync::Arc<tokio::sync::Notify>,
    own: &str,
    ring: std::sync::Arc<maxai_iam::tokens::KeyRing>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let webhook = &config.webhook;
    let mut channels = std::collections::HashMap::new();
    for (name, address) in &webhook.consumers {
        let url = if address.is_empty() {
            own
        } else {
            address.as_str()
        };
        let channel = tonic::transport::Channel::from_shared(url.to_owned())
            .with_context(|| format!("webhook.consumers.{name}: {url} is not a URL"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(name.clone(), channel);
    }
    if webhook.dispatch.enabled {
        let tokens = ServiceTokens::new(ring);
        let credential: maxai_webhook_ingress::dispatch::Credential =
            std::sync::Arc::new(move || tokens.token());
        let dispatcher = maxai_webhook_ingress::dispatch::Dispatcher::new(
            store.clone(),
            channels,
            webhook.dispatch.clone(),
            credential,
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            dispatcher.run(stored, token).await;
            Ok(())
        });
    }
    let (retention, token) = (webhook.retention.clone(), shutdown.clone());
    tasks.spawn(async move {
        maxai_webhook_ingress::retention::run(store, retention, token).await;
        Ok(())
    });
    Ok(())
}

/// Access tokens of the platform's own services (`tenants/platform/serviceAccounts/mesh`,
/// `roles/platform-service`), minted from the key ring and reused until 80% of their life, so a
/// consumer verifies each one once.
struct ServiceTokens {
    ring: std::sync::Arc<maxai_iam::tokens::KeyRing>,
    current: std::sync::Mutex<Option<(String, Instant)>>,
}

impl ServiceTokens {
    fn new(ring: std::sync::Arc<maxai_iam::tokens::KeyRing>) -> Self {
        ServiceTokens {
            ring,
            current: std::sync::Mutex::new(None),
        }
    }

    fn token(&self) -> Option<String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, until)) = current.as_ref() {
            if Instant::now() < *until {
                return Some(token.clone());
            }
        }
        match self
            .ring
            .issue(maxai_iam::SERVICE_ACCOUNT, maxai_iam::PLATFORM_TENANT, None)
        {
            Ok((token, _)) => {
                let reuse = self.ring.ttl().mul_f64(0.8);
                *current = Some((token.clone(), Instant::now() + reuse));
                Some(token)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot mint the service identity's token");
                None
            }
        }
    }
}

type InProcessIam = (
    std::sync::Arc<maxai_iam::tokens::KeyRing>,
    std::sync::Arc<maxai_iam::policy::PolicyEngine>,
);

/// The guard of this process: IAM's key ring and policy engine when IAM runs here, else IAM's
/// JWKS and AuthorizationService over gRPC (at the address the gateway uses for IAM).
async fn guard(
    config: &PlatformConfig,
    shared: &SharedState,
    in_process: Option<InProcessIam>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::sync::Arc<Guard>> {
    let (source, authorizer): (
        std::sync::Arc<dyn maxai_kit::auth::KeySource>,
        std::sync::Arc<dyn maxai_kit::auth::Authorizer>,
    ) = match in_process {
        Some((keys, policy)) => (keys, policy),
        None => {
            let url = upstream_for(config, "maxai.iam.v1.AuthService");
            let channel = tonic::transport::Channel::from_shared(url.clone())
                .with_context(|| format!("IAM address {url}"))?
                .connect_timeout(std::time::Duration::from_secs(2))
                .connect_lazy();
            let authorizer = RemoteAuthorizer::start(
                channel.clone(),
                shared.notifier.as_ref(),
                shutdown.clone(),
            )
            .await?;
            (std::sync::Arc::new(GrpcKeySource::new(channel)), authorizer)
        }
    };
    let verifier = Verifier::new(config.iam.issuer.clone(), source);
    verifier
        .follow_revocations(shared.notifier.as_ref(), shutdown)
        .await?;
    Ok(Guard::new(verifier, authorizer))
}

fn loopback(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Applies the migrations of `components` (services only) and returns what ran.
pub async fn migrate(
    config: &PlatformConfig,
    components: &[Component],
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in components {
        let (name, migrations) = match c {
            Component::FeatureFlags => (
                maxai_feature_flags::STORAGE_NAME,
                &maxai_feature_flags::MIGRATIONS,
            ),
            Component::Iam => (maxai_iam::STORAGE_NAME, &maxai_iam::MIGRATIONS),
            Component::WebhookIngress => (
                maxai_webhook_ingress::STORAGE_NAME,
                &maxai_webhook_ingress::MIGRATIONS,
            ),
            Component::Orchestrator => (
                maxai_orchestrator::STORAGE_NAME,
                &maxai_orchestrator::MIGRATIONS,
            ),
            // Credentials live in IAM; the idempotency store is used only without Redis.
            Component::Adapters => (
                maxai_adapter::durable_cache::STORAGE_NAME,
                &maxai_adapter::durable_cache::MIGRATIONS,
            ),
            Component::Gateway => continue,
        };
        let db = storage::connect(&config.storage, name, migrations).await?;
        done.push(format!("{} ({})", c.name(), db.dialect()));
        db.close().await;
    }
    Ok(done)
}
