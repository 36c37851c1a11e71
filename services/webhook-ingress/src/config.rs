//! `[webhook]` settings: who receives the events, the providers' own verification keys (those
//! not kept per endpoint), delivery and retention.
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::signature::{
    ghl::{Ed25519PublicKey, RsaPublicKey},
    paypal::PaypalCert,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Every stored event is delivered to each consumer: name → gRPC address of its
    /// `EventConsumerService` ("" means this process's own gRPC listener).
    pub consumers: BTreeMap<String, String>,
    pub ghl: GhlConfig,
    pub paypal: PaypalConfig,
    pub dispatch: DispatchConfig,
    pub retention: RetentionConfig,
}

/// GoHighLevel signs with its own keys, the same for every account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GhlConfig {
    /// Ed25519 public keys for `x-ghl-signature` (PEM, or base64 of the 32 raw bytes).
    pub public_keys: Vec<String>,
    /// RSA public keys (PEM) for the legacy `x-wh-signature`.
    pub legacy_public_keys: Vec<String>,
}

/// PayPal signs with certificates; they are configured here, never fetched from the request's
/// `PAYPAL-CERT-URL`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaypalConfig {
    /// X.509 certificates (PEM).
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    pub enabled: bool,
    /// Outbox rows leased per claim.
    pub batch: i64,
    /// How long a claimed row is this replica's; longer than `timeout_ms`.
    pub lease_secs: u64,
    /// Deadline of one delivery call.
    pub timeout_ms: u64,
    /// Attempts before a row becomes a dead letter.
    pub max_attempts: i64,
    /// First retry delay; doubles per attempt, with full jitter, up to `backoff_max_secs`.
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// Sleep between claims when nothing is due (a new event wakes the dispatcher sooner).
    pub idle_poll_ms: u64,
}

/// Defaults for tenants without their own retention settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub events_days: u32,
    pub dead_letters_days: u32,
    pub quarantine_days: u32,
    /// How often the purge runs.
    pub purge_every_secs: u64,
}

/// The verification keys parsed once at start, so a bad key stops the process.
pub struct ProviderKeys {
    pub ghl_ed25519: Vec<Ed25519PublicKey>,
    pub ghl_rsa: Vec<RsaPublicKey>,
    pub paypal: Vec<PaypalCert>,
}

impl ProviderKeys {
    pub fn load(config: &WebhookConfig) -> anyhow::Result<Self> {
        let ghl_ed25519 = config
            .ghl
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Ed25519PublicKey::parse(k)
                    .map_err(|e| anyhow::anyhow!("webhook.ghl.public_keys[{i}]: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let ghl_rsa = config
            .ghl
            .legacy_public_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                RsaPublicKey::parse(k)
                    .map_err(|e| anyhow::anyhow!("webhook.ghl.legacy_public_keys[{i}]: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let paypal = config
            .paypal
            .certificates
            .iter()
            .enumerate()
            .map(|(i, k)| {
                PaypalCert::from_pem(k)
                    .map_err(|e| anyhow::anyhow!("webhook.paypal.certificates[{i}]: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ProviderKeys {
            ghl_ed25519,
            ghl_rsa,
            paypal,
        })
    }
}
