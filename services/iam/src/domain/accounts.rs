//! Service accounts and their API keys. A key's secret is shown once at creation; only its
//! SHA-256 is stored, which is enough for high-entropy random secrets (no slow hash needed).
use sha2::{Digest, Sha256};

/// `tenants/{tenant_id}/serviceAccounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub tenant_id: String,
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

impl ServiceAccount {
    pub fn name(&self) -> String {
        format!("tenants/{}/serviceAccounts/{}", self.tenant_id, self.id)
    }
}

/// `tenants/{tenant_id}/serviceAccounts/{account_id}/apiKeys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub tenant_id: String,
    pub account_id: String,
    pub id: String,
    pub display_name: String,
    /// The first characters of the secret, to recognise it in lists.
    pub secret_prefix: String,
    pub secret_hash: String,
    pub expire_at_us: Option<i64>,
    pub last_use_at_us: Option<i64>,
    pub created_at_us: i64,
}

impl ApiKey {
    pub fn name(&self) -> String {
        format!(
            "tenants/{}/serviceAccounts/{}/apiKeys/{}",
            self.tenant_id, self.account_id, self.id
        )
    }
}

/// Lower-case hex SHA-256 of a secret.
pub fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new secret (`mxk_` + 256 random bits, base64url) and its visible prefix.
pub fn new_secret() -> (String, String) {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("mxk_{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix = secret.chars().take(12).collect();
    (secret, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, pa) = new_secret();
        let (b, _) = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(&pa) && a.len() > 40);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), secret_hash(&b));
        assert!(!secret_hash(&a).contains(&a[4..]));
    }
}
