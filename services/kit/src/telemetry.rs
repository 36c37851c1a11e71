//! Logs (JSON via tracing, or pretty for people) and the correlation id that ties one request's
//! lines together across the gateway and every service.
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::{LogFormat, TelemetryConfig};

/// gRPC metadata / HTTP header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Installs the global subscriber once; later calls (tests) are ignored. Logs go to stderr, so
/// stdout carries only what a command prints for its caller (e.g. a minted token).
pub fn init(cfg: &TelemetryConfig) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// A correlation id taken from the caller when it is sane, else a new one.
pub fn correlation_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

/// The correlation id of the request being served, stored in request extensions.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(correlation_id(Some("abc-123")), "abc-123");
        assert_ne!(
            correlation_id(Some("bad id with spaces")),
            "bad id with spaces"
        );
        assert_eq!(correlation_id(None).len(), 36);
        assert_ne!(correlation_id(Some(&"x".repeat(500))).len(), 500);
    }
}
