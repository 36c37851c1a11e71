use secrecy::SecretString;
use serde::Deserialize;

/// `[iam]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// Base64 of 32 random bytes: the AES-256-GCM key that encrypts signing keys at rest.
    /// Empty: a key file `iam-master.key` in the SQLite data folder is made and used (the
    /// embedded default); with PostgreSQL it must be set.
    pub master_key: SecretString,
    /// `iss` of the access tokens this platform issues.
    pub issuer: String,
    /// Lifetime of access tokens, in seconds.
    pub access_token_ttl_secs: u64,
    /// Make sure the platform operator exists on start: tenant `platform`, user `admin`, and
    /// `roles/platform-admin` on the whole platform (`maxai token` then mints its token).
    pub bootstrap_admin: bool,
}
