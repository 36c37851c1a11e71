//! Typed configuration: embedded documented defaults → optional TOML file → `MAXAI_<SECTION>__<KEY>`
//! environment variables, plus the standard `DATABASE_URL` / `REDIS_URL`. Structs deny unknown
//! fields, so a misspelt key stops the process with a message naming it before any port is bound.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use secrecy::SecretString;
use serde::{de::DeserializeOwned, Deserialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path} could not be read: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Loads `T` from the embedded defaults, then `file` (which must exist when given), then the
/// process environment. Environment values are typed as figment does (numbers, booleans, strings).
pub fn load<T: DeserializeOwned>(
    defaults_toml: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Toml::string(defaults_toml));
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        figment = figment.merge(Toml::string(&text));
    }
    let standard = Env::raw()
        .only(&["DATABASE_URL", "REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"])
        .map(|k| match k.as_str().to_ascii_uppercase().as_str() {
            "DATABASE_URL" => "storage.database_url".into(),
            "REDIS_URL" => "storage.redis_url".into(),
            _ => "telemetry.otlp_endpoint".into(),
        });
    figment = figment
        .merge(standard)
        .merge(Env::prefixed("MAXAI_").split("__"));
    figment.extract().map_err(|e| {
        let mut msg = String::new();
        for err in e {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            let key = err.path.join(".");
            let source = err
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                msg.push_str(&format!("{}{source}", err.kind));
            } else {
                msg.push_str(&format!("key `{key}`: {}{source}", err.kind));
            }
        }
        ConfigError::Invalid(msg)
    })
}

/// Listeners and limits of the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listener for every service of the process.
    pub grpc_addr: SocketAddr,
    /// REST gateway listener.
    pub http_addr: SocketAddr,
    /// Prometheus `/metrics` listener.
    pub metrics_addr: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Seconds between NOT_SERVING and closing listeners on SIGTERM, so load balancers drain.
    pub drain_secs: u64,
}

impl ServerConfig {
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

/// Where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Empty: SQLite files under `data_dir`. `postgres://…`: PostgreSQL, one schema per service.
    /// `sqlite://DIR`: SQLite files under DIR.
    pub database_url: SecretString,
    /// Folder for the SQLite files of the embedded default.
    pub data_dir: PathBuf,
    /// Empty: in-process cache and notifications. `redis://…`: Redis.
    pub redis_url: SecretString,
    /// Prefix of every Redis key and channel, so several platforms can share one Redis.
    pub redis_prefix: String,
    /// Connections per service pool.
    pub max_connections: u32,
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `json` (default, for machines) or `pretty` (for people).
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `info,maxai_feature_flags=debug`.
    pub log_level: String,
    /// OTLP endpoint for traces; empty disables export.
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        server: ServerConfig,
    }

    const DEFAULTS: &str = r#"
[server]
grpc_addr = "127.0.0.1:50051"
http_addr = "127.0.0.1:8080"
metrics_addr = "127.0.0.1:9090"
max_message_bytes = 4194304
drain_secs = 2
"#;

    #[test]
    fn env_overrides_defaults_with_typed_values() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MAXAI_SERVER__DRAIN_SECS", "7");
            let c: Root = load(DEFAULTS, None).map_err(|e| e.to_string())?;
            assert_eq!(c.server.drain_secs, 7);
            assert_eq!(c.server.grpc_addr.port(), 50051);
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_rejected_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MAXAI_SERVER__GRPC_PORT", "1");
            let err = load::<Root>(DEFAULTS, None).unwrap_err();
            assert!(err.to_string().contains("grpc_port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_value_is_rejected_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MAXAI_SERVER__GRPC_ADDR", "not-an-address");
            let err = load::<Root>(DEFAULTS, None).unwrap_err();
            assert!(err.to_string().contains("server.grpc_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_missing_file_is_an_error() {
        // Inside a jail too: jails serialize tests that touch the environment.
        figment::Jail::expect_with(|jail| {
            jail.create_file("maxai.toml", "[server]\ndrain_secs = 9\n")?;
            let path = jail.directory().join("maxai.toml");
            let c: Root = load(DEFAULTS, Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(c.server.drain_secs, 9);
            let err =
                load::<Root>(DEFAULTS, Some(&jail.directory().join("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::File { .. }));
            Ok(())
        });
    }
}
