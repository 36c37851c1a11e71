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
    /// Connected provider accounts (OAuth apps of GHL, Google and Microsoft).
    #[serde(default)]
    pub connections: ConnectionsConfig,
}

/// `[iam.connections]`: how clients connect their provider accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// This platform's public `/v1/connections/oauth/callback` URL, registered with every
    /// provider's OAuth app.
    pub redirect_uri: String,
    /// `return_to` values must start with one of these (open redirects are refused).
    pub return_to_allowlist: Vec<String>,
    /// GoHighLevel marketplace app (location tokens).
    pub ghl: OAuthAppConfig,
    /// Google Cloud OAuth client with the Calendar API enabled.
    pub google: OAuthAppConfig,
    /// Microsoft Entra app registration with Calendars.ReadWrite.
    pub microsoft: OAuthAppConfig,
    /// Where API keys are checked before they are stored (n8n: the connection's own URL).
    pub key_checks: KeyCheckConfig,
}

/// `[iam.connections.key_checks]`: the providers' API bases a new key is tried against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyCheckConfig {
    pub twilio: String,
    pub retell: String,
    pub openrouter: String,
}

impl Default for KeyCheckConfig {
    fn default() -> Self {
        KeyCheckConfig {
            twilio: "https://api.twilio.com".into(),
            retell: "https://api.retellai.com".into(),
            openrouter: "https://openrouter.ai/api/v1".into(),
        }
    }
}

/// One provider's OAuth app: empty `client_id` turns that provider's connections off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthAppConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: String,
    pub token_url: String,
    /// Token revocation endpoint; empty when the provider has none.
    #[serde(default)]
    pub revoke_url: String,
    /// Scopes asked for by default.
    pub scopes: Vec<String>,
    /// GHL: `POST /oauth/locationToken`, which turns an agency (Company) token into a
    /// location token; empty for the other providers.
    #[serde(default)]
    pub location_token_url: String,
}

impl OAuthAppConfig {
    fn with_location_token_url(mut self, url: &str) -> Self {
        self.location_token_url = url.into();
        self
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        let app = |authorize: &str, token: &str, revoke: &str, scopes: &[&str]| OAuthAppConfig {
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
            authorize_url: authorize.into(),
            token_url: token.into(),
            revoke_url: revoke.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            location_token_url: String::new(),
        };
        ConnectionsConfig {
            redirect_uri: "http://127.0.0.1:8080/v1/connections/oauth/callback".into(),
            return_to_allowlist: vec![
                "http://127.0.0.1:8080/".into(),
                "http://localhost:8080/".into(),
            ],
            ghl: app(
                "https://marketplace.gohighlevel.com/v2/oauth/chooselocation",
                "https://services.leadconnectorhq.com/oauth/token",
                "",
                &[
                    "contacts.readonly",
                    "contacts.write",
                    "opportunities.readonly",
                    "calendars.readonly",
                    "calendars/events.write",
                ],
            )
            .with_location_token_url("https://services.leadconnectorhq.com/oauth/locationToken"),
            google: app(
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
                "https://oauth2.googleapis.com/revoke",
                &[
                    "openid",
                    "email",
                    "https://www.googleapis.com/auth/calendar",
                ],
            ),
            microsoft: app(
                "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                "",
                &["openid", "email", "offline_access", "Calendars.ReadWrite"],
            ),
            key_checks: KeyCheckConfig::default(),
        }
    }
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
