//! RED metrics (rate, errors, duration) for every RPC and REST route, and the Prometheus
//! exporter the platform serves on its metrics listener.
use std::{
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::telemetry::{correlation_id, CorrelationId, CORRELATION_HEADER};

pub const GRPC_REQUESTS_TOTAL: &str = "maxai_grpc_requests_total";
pub const GRPC_REQUEST_DURATION_SECONDS: &str = "maxai_grpc_request_duration_seconds";
pub const HTTP_REQUESTS_TOTAL: &str = "maxai_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "maxai_http_request_duration_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle for rendering.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Tower layer for the gRPC server: correlation id (accepted or generated, put back into the
/// request so handlers see it), a span per call, and RED metrics labelled by method and code.
#[derive(Debug, Clone, Default)]
pub struct GrpcTelemetryLayer;

impl<S> Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for GrpcTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let incoming = req
            .headers()
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok());
        let id = correlation_id(incoming);
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            req.headers_mut().insert(CORRELATION_HEADER, value);
        }
        req.extensions_mut().insert(CorrelationId(id.clone()));
        let span = tracing::info_span!("grpc", method = %method, correlation_id = %id);
        // Readiness was checked on `self.inner`; take it and leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let start = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(req).await;
                let code = match &result {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
                        .unwrap_or_else(|| "Ok".to_owned()),
                    Err(_) => "Transport".to_owned(),
                };
                let elapsed = start.elapsed().as_secs_f64();
                metrics::counter!(GRPC_REQUESTS_TOTAL, "method" => method.clone(), "code" => code.clone()).increment(1);
                metrics::histogram!(GRPC_REQUEST_DURATION_SECONDS, "method" => method).record(elapsed);
                if code != "Ok" {
                    tracing::debug!(code = %code, elapsed_ms = elapsed * 1e3, "rpc failed");
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Records one REST request (the gateway calls this from its middleware).
pub fn record_http(route: &str, method: &str, status: u16, elapsed_secs: f64) {
    metrics::counter!(HTTP_REQUESTS_TOTAL, "route" => route.to_owned(), "method" => method.to_owned(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route.to_owned(), "method" => method.to_owned())
        .record(elapsed_secs);
}

/// Router serving `GET /metrics` in the Prometheus text format.
pub fn router() -> axum::Router {
    let handle = prometheus();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}
