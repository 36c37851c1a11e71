//! The REST gateway: a thin axum layer that turns public JSON into gRPC calls.
//!
//! Routes are not written by hand: every RPC of a served service that carries `google.api.http`
//! is reachable, transcoded with the proto3 JSON mapping through the kit's dynamic caller. Every
//! failure is `application/problem+json`. `x-correlation-id` is accepted or generated, echoed
//! and forwarded. `GET /openapi.json` is generated from the same descriptors. OFREP flag
//! evaluation lives under `/ofrep/v1`.
//!
//! | module | job |
//! | --- | --- |
//! | [`template`] | path templates: parse, match, OpenAPI form |
//! | [`routes`] | the route table from descriptors |
//! | [`transcode`] | REST ⇄ proto3 JSON ⇄ protobuf |
//! | [`problem`] | RFC 7807 answers |
//! | [`openapi`] | OpenAPI 3.1 document |
//! | [`webhooks`] | `POST /v1/webhooks/{provider}`: raw bytes, headers and public URL to the ingress |
//! | [`ofrep`] | OpenFeature Remote Evaluation Protocol endpoints |
#![forbid(unsafe_code)]
// Problems are built on the failure path only; boxing them buys nothing measurable.
#![allow(clippy::result_large_err)]

pub mod ofrep;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod template;
pub mod transcode;
pub mod webhooks;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use maxai_kit::{
    auth::{Guard, MethodRule, Principal},
    dynamic::DynamicClient,
    rate_limit::{retry_after_seconds, Rate, RateLimiter, Verdict},
    telemetry::{correlation_id, CorrelationId, CORRELATION_HEADER},
    ttl_map::TtlMap,
};
use serde::Deserialize;
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::{problem::Problem, routes::Route};

/// `[gateway]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// gRPC address of the services; empty means this process's own gRPC listener.
    pub upstream: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for one upstream call, in milliseconds.
    pub timeout_ms: u64,
    /// gRPC connections to each upstream; 2-4 carry more than one under load.
    pub upstream_connections: usize,
    /// Services served elsewhere than `upstream`: a package or service name prefix (e.g.
    /// `maxai.iam.v1`) to an `http://host:port` address; the longest matching prefix wins.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, String>,
    pub rate_limits: RateLimitConfig,
}

/// `[gateway.rate_limits]`: GCRA limits per client IP (before authentication) and per tenant
/// (after it). A tenant's own `rate_limits` (set through IAM) win over `tenants` here, which win
/// over `per_tenant`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub per_ip: Rate,
    pub per_tenant: Rate,
    /// Tenant id → its rate.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, Rate>,
    /// Take the client IP from the first `X-Forwarded-For` hop (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

/// A tenant's own rate, as IAM keeps it; `None` means the configured default.
#[async_trait::async_trait]
pub trait TenantRates: Send + Sync + 'static {
    async fn rate(&self, tenant: &str) -> Option<Rate>;
}

/// What the gateway needs besides its configuration.
#[derive(Clone)]
pub struct GatewayDeps {
    pub guard: Arc<Guard>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Per-tenant rates from IAM, when this process can read them.
    pub tenant_rates: Option<Arc<dyn TenantRates>>,
}

/// Connections to one gRPC address.
struct Upstream {
    clients: Vec<DynamicClient>,
    health: Channel,
}

/// Everything a request handler needs.
pub struct Gateway {
    routes: Vec<Route>,
    upstreams: Vec<Upstream>,
    /// Service full name → index into `upstreams`.
    service_upstream: std::collections::HashMap<String, usize>,
    next: AtomicUsize,
    config: GatewayConfig,
    services: Vec<String>,
    openapi: std::sync::OnceLock<serde_json::Value>,
    guard: Arc<Guard>,
    limiter: Arc<dyn RateLimiter>,
    tenant_rates: Option<Arc<dyn TenantRates>>,
    /// API key → (access token, when to exchange again).
    exchanged: TtlMap<String>,
}

impl Gateway {
    /// Routes for `services` (full names) over connections to `upstream` (`http://host:port`),
    /// or to the address `config.upstreams` names for a service.
    pub fn new(
        config: GatewayConfig,
        upstream: &str,
        services: Vec<String>,
        max_message_bytes: usize,
        deps: GatewayDeps,
    ) -> anyhow::Result<Arc<Self>> {
        for (what, rate) in [
            ("per_ip", config.rate_limits.per_ip),
            ("per_tenant", config.rate_limits.per_tenant),
        ]
        .into_iter()
        .chain(config.rate_limits.tenants.values().map(|r| ("tenants", *r)))
        {
            rate.validate()
                .map_err(|e| anyhow::anyhow!("gateway.rate_limits.{what}: {e}"))?;
        }
        let routes = routes::build(&services)?;
        let connect = |url: &str| -> anyhow::Result<Upstream> {
            let endpoint = Channel::from_shared(url.to_owned())?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_adaptive_window(true);
            let clients = (0..config.upstream_connections.max(1))
                .map(|_| DynamicClient::new(endpoint.connect_lazy(), max_message_bytes))
                .collect();
            Ok(Upstream {
                clients,
                health: endpoint.connect_lazy(),
            })
        };
        let mut urls = vec![upstream.to_owned()];
        let mut upstreams = vec![connect(upstream)?];
        let mut service_upstream = std::collections::HashMap::new();
        for service in &services {
            let chosen = config
                .upstreams
                .iter()
                .filter(|(prefix, _)| service.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len());
            let index = match chosen {
                None => 0,
                Some((_, url)) => match urls.iter().position(|u| u == url) {
                    Some(i) => i,
                    None => {
                        upstreams.push(connect(url)?);
                        urls.push(url.clone());
                        urls.len() - 1
                    }
                },
            };
            service_upstream.insert(service.clone(), index);
        }
        Ok(Arc::new(Gateway {
            routes,
            upstreams,
            service_upstream,
            next: AtomicUsize::new(0),
            config,
            services,
            openapi: std::sync::OnceLock::new(),
            guard: deps.guard,
            limiter: deps.limiter,
            tenant_rates: deps.tenant_rates,
            exchanged: TtlMap::new(10_000),
        }))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn upstream(&self, service: &str) -> &Upstream {
        &self.upstreams[self.service_upstream.get(service).copied().unwrap_or(0)]
    }

    fn client(&self, service: &str) -> &DynamicClient {
        let clients = &self.upstream(service).clients;
        &clients[self.next.fetch_add(1, Ordering::Relaxed) % clients.len()]
    }

    /// A channel to the upstream serving `service`.
    pub(crate) fn channel(&self, service: &str) -> Channel {
        self.upstream(service).health.clone()
    }

    /// The caller's access token: the bearer JWT, or the access token an API key (sent as
    /// `x-api-key` or as the bearer) is exchanged for, cached until shortly before it expires.
    async fn access_token(&self, headers: &http::HeaderMap) -> Result<Option<String>, Problem> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = maxai_kit::auth::bearer(header(header::AUTHORIZATION.as_str()));
        let api_key = match (header("x-api-key"), bearer) {
            (Some(k), _) => k.trim(),
            (None, Some(b)) if b.starts_with("mxk_") => b,
            (None, b) => return Ok(b.map(str::to_owned)),
        };
        if let Some(token) = self.exchanged.get(api_key) {
            return Ok(Some(token));
        }
        use maxai_proto::maxai::iam::v1::{
            auth_service_client::AuthServiceClient, ExchangeApiKeyRequest,
        };
        let mut req = tonic::Request::new(ExchangeApiKeyRequest {
            api_key: api_key.to_owned(),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(self.config.timeout_ms.max(1)));
        let tokens = AuthServiceClient::new(self.channel("maxai.iam.v1.AuthService"))
            .exchange_api_key(req)
            .await
            .map_err(|s| Problem::from_status(&s))?
            .into_inner()
            .tokens
            .unwrap_or_default();
        let lifetime = tokens
            .access_token_expire_time
            .map(|t| t.seconds - maxai_kit::storage::now_micros() / 1_000_000)
            .unwrap_or(0)
            .max(0) as u64;
        // Exchanged again at 80% of the lifetime, so a forwarded token never expires in flight.
        self.exchanged.insert(
            api_key.to_owned(),
            tokens.access_token.clone(),
            Duration::from_secs(lifetime * 4 / 5),
        );
        Ok(Some(tokens.access_token))
    }

    /// Authenticates a call to `path` before its body is even read, and counts it against its
    /// tenant's limit (refused calls count too, so probing costs the prober). `None` for public
    /// methods.
    async fn authenticate(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Option<(Principal, &MethodRule)>, Problem> {
        let rule = self.guard.rule(path).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no method {path}"),
            )
        })?;
        if rule.public {
            return Ok(None);
        }
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            problem(maxai_kit::Error::new(
                maxai_kit::ErrorKind::Unauthenticated,
                "this call needs a bearer access token",
            ))
        })?;
        let principal = self.guard.verifier().verify(token).await.map_err(problem)?;
        if !principal.tenant.is_empty() {
            let rate = self.tenant_rate(&principal.tenant).await;
            self.limit(&format!("tenant:{}", principal.tenant), rate)
                .await?;
        }
        Ok(Some((principal, rule)))
    }

    /// Takes one request from `key`'s bucket; 429 with Retry-After when it is empty. A limiter
    /// that cannot answer (Redis down) lets the request through: an outage of the cache must
    /// not become an outage of the API.
    async fn limit(&self, key: &str, rate: Rate) -> Result<(), Problem> {
        if !self.config.rate_limits.enabled {
            return Ok(());
        }
        match self.limiter.check(key, rate).await {
            Ok(Verdict::Allowed { .. }) => Ok(()),
            Ok(Verdict::Limited { retry_after }) => {
                let mut p = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "too many requests; retry after the time in Retry-After",
                );
                p.retry_after_secs = Some(retry_after_seconds(retry_after));
                Err(p)
            }
            Err(e) => {
                tracing::warn!(error = %e, key, "rate limiter unavailable; request let through");
                Ok(())
            }
        }
    }

    /// The rate of `tenant`: its own (IAM), else the configured override, else the default.
    async fn tenant_rate(&self, tenant: &str) -> Rate {
        if let Some(r) = match &self.tenant_rates {
            Some(rates) => rates.rate(tenant).await,
            None => None,
        } {
            return r;
        }
        let limits = &self.config.rate_limits;
        limits
            .tenants
            .get(tenant)
            .copied()
            .unwrap_or(limits.per_tenant)
    }

    /// The client's address: the connection's peer, or the first `X-Forwarded-For` hop when
    /// configured to trust it.
    fn client_ip(&self, req: &Request) -> String {
        if self.config.rate_limits.trust_forwarded_for {
            if let Some(first) = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                return first.to_owned();
            }
        }
        req.extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// Forwards the caller's credential and correlation to a gRPC request.
    fn metadata<T>(
        &self,
        req: &mut tonic::Request<T>,
        headers: &http::HeaderMap,
        token: Option<&str>,
        correlation: &str,
    ) {
        if let Some(t) = token {
            maxai_kit::auth::with_bearer(req, t);
        }
        let md = req.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(correlation) {
            md.insert(CORRELATION_HEADER, v);
        }
        for name in ["traceparent", "tracestate", "user-agent"] {
            if let Some(v) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| MetadataValue::try_from(v).ok())
            {
                md.insert(name, v);
            }
        }
        req.set_timeout(Duration::from_millis(self.config.timeout_ms.max(1)));
    }
}

/// The gateway's router: transcoded routes, OpenAPI, OFREP, health.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::handler))
        .route(
            "/v1/webhooks/{provider}",
            axum::routing::post(webhooks::handler),
        )
        .nest("/ofrep/v1", ofrep::router())
        .fallback(transcoded)
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            limit_per_ip,
        ))
        .layer(middleware::from_fn(correlate))
        .with_state(gateway)
}

/// Limits each client IP before anything else is done for it (health probes excepted).
async fn limit_per_ip(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let key = format!("ip:{}", gw.client_ip(&req));
    match gw.limit(&key, gw.config.rate_limits.per_ip).await {
        Ok(()) => next.run(req).await,
        Err(p) => p.correlated(&correlation(&req)).into_response(),
    }
}

/// Accepts or generates the correlation id, echoes it, records RED metrics, and turns axum's
/// own plain-text rejections into problem+json.
async fn correlate(mut req: Request, next: Next) -> Response {
    let id = correlation_id(
        req.headers()
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "transcoded".to_owned());
    let start = Instant::now();
    let mut resp = next.run(req).await;
    // axum's own rejections are plain text; everything this gateway writes is JSON already.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().windows(4).any(|w| w == b"json"));
    if (resp.status().is_client_error() || resp.status().is_server_error()) && !is_json {
        let status = resp.status();
        resp = Problem::new(
            status,
            code_for(status),
            status.canonical_reason().unwrap_or("request refused"),
        )
        .correlated(&id)
        .into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(CORRELATION_HEADER, v);
    }
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map(|l| l.0.clone())
        .unwrap_or(route);
    maxai_kit::metrics::record_http(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Stable code for a status the gateway itself produced.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "ROUTE_NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        s if s.is_server_error() => "INTERNAL",
        _ => "BAD_REQUEST",
    }
}

/// The route template a transcoded request matched, for metric labels.
#[derive(Clone)]
struct RouteLabel(String);

fn correlation(req: &Request) -> String {
    req.extensions()
        .get::<CorrelationId>()
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

fn problem(e: maxai_kit::Error) -> Problem {
    Problem::from_status(&tonic::Status::from(e))
}

/// Reads the whole body within the configured limit.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {limit} bytes"),
        )),
        Err(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            "the request body could not be read",
        )),
    }
}

async fn transcoded(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = correlation(&req);
    match transcoded_inner(&gw, req).await {
        Ok(resp) => resp,
        Err(p) => p.correlated(&id).into_response(),
    }
}

async fn transcoded_inner(gw: &Gateway, req: Request) -> Result<Response, Problem> {
    let path = req.uri().path().to_owned();
    let mut allowed: Vec<Method> = Vec::new();
    let mut found = None;
    let split = template::SplitPath::new(&path);
    for route in &gw.routes {
        if let Some(bound) = split.as_ref().and_then(|p| route.template.matches_split(p)) {
            if route.http_method == req.method() {
                found = Some((route, bound));
                break;
            }
            if !allowed.contains(&route.http_method) {
                allowed.push(route.http_method.clone());
            }
        }
    }
    let Some((route, bound)) = found else {
        if allowed.is_empty() {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no route for {path}"),
            ));
        }
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("{} is not allowed on {path}", req.method()),
        );
        p.allow = Some(
            allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        );
        return Err(p);
    };
    let id = correlation(&req);
    let query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    if !route.body.is_empty() {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/json") || ct.ends_with("+json"));
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as application/json",
            ));
        }
    }
    let token = if route.auth.public {
        None
    } else {
        gw.access_token(&parts.headers).await?
    };
    let caller = gw.authenticate(&route.grpc_path, token.as_deref()).await?;
    let bytes = read_body(body, gw.config.max_body_bytes).await?;
    let message = transcode::request(route, bound, query.as_deref(), &bytes)?;
    if let (Some((principal, rule)), Some(token)) = (caller, token.as_deref()) {
        gw.guard
            .authorize(&principal, token, rule, &message)
            .await
            .map_err(problem)?;
    }
    let mut grpc_req = tonic::Request::new(message);
    gw.metadata(&mut grpc_req, &parts.headers, token.as_deref(), &id);
    let reply = gw
        .client(route.method.parent_service().full_name())
        .unary(&route.method, grpc_req)
        .await
        .map_err(|s| Problem::from_status(&s))?;
    if let Some(field) = &route.redirect {
        let location = maxai_kit::auth::resource_of(reply.get_ref(), field);
        if let Ok(v) = HeaderValue::from_str(&location) {
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            return Ok(resp);
        }
    }
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        transcode::response_bytes(route, reply.get_ref()),
    )
        .into_response();
    resp.extensions_mut()
        .insert(RouteLabel(route.template.raw().to_owned()));
    Ok(resp)
}

async fn readyz(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = correlation(&req);
    for service in &gw.services {
        let mut client = tonic_health::pb::health_client::HealthClient::new(gw.channel(service));
        let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: service.clone(),
        });
        req.set_timeout(Duration::from_secs(2));
        let serving = matches!(
            client.check(req).await.map(|r| r.into_inner().status()),
            Ok(tonic_health::pb::health_check_response::ServingStatus::Serving)
        );
        if !serving {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                format!("{service} is not serving"),
            )
            .correlated(&id)
            .into_response();
        }
    }
    Json(serde_json::json!({"status": "ready", "services": gw.services})).into_response()
}
