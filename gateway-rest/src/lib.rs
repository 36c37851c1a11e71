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
    auth::Guard,
    dynamic::DynamicClient,
    telemetry::{correlation_id, CorrelationId, CORRELATION_HEADER},
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
    /// API key → (access token, when to exchange again).
    exchanged: std::sync::RwLock<std::collections::HashMap<String, (String, Instant)>>,
}

impl Gateway {
    /// Routes for `services` (full names) over connections to `upstream` (`http://host:port`),
    /// or to the address `config.upstreams` names for a service.
    pub fn new(
        config: GatewayConfig,
        upstream: &str,
        services: Vec<String>,
        max_message_bytes: usize,
        guard: Arc<Guard>,
    ) -> anyhow::Result<Arc<Self>> {
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
            guard,
            exchanged: std::sync::RwLock::new(std::collections::HashMap::new()),
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
        if let Some((token, until)) = self
            .exchanged
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(api_key)
        {
            if Instant::now() < *until {
                return Ok(Some(token.clone()));
            }
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
        let until = Instant::now() + Duration::from_secs(lifetime * 4 / 5);
        let mut cache = self.exchanged.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(api_key.to_owned(), (tokens.access_token.clone(), until));
        Ok(Some(tokens.access_token))
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
        .nest("/ofrep/v1", ofrep::router())
        .fallback(transcoded)
        .layer(middleware::from_fn(correlate))
        .with_state(gateway)
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
    for route in &gw.routes {
        if let Some(bound) = route.template.matches(&path) {
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
    let bytes = read_body(body, gw.config.max_body_bytes).await?;
    let message = transcode::request(route, bound, query.as_deref(), &bytes)?;
    gw.guard
        .check(&route.grpc_path, token.as_deref(), &message)
        .await
        .map_err(|e| Problem::from_status(&tonic::Status::from(e)))?;
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
    let mut resp = Json(transcode::response(route, reply.get_ref())).into_response();
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
