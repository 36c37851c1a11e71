//! The whole process's configuration: one section per component, defaults embedded from
//! `config/default.toml`.
use std::path::Path;

use maxai_feature_flags::FlagsConfig;
use maxai_gateway::GatewayConfig;
use maxai_iam::config::IamConfig;
use maxai_kit::config::{load, ConfigError, ServerConfig, StorageConfig, TelemetryConfig};
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub telemetry: TelemetryConfig,
    pub gateway: GatewayConfig,
    pub flags: FlagsConfig,
    pub iam: IamConfig,
    pub webhook: maxai_webhook_ingress::config::WebhookConfig,
    #[serde(default)]
    pub adapters: crate::adapters::AdaptersConfig,
    #[serde(default)]
    pub orchestrator: maxai_orchestrator::OrchestratorConfig,
}

impl PlatformConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: PlatformConfig = load(DEFAULTS, file)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, why: &str| Err(ConfigError::Invalid(format!("key `{key}`: {why}")));
        if self.server.max_message_bytes < 1024 {
            return invalid("server.max_message_bytes", "must be at least 1024");
        }
        if self.gateway.max_body_bytes < 1024 {
            return invalid("gateway.max_body_bytes", "must be at least 1024");
        }
        if !(1..=16).contains(&self.gateway.upstream_connections) {
            return invalid("gateway.upstream_connections", "must be 1..=16");
        }
        if !self.gateway.upstream.is_empty()
            && !self.gateway.upstream.starts_with("http://")
            && !self.gateway.upstream.starts_with("https://")
        {
            return invalid(
                "gateway.upstream",
                "must be empty or an http:// or https:// URL",
            );
        }
        if self.storage.max_connections == 0 {
            return invalid("storage.max_connections", "must be at least 1");
        }
        if self.iam.access_token_ttl_secs == 0 || self.iam.access_token_ttl_secs > 24 * 3600 {
            return invalid("iam.access_token_ttl_secs", "must be 1..=86400");
        }
        if maxai_feature_flags::domain::EnvName::parse(&self.flags.default_environment).is_err() {
            return invalid(
                "flags.default_environment",
                "must be 1-32 characters of a-z, 0-9 or '-'",
            );
        }
        Ok(())
    }

    /// Where the gateway reaches the services.
    pub fn upstream(&self) -> String {
        if !self.gateway.upstream.is_empty() {
            return self.gateway.upstream.clone();
        }
        let mut addr = self.server.grpc_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }
}
