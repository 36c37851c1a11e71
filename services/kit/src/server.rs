//! gRPC server assembly shared by every service: health (tonic-health), reflection, telemetry
//! and metrics, message-size limits (set on each generated server by its `routes()`), and the
//! shutdown sequence SIGTERM → NOT_SERVING → drain → close.
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::metrics::GrpcTelemetryLayer;

/// What one process serves over gRPC.
pub struct GrpcApp {
    pub routes: Routes,
    /// Full names of the services in `routes` (e.g. `maxai.flags.v1.FeatureFlagsService`):
    /// each gets a health status and is listed by reflection.
    pub service_names: Vec<String>,
    /// Authenticates and authorizes every call to the contracts' methods; there is no
    /// unguarded server.
    pub guard: crate::auth::GuardLayer,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then reports NOT_SERVING for every
/// service, waits `drain` so load balancers stop routing here, and finishes in-flight calls.
pub async fn serve_grpc(
    listener: TcpListener,
    app: GrpcApp,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_all(&reporter, &app.service_names, ServingStatus::Serving).await;

    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(maxai_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in &app.service_names {
        reflection = reflection.with_service_name(name.clone());
    }
    let reflection = reflection.build_v1()?;

    let names = app.service_names.clone();
    let stop = async move {
        shutdown.cancelled().await;
        set_all(&reporter, &names, ServingStatus::NotServing).await;
        tracing::info!(drain_secs = drain.as_secs(), "grpc not serving, draining");
        tokio::time::sleep(drain).await;
    };
    let routes = app
        .routes
        .add_service(health_service)
        .add_service(reflection);
    tonic::transport::Server::builder()
        .layer(GrpcTelemetryLayer)
        .layer(app.guard)
        .add_routes(routes)
        // A listener handed in loses tonic's own TCP_NODELAY default; without it, responses
        // larger than a segment wait ~40 ms on delayed ACKs.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await?;
    Ok(())
}

/// Serves an axum router (the gateway, metrics) until `shutdown`, with TCP_NODELAY on every
/// connection and in-flight requests finished on shutdown.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The peer address reaches handlers (per-IP rate limits) as ConnectInfo<SocketAddr>.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(token: CancellationToken) {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested");
        token.cancel();
    }
}
