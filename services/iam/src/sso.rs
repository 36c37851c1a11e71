//! Google sign-in, server side: OpenID Connect authorization code flow with `state`, `nonce`
//! and PKCE (S256) kept in storage and spent once; the ID token is verified against the
//! provider's JWKS (RS256 signature, `iss`, `aud`, `exp`, `nonce`, `email_verified`). A
//! Google Workspace hosted domain (`hd`) bound and verified for a tenant provisions its users
//! into that tenant on first sign-in with the binding's default role.
//!
//! Everything provider-specific comes from the discovery document, so tests run the real flow
//! against the fake provider in `clients/fakes` by pointing `discovery_url` at it.
use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maxai_kit::{on_db, resource::timestamp, storage::now_micros, storage::Db, Error, ErrorKind};
use maxai_proto::maxai::iam::v1 as pb;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    config::GoogleConfig,
    domain::{Assignment, User, UserState},
    store::{AccessStore, UserStore},
};

/// A sign-in must come back within this time.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Discovery and JWKS are reused this long (an unknown `kid` refetches sooner).
const PROVIDER_CACHE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<RsaJwk>,
}

#[derive(Deserialize)]
struct RsaJwk {
    kid: String,
    kty: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    nonce: Option<String>,
    hd: Option<String>,
    /// The client the token was issued to, when it differs from the audience's only member.
    azp: Option<String>,
    name: Option<String>,
    picture: Option<String>,
}

/// A completed sign-in.
#[derive(Debug)]
pub struct SignedIn {
    pub tenant_id: String,
    pub principal: String,
    pub return_to: String,
    pub created: bool,
}

/// A refused sign-in: what the caller is told, and what the audit trail is told.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub reason: String,
}

fn fail(reason: impl Into<String>) -> Failure {
    // The caller learns only that sign-in failed; the reason goes to the audit trail.
    Failure {
        error: Error::new(ErrorKind::Unauthenticated, "sign-in failed"),
        reason: reason.into(),
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Error::from(e).into()
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let reason = error.message.clone();
        Failure { error, reason }
    }
}

struct Provider {
    discovery: Discovery,
    keys: Vec<(String, DecodingKey)>,
    fetched: Instant,
}

pub struct GoogleSignIn {
    config: GoogleConfig,
    db: Db,
    http: reqwest::Client,
    users: Arc<dyn UserStore>,
    access: Arc<dyn AccessStore>,
    provider: RwLock<Option<Arc<Provider>>>,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

type StateRow = (String, String, String, String, i64);

impl GoogleSignIn {
    pub fn new(
        config: GoogleConfig,
        db: Db,
        users: Arc<dyn UserStore>,
        access: Arc<dyn AccessStore>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        GoogleSignIn {
            config,
            db,
            http,
            users,
            access,
            provider: RwLock::new(None),
        }
    }

    fn enabled(&self) -> maxai_kit::Result<()> {
        if self.config.client_id.is_empty() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "Google sign-in is not configured on this platform (iam.google.client_id)",
            ));
        }
        Ok(())
    }

    async fn provider(&self, refresh: bool) -> maxai_kit::Result<Arc<Provider>> {
        if let Some(p) = self
            .provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            if !refresh && p.fetched.elapsed() < PROVIDER_CACHE {
                return Ok(p);
            }
        }
        let unavailable = |what: &str, e: reqwest::Error| {
            Error::new(
                ErrorKind::Unavailable,
                format!("the identity provider's {what} could not be read"),
            )
            .with_source(e)
        };
        let discovery: Discovery = self
            .http
            .get(&self.config.discovery_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("discovery document", e))?
            .json()
            .await
            .map_err(|e| unavailable("discovery document", e))?;
        let set: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("JWKS", e))?
            .json()
            .await
            .map_err(|e| unavailable("JWKS", e))?;
        let keys = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| {
                DecodingKey::from_rsa_components(&k.n, &k.e)
                    .ok()
                    .map(|d| (k.kid, d))
            })
            .collect();
        let p = Arc::new(Provider {
            discovery,
            keys,
            fetched: Instant::now(),
        });
        *self.provider.write().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
        Ok(p)
    }

    /// Makes the authorization URL and keeps state, nonce and PKCE verifier for the callback.
    pub async fn start(
        &self,
        req: pb::StartGoogleSignInRequest,
    ) -> maxai_kit::Result<pb::StartGoogleSignInResponse> {
        self.enabled()?;
        let pb::StartGoogleSignInRequest {
            return_to,
            login_hint,
            hd,
            tenant,
        } = req;
        if !return_to.is_empty()
            && !self
                .config
                .return_to_allowlist
                .iter()
                .any(|p| return_to.starts_with(p.as_str()))
        {
            return Err(Error::invalid(
                "return_to",
                "is not on this platform's allowlist",
            ));
        }
        if !tenant.is_empty() && maxai_kit::auth::tenant_of(&tenant).is_none() {
            return Err(Error::invalid("tenant", "must be tenants/{tenant}"));
        }
        let provider = self.provider(false).await?;
        let state = random_token(32);
        let nonce = random_token(32);
        let verifier = random_token(48);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let expires = now_micros() + STATE_TTL.as_micros() as i64;
        // Abandoned sign-ins do not pile up: each start sweeps the expired ones.
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM sign_in_states WHERE expires_at_us < $1")
                .bind(now_micros())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO sign_in_states (state, nonce, code_verifier, return_to, tenant, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&state)
            .bind(&nonce)
            .bind(&verifier)
            .bind(&return_to)
            .bind(&tenant)
            .bind(expires)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        let mut url = url::Url::parse(&provider.discovery.authorization_endpoint).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                "the identity provider's authorization endpoint is not a URL",
            )
            .with_source(e)
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.config.redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", "openid email profile")
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if !login_hint.is_empty() {
                q.append_pair("login_hint", &login_hint);
            }
            if !hd.is_empty() {
                q.append_pair("hd", &hd);
            }
        }
        Ok(pb::StartGoogleSignInResponse {
            authorization_url: url.into(),
            state,
            expire_time: Some(timestamp(expires)),
        })
    }

    /// Spends the state, exchanges the code, verifies the ID token and finds or provisions
    /// the user.
    pub async fn complete(
        &self,
        req: pb::CompleteGoogleSignInRequest,
    ) -> Result<SignedIn, Failure> {
        self.enabled()?;
        if !req.error.is_empty() {
            return Err(fail(format!("the provider answered {}", req.error)));
        }
        if req.state.is_empty() || req.code.is_empty() {
            return Err(fail("code or state missing"));
        }
        // Spent before anything else, so a state works once whatever happens next.
        let row: Option<StateRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "DELETE FROM sign_in_states WHERE state = $1 RETURNING nonce, code_verifier, return_to, tenant, expires_at_us",
            )
            .bind(&req.state)
            .fetch_optional(pool)
            .await
        })?;
        let Some((nonce, verifier, return_to, tenant, expires)) = row else {
            return Err(fail("unknown or already used state"));
        };
        if expires <= now_micros() {
            return Err(fail("the sign-in took too long (state expired)"));
        }
        let provider = self.provider(false).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", req.code.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let resp = self
            .http
            .post(&provider.discovery.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|_| fail("the token endpoint could not be reached"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| fail("the token endpoint answered something other than JSON"))?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown");
            return Err(fail(format!("the code exchange was refused: {error}")));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| fail("no id_token in the token response"))?;
        let claims = self.verify_id_token(id_token, &nonce).await?;
        let email = claims
            .email
            .clone()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| fail("the ID token carries no email"))?
            .to_lowercase();
        let verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        if !verified {
            return Err(fail(format!("{email} is not verified by the provider")));
        }
        let wanted = maxai_kit::auth::tenant_of(&tenant).map(str::to_owned);
        let (user, created) = self.find_or_provision(&claims, &email, wanted).await?;
        Ok(SignedIn {
            principal: user.name(),
            tenant_id: user.tenant_id,
            return_to,
            created,
        })
    }

    async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<IdClaims, Failure> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| fail("the ID token is malformed"))?;
        if header.alg != Algorithm::RS256 {
            return Err(fail("the ID token is not RS256"));
        }
        let kid = header.kid.ok_or_else(|| fail("the ID token has no kid"))?;
        let mut provider = self.provider(false).await?;
        if !provider.keys.iter().any(|(k, _)| *k == kid) {
            // The provider rotates its keys: one refetch before refusing.
            provider = self.provider(true).await?;
        }
        let key = provider
            .keys
            .iter()
            .find(|(k, _)| *k == kid)
            .map(|(_, d)| d)
            .ok_or_else(|| fail("the ID token's kid is not in the provider's JWKS"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        // Google issues both spellings (PROVIDERS.md §8.2).
        let issuer = provider.discovery.issuer.clone();
        let bare = issuer.trim_start_matches("https://").to_owned();
        validation.set_issuer(&[issuer.as_str(), bare.as_str()]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.leeway = 60;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(token, key, &validation)
            .map_err(|e| fail(format!("the ID token does not verify: {e}")))?
            .claims;
        let same = claims.nonce.as_deref().is_some_and(|n| {
            use subtle::ConstantTimeEq;
            bool::from(n.as_bytes().ct_eq(nonce.as_bytes()))
        });
        if !same {
            return Err(fail("the ID token's nonce does not match the sign-in"));
        }
        // OpenID Connect Core §3.1.3.7: when azp is present it must be this client.
        if claims
            .azp
            .as_deref()
            .is_some_and(|azp| azp != self.config.client_id)
        {
            return Err(fail("the ID token was issued to another client (azp)"));
        }
        Ok(claims)
    }

    /// The user this Google account signs in as: an existing user with the email (in the
    /// wanted tenant, or the domain's tenant, or the only one), else a new user in the tenant
    /// the account's verified hosted domain is bound to.
    async fn find_or_provision(
        &self,
        claims: &IdClaims,
        email: &str,
        wanted: Option<String>,
    ) -> Result<(User, bool), Failure> {
        let hd = claims.hd.clone().unwrap_or_default().to_lowercase();
        let binding = if hd.is_empty() {
            None
        } else {
            domain_binding(&self.db, &hd).await?
        };
        let rows: Vec<(String, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as("SELECT tenant_id, id FROM users WHERE email = $1 ORDER BY tenant_id")
                .bind(email)
                .fetch_all(pool)
                .await
        })?;
        // Only a verified binding routes the account: an unverified claim on a domain must not
        // take its invited users away from the tenant that invited them.
        let preferred = wanted.clone().or_else(|| {
            binding
                .as_ref()
                .filter(|b| b.verified_at_us.is_some())
                .map(|b| b.tenant_id.clone())
        });
        let existing = match &preferred {
            Some(t) => rows.iter().find(|(tid, _)| tid == t),
            None if rows.len() == 1 => rows.first(),
            None if rows.is_empty() => None,
            None => {
                return Err(fail(format!(
                    "{email} belongs to several tenants; the sign-in must name one"
                )))
            }
        };
        if let Some((tid, id)) = existing {
            let mut user = self
                .users
                .get_user(tid, id)
                .await?
                .ok_or_else(|| fail("the user went away during sign-in"))?;
            if user.state == UserState::Suspended {
                return Err(fail(format!("{} is suspended", user.name())));
            }
            if !user.google_subject.is_empty() && user.google_subject != claims.sub {
                return Err(fail(format!(
                    "{} is bound to another Google account",
                    user.name()
                )));
            }
            let revision = user.revision;
            user.google_subject = claims.sub.clone();
            user.hosted_domain = hd.clone();
            user.state = UserState::Active;
            user.last_sign_in_at_us = Some(now_micros());
            if let Some(p) = &claims.picture {
                user.picture_uri = p.clone();
            }
            let user = self.users.update_user(&user, revision).await?;
            return Ok((user, false));
        }
        let Some(binding) = binding.filter(|b| b.verified_at_us.is_some() && b.auto_provision)
        else {
            return Err(fail(format!(
                "{email} is not a user of any tenant and its domain {} provisions no tenant",
                if hd.is_empty() { "(none)" } else { hd.as_str() }
            )));
        };
        if wanted.as_ref().is_some_and(|t| *t != binding.tenant_id) {
            return Err(fail(format!(
                "{email} belongs to {hd}, which is bound to another tenant"
            )));
        }
        let id = format!("u{}", uuid::Uuid::now_v7().simple());
        let user = User {
            tenant_id: binding.tenant_id.clone(),
            id,
            email: email.to_owned(),
            display_name: claims.name.clone().unwrap_or_else(|| email.to_owned()),
            state: UserState::Active,
            google_subject: claims.sub.clone(),
            hosted_domain: hd.clone(),
            picture_uri: claims.picture.clone().unwrap_or_default(),
            last_sign_in_at_us: Some(now_micros()),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let user = self.users.create_user(&user, None).await?;
        let assignment = Assignment {
            tenant_id: binding.tenant_id.clone(),
            id: format!("sso-{}", user.id),
            principal: user.name(),
            role: binding.default_role.clone(),
            scope: binding.default_scope.clone(),
            description: format!("provisioned by Google sign-in through {hd}"),
            expire_at_us: None,
            creator: "sso".into(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        self.access.create_assignment(&assignment, None).await?;
        Ok((user, true))
    }
}

/// A hosted domain bound to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainBinding {
    pub domain: String,
    pub tenant_id: String,
    pub default_role: String,
    pub default_scope: String,
    pub auto_provision: bool,
    pub verification_token: String,
    pub verified_at_us: Option<i64>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

type BindingRow = (
    String,
    String,
    String,
    String,
    bool,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
);

pub(crate) const BINDING_COLUMNS: &str = "domain, tenant_id, default_role, default_scope, auto_provision, verification_token, verified_at_us, revision, created_at_us, updated_at_us";

pub(crate) fn binding_from(row: BindingRow) -> DomainBinding {
    let (
        domain,
        tenant_id,
        default_role,
        default_scope,
        auto_provision,
        verification_token,
        verified_at_us,
        revision,
        created_at_us,
        updated_at_us,
    ) = row;
    DomainBinding {
        domain,
        tenant_id,
        default_role,
        default_scope,
        auto_provision,
        verification_token,
        verified_at_us,
        revision,
        created_at_us,
        updated_at_us,
    }
}

/// The binding of `domain`, in whichever tenant.
pub async fn domain_binding(db: &Db, domain: &str) -> maxai_kit::Result<Option<DomainBinding>> {
    let sql = format!("SELECT {BINDING_COLUMNS} FROM sso_domains WHERE domain = $1");
    let row: Option<BindingRow> = on_db!(db, |pool| {
        sqlx::query_as(&sql).bind(domain).fetch_optional(pool).await
    })?;
    Ok(row.map(binding_from))
}
