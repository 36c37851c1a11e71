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
    /// Lifetime of a refresh-token family (a sign-in), in seconds; refreshing does not extend it.
    pub refresh_token_ttl_secs: u64,
    pub google: GoogleConfig,
}

/// `[iam.google]`: server-side Google sign-in (OpenID Connect authorization code + PKCE).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// OAuth client id; empty turns Google sign-in off.
    pub client_id: String,
    pub client_secret: SecretString,
    /// OpenID discovery document (tests point it at the fake provider).
    pub discovery_url: String,
    /// Where Google sends the browser back: this platform's public
    /// `/v1/auth/google/callback` URL, as registered with the OAuth client.
    pub redirect_uri: String,
    /// `return_to` values must start with one of these (open redirects are refused).
    pub return_to_allowlist: Vec<String>,
    /// Where a domain's ownership proof is read: `{domain}` is replaced; the body must hold
    /// the binding's verification record.
    pub domain_verification_url: String,
}
