//! Connected provider accounts of a client (`tenants/{t}/clients/{c}/connections/{id}`).
//!
//! OAuth connections (GHL, Google Calendar, Microsoft calendar) run the authorization-code
//! flow: `start` keeps a single-use state (with a PKCE verifier where the provider takes one)
//! and returns the provider's URL; the callback spends the state, exchanges the code and
//! stores the tokens. API-key connections (Retell, Twilio, OpenRouter, n8n, Stripe, PayPal)
//! store the key given. Every secret is sealed with AES-256-GCM under the master key, with the
//! connection's name as associated data, so a sealed value copied to another row does not open.
//!
//! Adapters ask for the current credential right before a provider call: an access token that
//! expires within `min_remaining` (or one the provider just refused) is refreshed first, and a
//! rotated refresh token is persisted in the same update. Refreshes of one connection are
//! serialized in this process and checked by revision across replicas: a replica that loses
//! the race uses the winner's token rather than spending a rotated refresh token again. A
//! provider that refuses the grant (`invalid_grant`) moves the connection to
//! NEEDS_REAUTHORIZATION with the reason, and the caller gets FAILED_PRECONDITION.
//!
//! A GHL agency install (`config.user_type = "Company"`) holds the agency's Company token and
//! hands adapters a location token for the client's sub-account (`config.location_id`),
//! exchanged with `POST /oauth/locationToken` and kept sealed beside it until it is due.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use maxai_kit::{
    on_db, resource::timestamp, sealed::MasterKey, storage::now_micros, storage::Db, Error,
    ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, ConnectionAuthMethod as Method, ConnectionProvider as Provider,
    ConnectionState as State,
};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ConnectionsConfig, OAuthAppConfig};

/// An OAuth connection must come back within this time.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Provider token calls give up after this.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of an API key shown back as its hint.
const HINT_CHARS: usize = 4;

/// The secret half of a connection; only ever stored sealed, and never printed.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secrets {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub webhook_secret: String,
    /// GHL agency connections: the location token last exchanged, the location it is for and
    /// when it expires.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location_token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location_token_for: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub location_token_expires_at_us: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// GHL's API version for `/oauth/locationToken`.
const GHL_VERSION: &str = "2021-07-28";
/// Scopes an agency token needs to exchange location tokens.
const GHL_AGENCY_SCOPES: [&str; 2] = ["oauth.readonly", "oauth.write"];

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// One stored connection (secrets sealed).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub tenant_id: String,
    pub client_id: String,
    pub id: String,
    pub provider: i32,
    pub auth_method: i32,
    pub state: i32,
    pub display_name: String,
    pub external_account_id: String,
    pub external_account_name: String,
    pub base_url: String,
    pub scopes: String,
    pub config: String,
    pub secret_hint: String,
    pub sealed: String,
    pub access_expires_at_us: Option<i64>,
    pub last_error: String,
    pub creator: String,
    pub request_id: Option<String>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub revoked_at_us: Option<i64>,
    /// A replica refreshing the OAuth token holds this until then.
    pub refresh_lease_until_us: Option<i64>,
}

impl Row {
    pub fn name(&self) -> String {
        format!(
            "tenants/{}/clients/{}/connections/{}",
            self.tenant_id, self.client_id, self.id
        )
    }

    pub fn provider(&self) -> Provider {
        Provider::try_from(self.provider).unwrap_or(Provider::Unspecified)
    }

    pub fn state(&self) -> State {
        State::try_from(self.state).unwrap_or(State::Unspecified)
    }

    /// A string setting of `config`, when set and not empty.
    pub fn setting(&self, key: &str) -> Option<String> {
        let config: serde_json::Value = serde_json::from_str(&self.config).ok()?;
        config
            .get(key)?
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A GHL agency install: the stored token is the agency's, location tokens are derived.
    pub fn is_ghl_agency(&self) -> bool {
        self.provider() == Provider::Ghl && self.setting("user_type").as_deref() == Some("Company")
    }

    /// GHL's `user_type` for this connection's token calls.
    fn ghl_user_type(&self) -> &'static str {
        if self.is_ghl_agency() {
            "Company"
        } else {
            "Location"
        }
    }

    pub fn to_pb(&self) -> pb::Connection {
        let config = serde_json::from_str(&self.config).unwrap_or(serde_json::Value::Null);
        pb::Connection {
            name: self.name(),
            provider: self.provider,
            display_name: self.display_name.clone(),
            auth_method: self.auth_method,
            state: self.state,
            external_account_id: self.external_account_id.clone(),
            external_account_name: self.external_account_name.clone(),
            base_url: self.base_url.clone(),
            scopes: split_scopes(&self.scopes),
            config: crate::audit::json_to_struct(&config),
            secret_hint: self.secret_hint.clone(),
            access_token_expire_time: self.access_expires_at_us.map(timestamp),
            last_error: self.last_error.clone(),
            creator: self.creator.clone(),
            etag: maxai_kit::resource::etag(self.revision),
            create_time: Some(timestamp(self.created_at_us)),
            update_time: Some(timestamp(self.updated_at_us)),
            revoke_time: self.revoked_at_us.map(timestamp),
        }
    }
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The auth method a provider's connections use.
pub fn method_of(provider: Provider) -> Method {
    match provider {
        Provider::Ghl | Provider::GoogleCalendar | Provider::MicrosoftCalendar => Method::Oauth,
        Provider::Retell
        | Provider::Twilio
        | Provider::Openrouter
        | Provider::N8n
        | Provider::Stripe
        | Provider::Paypal => Method::ApiKey,
        Provider::Unspecified => Method::Unspecified,
    }
}

/// Tokens a provider's token endpoint answered (no `Debug`: it holds secrets).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    /// GHL: the location the token is for.
    #[serde(default, rename = "locationId")]
    location_id: Option<String>,
    /// GHL: the agency, for company tokens.
    #[serde(default, rename = "companyId")]
    company_id: Option<String>,
    /// GHL: the locations an agency install covers.
    #[serde(default, rename = "approvedLocations")]
    approved_locations: Vec<String>,
}

/// An OAuth error answer (`{"error":"invalid_grant","error_description":…}`).
#[derive(Debug, Default, Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: serde_json::Value,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    message: serde_json::Value,
}

/// Why a token call failed.
enum TokenFailure {
    /// The provider refused the grant: re-authorization is needed.
    Refused(String),
    /// The provider could not be reached or failed: try later.
    Unavailable(String),
}

/// Connections: storage, OAuth and credentials.
pub struct Connections {
    db: Db,
    master: Arc<MasterKey>,
    config: ConnectionsConfig,
    http: reqwest::Client,
    /// One refresh at a time per connection in this process.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const COLUMNS: &str = "tenant_id, client_id, id, provider, auth_method, state, display_name, external_account_id, external_account_name, base_url, scopes, config, secret_hint, sealed, access_expires_at_us, last_error, creator, request_id, revision, created_at_us, updated_at_us, revoked_at_us, refresh_lease_until_us";
/// How long a replica may take to refresh a token before another one may try.
const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// How long a replica waits for another one's refresh to land.
const REFRESH_WAIT: Duration = Duration::from_secs(5);

impl Connections {
    pub fn new(db: Db, master: Arc<MasterKey>, config: ConnectionsConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .unwrap_or_default();
        Connections {
            db,
            master,
            config,
            http,
            refreshing: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ConnectionsConfig {
        &self.config
    }

    pub fn app(&self, provider: Provider) -> Option<&OAuthAppConfig> {
        let app = match provider {
            Provider::Ghl => &self.config.ghl,
            Provider::GoogleCalendar => &self.config.google,
            Provider::MicrosoftCalendar => &self.config.microsoft,
            _ => return None,
        };
        (!app.client_id.is_empty()).then_some(app)
    }

    pub fn seal(&self, name: &str, secrets: &Secrets) -> Result<String> {
        let plain = serde_json::to_vec(secrets).map_err(Error::internal)?;
        self.master.seal(name, &plain)
    }

    pub fn open(&self, row: &Row) -> Result<Secrets> {
        if row.sealed.is_empty() {
            return Ok(Secrets::default());
        }
        let plain = self.master.open(&row.name(), &row.sealed)?;
        serde_json::from_slice(&plain).map_err(Error::internal)
    }

    // -- storage --------------------------------------------------------------------------

    pub async fn get(&self, tenant: &str, client: &str, id: &str) -> Result<Option<Row>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND client_id = $2 AND id = $3"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as::<_, Row>(&sql)
                .bind(tenant)
                .bind(client)
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn by_request(
        &self,
        tenant: &str,
        client: &str,
        request_id: &str,
    ) -> Result<Option<Row>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND client_id = $2 AND request_id = $3"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as::<_, Row>(&sql)
                .bind(tenant)
                .bind(client)
                .bind(request_id)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Stores a new connection; an id already taken is ALREADY_EXISTS.
    pub async fn insert(&self, row: &Row) -> Result<Row> {
        let now = now_micros();
        let sql = format!(
            "INSERT INTO connections ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 1, $19, $19, NULL, NULL) ON CONFLICT DO NOTHING"
        );
        let inserted = on_db!(&self.db, |pool| {
            sqlx::query(&sql)
                .bind(&row.tenant_id)
                .bind(&row.client_id)
                .bind(&row.id)
                .bind(row.provider)
                .bind(row.auth_method)
                .bind(row.state)
                .bind(&row.display_name)
                .bind(&row.external_account_id)
                .bind(&row.external_account_name)
                .bind(&row.base_url)
                .bind(&row.scopes)
                .bind(&row.config)
                .bind(&row.secret_hint)
                .bind(&row.sealed)
                .bind(row.access_expires_at_us)
                .bind(&row.last_error)
                .bind(&row.creator)
                .bind(&row.request_id)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("connection {} already exists", row.name()),
            ));
        }
        self.get(&row.tenant_id, &row.client_id, &row.id)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("inserted connection vanished")))
    }

    /// Writes every mutable column of `row` if it still has `row.revision`; `None` when another
    /// change won.
    pub async fn save(&self, row: &Row) -> Result<Option<Row>> {
        let updated = on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE connections SET state = $4, display_name = $5, external_account_id = $6, external_account_name = $7, base_url = $8, scopes = $9, config = $10, secret_hint = $11, sealed = $12, access_expires_at_us = $13, last_error = $14, revoked_at_us = $15, refresh_lease_until_us = NULL, revision = revision + 1, updated_at_us = $16 WHERE tenant_id = $1 AND client_id = $2 AND id = $3 AND revision = $17",
            )
            .bind(&row.tenant_id)
            .bind(&row.client_id)
            .bind(&row.id)
            .bind(row.state)
            .bind(&row.display_name)
            .bind(&row.external_account_id)
            .bind(&row.external_account_name)
            .bind(&row.base_url)
            .bind(&row.scopes)
            .bind(&row.config)
            .bind(&row.secret_hint)
            .bind(&row.sealed)
            .bind(row.access_expires_at_us)
            .bind(&row.last_error)
            .bind(row.revoked_at_us)
            .bind(now_micros())
            .bind(row.revision)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if updated == 0 {
            return Ok(None);
        }
        self.get(&row.tenant_id, &row.client_id, &row.id).await
    }

    pub async fn delete(&self, row: &Row) -> Result<bool> {
        let deleted = on_db!(&self.db, |pool| {
            sqlx::query(
                "DELETE FROM connections WHERE tenant_id = $1 AND client_id = $2 AND id = $3 AND revision = $4",
            )
            .bind(&row.tenant_id)
            .bind(&row.client_id)
            .bind(&row.id)
            .bind(row.revision)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(deleted > 0)
    }

    /// A client's connections after `after` (by id), at most `limit`.
    pub async fn list(
        &self,
        tenant: &str,
        client: &str,
        provider: Option<i32>,
        state: Option<i32>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Row>> {
        // REVOKED ones are listed only when asked for by state.
        let sql = format!(
            "SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND client_id = $2 AND id > $3 AND ($4 = 0 OR provider = $4) AND (($5 = 0 AND state <> $6) OR state = $5) ORDER BY id LIMIT $7"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as::<_, Row>(&sql)
                .bind(tenant)
                .bind(client)
                .bind(after.unwrap_or(""))
                .bind(provider.unwrap_or(0))
                .bind(state.unwrap_or(0))
                .bind(State::Revoked as i32)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    // -- OAuth ----------------------------------------------------------------------------

    /// Keeps a single-use state for `row` and returns the provider's authorization URL and
    /// the state's expiry.
    pub async fn authorization_url(
        &self,
        row: &Row,
        extra_scopes: &[String],
        return_to: &str,
    ) -> Result<(String, String, i64)> {
        let provider = row.provider();
        let app = self.app(provider).ok_or_else(|| not_configured(provider))?;
        let state = random_token(32);
        let verifier = random_token(48);
        let expires = now_micros() + STATE_TTL.as_micros() as i64;
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM connection_oauth_states WHERE expires_at_us < $1")
                .bind(now_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO connection_oauth_states (state, tenant_id, client_id, connection_id, code_verifier, return_to, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&state)
            .bind(&row.tenant_id)
            .bind(&row.client_id)
            .bind(&row.id)
            .bind(&verifier)
            .bind(return_to)
            .bind(expires)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        let mut url = url::Url::parse(&app.authorize_url).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                "the provider's authorize_url is not a URL",
            )
            .with_source(e)
        })?;
        let mut scopes = app.scopes.clone();
        if row.is_ghl_agency() {
            scopes.extend(GHL_AGENCY_SCOPES.map(String::from));
        }
        scopes.extend(extra_scopes.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        scopes.retain(|s| seen.insert(s.clone()));
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &app.client_id)
                .append_pair("redirect_uri", &self.config.redirect_uri)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", &state);
            match provider {
                Provider::GoogleCalendar => {
                    // Offline access and consent, or Google gives no refresh token to a
                    // returning user.
                    q.append_pair("access_type", "offline")
                        .append_pair("prompt", "consent")
                        .append_pair("include_granted_scopes", "true");
                    pkce(&mut q, &verifier);
                }
                Provider::MicrosoftCalendar => pkce(&mut q, &verifier),
                _ => {}
            }
        }
        Ok((url.into(), state, expires))
    }

    /// Spends `state`: the connection it was issued for, the PKCE verifier and return_to.
    pub async fn spend_state(
        &self,
        state: &str,
    ) -> Result<Option<(String, String, String, String, String)>> {
        let row: Option<(String, String, String, String, String, i64)> = on_db!(
            &self.db,
            |pool| {
                sqlx::query_as(
                "DELETE FROM connection_oauth_states WHERE state = $1 RETURNING tenant_id, client_id, connection_id, code_verifier, return_to, expires_at_us",
            )
            .bind(state)
            .fetch_optional(pool)
            .await
            }
        )?;
        Ok(row
            .filter(|r| r.5 > now_micros())
            .map(|(t, c, id, verifier, return_to, _)| (t, c, id, verifier, return_to)))
    }

    /// Exchanges an authorization code and stores the tokens on `row`, activating it.
    pub async fn complete(&self, row: Row, code: &str, verifier: &str) -> Result<Row> {
        let provider = row.provider();
        let app = self.app(provider).ok_or_else(|| not_configured(provider))?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &app.client_id),
            ("client_secret", app.client_secret.expose_secret()),
            ("redirect_uri", &self.config.redirect_uri),
        ];
        match provider {
            Provider::GoogleCalendar | Provider::MicrosoftCalendar => {
                form.push(("code_verifier", verifier))
            }
            Provider::Ghl => form.push(("user_type", row.ghl_user_type())),
            _ => {}
        }
        let answer = match self.token_call(&app.token_url, None, &form).await {
            Ok(a) => a,
            Err(TokenFailure::Refused(why)) => {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("the provider refused the authorization: {why}"),
                ))
            }
            Err(TokenFailure::Unavailable(why)) => {
                return Err(Error::new(ErrorKind::Unavailable, why))
            }
        };
        let mut next = row.clone();
        let secrets = Secrets {
            access_token: answer.access_token.clone(),
            refresh_token: answer.refresh_token.clone().unwrap_or_default(),
            ..Secrets::default()
        };
        next.sealed = self.seal(&row.name(), &secrets)?;
        next.access_expires_at_us = answer
            .expires_in
            .map(|s| now_micros() + s.saturating_mul(1_000_000));
        if let Some(scope) = &answer.scope {
            next.scopes = scope.replace(',', " ");
        }
        let account = if row.is_ghl_agency() {
            answer.company_id.clone()
        } else {
            answer.location_id.clone().or(answer.company_id.clone())
        };
        if let Some(account) = account {
            next.external_account_id = account;
        }
        // An agency install of one sub-account names the client's location by itself.
        if let ([only], None) = (
            answer.approved_locations.as_slice(),
            row.setting("location_id"),
        ) {
            if row.is_ghl_agency() {
                next.config = with_setting(&row.config, "location_id", only);
            }
        }
        next.state = State::Active as i32;
        next.last_error.clear();
        next.revoked_at_us = None;
        self.save(&next).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                "the connection changed meanwhile; start again",
            )
        })
    }

    /// A form POST to a provider's token endpoint (with `bearer`: GHL's location tokens).
    async fn token_call(
        &self,
        url: &str,
        bearer: Option<&str>,
        form: &[(&str, &str)],
    ) -> std::result::Result<TokenAnswer, TokenFailure> {
        let mut request = self
            .http
            .post(url)
            .header("accept", "application/json")
            .form(form);
        if let Some(token) = bearer {
            request = request.bearer_auth(token).header("Version", GHL_VERSION);
        }
        let response = request.send().await.map_err(|_| {
            TokenFailure::Unavailable("the provider's token endpoint cannot be reached".into())
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|_| {
            TokenFailure::Unavailable("the provider's token answer was cut off".into())
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|_| {
                TokenFailure::Unavailable("the provider's token answer is not understood".into())
            });
        }
        let err: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        let mut why = text(&err.error);
        for extra in [err.error_description.clone(), text(&err.message)] {
            if !extra.is_empty() {
                why = if why.is_empty() {
                    extra
                } else {
                    format!("{why}: {extra}")
                };
            }
        }
        if why.is_empty() {
            why = format!("HTTP {status}");
        }
        if status >= 500 || status == 429 {
            Err(TokenFailure::Unavailable(format!(
                "the provider failed: {why}"
            )))
        } else {
            Err(TokenFailure::Refused(why))
        }
    }

    /// The usable credential of `row`, refreshing its OAuth token first when it expires within
    /// `min_remaining` or `force` is set.
    pub async fn credential(
        &self,
        row: Row,
        min_remaining: Duration,
        force: bool,
    ) -> Result<pb::ConnectionCredential> {
        match row.state() {
            State::Active => {}
            State::NeedsReauthorization => {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!(
                        "connection {} needs re-authorization: {}",
                        row.name(),
                        row.last_error
                    ),
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("connection {} is not active", row.name()),
                ))
            }
        }
        let due = |r: &Row| {
            r.access_expires_at_us
                .is_some_and(|at| at <= now_micros() + min_remaining.as_micros() as i64)
        };
        let row = if row.auth_method == Method::Oauth as i32 && (force || due(&row)) {
            self.refresh(row, force, due).await?
        } else {
            row
        };
        let (row, secrets) = if row.is_ghl_agency() {
            self.location_token(row, min_remaining, force).await?
        } else {
            let secrets = self.open(&row)?;
            (row, secrets)
        };
        let config = serde_json::from_str(&row.config).unwrap_or(serde_json::Value::Null);
        let (access_token, expires, account) = if row.is_ghl_agency() {
            (
                secrets.location_token,
                Some(secrets.location_token_expires_at_us),
                secrets.location_token_for,
            )
        } else {
            (
                secrets.access_token,
                row.access_expires_at_us,
                row.external_account_id.clone(),
            )
        };
        Ok(pb::ConnectionCredential {
            connection: row.name(),
            provider: row.provider,
            auth_method: row.auth_method,
            access_token,
            access_token_expire_time: expires.map(timestamp),
            api_key: secrets.api_key,
            key_id: secrets.key_id,
            webhook_secret: secrets.webhook_secret,
            external_account_id: account,
            base_url: row.base_url.clone(),
            scopes: split_scopes(&row.scopes),
            config: crate::audit::json_to_struct(&config),
        })
    }

    async fn refresh(&self, row: Row, force: bool, due: impl Fn(&Row) -> bool) -> Result<Row> {
        let name = row.name();
        self.one_at_a_time(&name, self.refresh_leased(row, force, due))
            .await
    }

    /// Runs `work` while no other token work on connection `name` runs in this process.
    async fn one_at_a_time<T>(&self, name: &str, work: impl std::future::Future<Output = T>) -> T {
        let lock = {
            let mut map = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name.to_owned()).or_default().clone()
        };
        let result = {
            let _held = lock.lock().await;
            work.await
        };
        let mut map = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this call are the only holders: nobody waits behind it.
        if map.get(name).is_some_and(|l| Arc::strong_count(l) <= 2) {
            map.remove(name);
        }
        result
    }

    /// A GHL agency connection's location token for `config.location_id`, exchanged for the
    /// agency token when the kept one is for another location, due within `min_remaining`,
    /// or `force`d (the provider refused it). Location tokens can be minted again at any time,
    /// so replicas need no lease here; one process mints once.
    async fn location_token(
        &self,
        row: Row,
        min_remaining: Duration,
        force: bool,
    ) -> Result<(Row, Secrets)> {
        let name = row.name();
        let Some(location) = row.setting("location_id") else {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "connection {name} is a GHL agency install: set config.location_id to the client's sub-account"
                ),
            ));
        };
        let usable = |s: &Secrets| {
            s.location_token_for == location
                && !s.location_token.is_empty()
                && s.location_token_expires_at_us > now_micros() + min_remaining.as_micros() as i64
        };
        let secrets = self.open(&row)?;
        if !force && usable(&secrets) {
            return Ok((row, secrets));
        }
        let seen = row.revision;
        self.one_at_a_time(&name, async {
            // Another task may have minted while this one waited.
            let row = self
                .get(&row.tenant_id, &row.client_id, &row.id)
                .await?
                .ok_or_else(|| Error::not_found(&name))?;
            let secrets = self.open(&row)?;
            if usable(&secrets) && (!force || row.revision != seen) {
                return Ok((row, secrets));
            }
            let app = self
                .app(Provider::Ghl)
                .filter(|a| !a.location_token_url.is_empty())
                .ok_or_else(|| not_configured(Provider::Ghl))?;
            let form = [
                ("companyId", row.external_account_id.as_str()),
                ("locationId", location.as_str()),
            ];
            let answer = match self
                .token_call(&app.location_token_url, Some(&secrets.access_token), &form)
                .await
            {
                Ok(answer) => answer,
                Err(TokenFailure::Refused(why)) => {
                    return Err(Error::new(
                        ErrorKind::PreconditionFailed,
                        format!(
                            "GHL refused a location token for {location} to connection {name}: {why}"
                        ),
                    ))
                }
                Err(TokenFailure::Unavailable(why)) => {
                    return Err(Error::new(ErrorKind::Unavailable, why))
                }
            };
            let minted = Secrets {
                location_token: answer.access_token,
                location_token_for: location.clone(),
                location_token_expires_at_us: now_micros()
                    + answer.expires_in.unwrap_or(0).saturating_mul(1_000_000),
                ..secrets
            };
            let mut next = row.clone();
            next.sealed = self.seal(&name, &minted)?;
            tracing::info!(connection = %name, location = %location, "GHL location token exchanged");
            // A concurrent change (a refresh elsewhere) wins the row; this token still works.
            let row = self.save(&next).await?.unwrap_or(row);
            Ok((row, minted))
        })
        .await
    }

    /// Takes the connection's refresh lease (one replica at a time spends a refresh token),
    /// or waits for the replica that holds it.
    async fn refresh_leased(
        &self,
        row: Row,
        force: bool,
        due: impl Fn(&Row) -> bool,
    ) -> Result<Row> {
        let name = row.name();
        // Whoever held the lock (here or on another replica) may have refreshed already.
        let current = self
            .get(&row.tenant_id, &row.client_id, &row.id)
            .await?
            .ok_or_else(|| Error::not_found(&name))?;
        if current.revision != row.revision && !due(&current) {
            return Ok(current);
        }
        if !force && !due(&current) {
            return Ok(current);
        }
        if !self.take_refresh_lease(&current).await? {
            return self.await_refresh(&current).await;
        }
        let provider = current.provider();
        let app = self.app(provider).ok_or_else(|| not_configured(provider))?;
        let secrets = self.open(&current)?;
        if secrets.refresh_token.is_empty() {
            return self
                .needs_reauthorization(current, "the provider gave no refresh token")
                .await;
        }
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", &secrets.refresh_token),
            ("client_id", &app.client_id),
            ("client_secret", app.client_secret.expose_secret()),
        ];
        if provider == Provider::Ghl {
            form.push(("user_type", current.ghl_user_type()));
        }
        match self.token_call(&app.token_url, None, &form).await {
            Ok(answer) => {
                let mut next = current.clone();
                let rotated = Secrets {
                    access_token: answer.access_token,
                    // Providers that rotate send the next one; the others keep the old.
                    refresh_token: answer
                        .refresh_token
                        .unwrap_or(secrets.refresh_token.clone()),
                    ..secrets
                };
                next.sealed = self.seal(&name, &rotated)?;
                next.access_expires_at_us = answer
                    .expires_in
                    .map(|s| now_micros() + s.saturating_mul(1_000_000));
                tracing::info!(connection = %name, "connection token refreshed");
                match self.save(&next).await? {
                    Some(saved) => Ok(saved),
                    // Another replica refreshed at the same time: its row is current.
                    None => self
                        .get(&row.tenant_id, &row.client_id, &row.id)
                        .await?
                        .ok_or_else(|| Error::not_found(&name)),
                }
            }
            Err(TokenFailure::Refused(why)) => {
                // A replica that refreshed first spent this refresh token; use its result.
                let latest = self
                    .get(&row.tenant_id, &row.client_id, &row.id)
                    .await?
                    .ok_or_else(|| Error::not_found(&name))?;
                if latest.revision != current.revision && latest.state() == State::Active {
                    return Ok(latest);
                }
                self.needs_reauthorization(current, &why).await
            }
            Err(TokenFailure::Unavailable(why)) => Err(Error::new(ErrorKind::Unavailable, why)),
        }
    }

    async fn take_refresh_lease(&self, row: &Row) -> Result<bool> {
        let now = now_micros();
        let taken = on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE connections SET refresh_lease_until_us = $4 WHERE tenant_id = $1 AND client_id = $2 AND id = $3 AND revision = $5 AND (refresh_lease_until_us IS NULL OR refresh_lease_until_us < $6)",
            )
            .bind(&row.tenant_id)
            .bind(&row.client_id)
            .bind(&row.id)
            .bind(now + REFRESH_LEASE.as_micros() as i64)
            .bind(row.revision)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(taken == 1)
    }

    /// Another replica is refreshing `row`: its result is the connection's next revision.
    async fn await_refresh(&self, row: &Row) -> Result<Row> {
        let deadline = tokio::time::Instant::now() + REFRESH_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let latest = self
                .get(&row.tenant_id, &row.client_id, &row.id)
                .await?
                .ok_or_else(|| Error::not_found(row.name()))?;
            if latest.revision != row.revision {
                return match latest.state() {
                    State::Active => Ok(latest),
                    _ => Err(Error::new(
                        ErrorKind::PreconditionFailed,
                        format!(
                            "connection {} needs re-authorization: {}",
                            latest.name(),
                            latest.last_error
                        ),
                    )),
                };
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "another replica is refreshing this connection's token; try again",
        )
        .with_retry_after(Duration::from_secs(1)))
    }

    async fn needs_reauthorization(&self, row: Row, why: &str) -> Result<Row> {
        let name = row.name();
        let mut next = row;
        next.state = State::NeedsReauthorization as i32;
        next.last_error = why.to_owned();
        tracing::warn!(connection = %name, reason = why, "connection needs re-authorization");
        let _ = self.save(&next).await?;
        Err(Error::new(
            ErrorKind::PreconditionFailed,
            format!("connection {name} needs re-authorization: {why}"),
        ))
    }

    /// Tries a new API key against its provider with the cheapest authenticated read, so a
    /// mistyped key is refused now rather than at the first flow. Providers without such a
    /// check here (Stripe, PayPal) are stored as given.
    pub async fn check_key(
        &self,
        provider: Provider,
        base_url: &str,
        credential: &pb::ApiKeyCredential,
    ) -> Result<()> {
        let checks = &self.config.key_checks;
        let request = match provider {
            Provider::Twilio => {
                // A made-up message id: 404 with a good key, 401 with a bad one.
                let user = if credential.key_id.is_empty() {
                    &credential.account_id
                } else {
                    &credential.key_id
                };
                self.http
                    .get(format!(
                        "{}/2010-04-01/Accounts/{}/Messages/SM00000000000000000000000000000000.json",
                        checks.twilio.trim_end_matches('/'),
                        credential.account_id
                    ))
                    .basic_auth(user, Some(&credential.api_key))
            }
            Provider::Retell => self
                .http
                .get(format!(
                    "{}/v2/list-agents?limit=1",
                    checks.retell.trim_end_matches('/')
                ))
                .bearer_auth(&credential.api_key),
            Provider::Openrouter => self
                .http
                .get(format!("{}/key", checks.openrouter.trim_end_matches('/')))
                .bearer_auth(&credential.api_key),
            Provider::N8n => self
                .http
                .get(format!(
                    "{}/api/v1/workflows?limit=1",
                    base_url.trim_end_matches('/')
                ))
                .header("X-N8N-API-KEY", &credential.api_key),
            _ => return Ok(()),
        };
        let status = request
            .send()
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    "the provider cannot be reached to check the key; try again, or set skip_validation",
                )
            })?
            .status()
            .as_u16();
        match status {
            200..=299 | 404 => Ok(()),
            401 | 403 => Err(Error::invalid(
                "credential.api_key",
                "the provider refused this key",
            )),
            _ => Err(Error::new(
                ErrorKind::Unavailable,
                format!("the provider answered {status} while checking the key; try again"),
            )),
        }
    }

    /// Revokes the grant at the provider where it has an endpoint for it (best effort: the
    /// secrets are destroyed here whatever it answers).
    pub async fn revoke_at_provider(&self, row: &Row) {
        let Some(app) = self.app(row.provider()) else {
            return;
        };
        if app.revoke_url.is_empty() {
            return;
        }
        let Ok(secrets) = self.open(row) else {
            return;
        };
        let token = if secrets.refresh_token.is_empty() {
            secrets.access_token
        } else {
            secrets.refresh_token
        };
        if token.is_empty() {
            return;
        }
        let result = self
            .http
            .post(&app.revoke_url)
            .form(&[("token", token.as_str())])
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(connection = %row.name(), error = %e.without_url(), "provider revocation failed");
        }
    }
}

fn pkce(q: &mut url::form_urlencoded::Serializer<'_, url::UrlQuery<'_>>, verifier: &str) {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    q.append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
}

/// `config` (a JSON object) with `key` set to `value`.
pub fn with_setting(config: &str, key: &str, value: &str) -> String {
    let mut object = match serde_json::from_str(config) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    object.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
    serde_json::Value::Object(object).to_string()
}

fn not_configured(provider: Provider) -> Error {
    Error::new(
        ErrorKind::PreconditionFailed,
        format!(
            "{} connections are not configured on this platform (iam.connections)",
            provider.as_str_name()
        ),
    )
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The last characters of a key, to recognise it: "...9f2c".
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= HINT_CHARS * 2 {
        return "...".into();
    }
    format!(
        "...{}",
        chars[chars.len() - HINT_CHARS..].iter().collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_only_the_end_of_long_keys() {
        assert_eq!(hint("sk_live_0123456789abcdef"), "...cdef");
        assert_eq!(hint("short"), "...");
    }

    #[test]
    fn providers_have_one_auth_method() {
        assert_eq!(method_of(Provider::Ghl), Method::Oauth);
        assert_eq!(method_of(Provider::Twilio), Method::ApiKey);
        assert_eq!(method_of(Provider::Unspecified), Method::Unspecified);
    }
}
