//! Authentication and authorization every process shares, so the gateway and each service
//! check a call the same way.
//!
//! - [`Verifier`]: checks an access JWT (EdDSA, `kid`, issuer, audience, lifetime) against the
//!   JWK Set from a [`KeySource`]. A token's signature is checked once per process while it is
//!   valid: the result is cached by the token itself (bounded), so authentication costs a map
//!   lookup on every later call. Revoked token ids are refused before the cache answers.
//! - [`Guard`]: for one RPC, reads its `(maxai.api.v1.auth)` rule from the contracts, verifies
//!   the bearer token and asks an [`Authorizer`] about the permission on the resource named in
//!   the request (the rule's `resource_field`).
//! - [`GuardLayer`]: the same check as a tower layer in front of every tonic service; the
//!   verified [`Principal`] is put in the request extensions for the handler.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maxai_proto::maxai::iam::v1::Jwk;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use serde::{Deserialize, Serialize};

use crate::{descriptors, storage::now_micros, ttl_map::TtlMap, Error, ErrorKind, Result};

/// Audience of every access token this platform issues.
pub const AUDIENCE: &str = "maxai-api";
/// Notifier channel on which revoked access-token ids are announced (`{jti} {exp}`).
pub const REVOKED_CHANNEL: &str = "iam.tokens.revoked";
/// Notifier channel on which IAM announces a signing-key rotation: verifiers and key rings
/// reload at once instead of meeting the new `kid` as a stranger.
pub const KEYS_CHANNEL: &str = "iam.keys.rotated";
/// Notifier channel on which IAM announces role and assignment changes.
pub const POLICY_CHANNEL: &str = "iam.policy.changed";
/// Verified tokens kept at most; past it the cache starts over (cheap to refill).
const VERIFIED_CAPACITY: usize = 50_000;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// An unknown `kid` refetches the JWK Set at most this often (a new key after rotation is seen
/// at once; a stream of forged kids cannot hammer IAM).
const REFETCH_EVERY: Duration = Duration::from_secs(1);

/// Claims of a platform access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal: `tenants/{t}/users/{u}` or `tenants/{t}/serviceAccounts/{s}`.
    pub sub: String,
    pub aud: String,
    /// Tenant id of the principal.
    pub tid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The API key (`tenants/{t}/serviceAccounts/{s}/apiKeys/{k}`) this token was exchanged
    /// for, so deleting the key revokes it; absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Who is calling, as proven by a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: String,
    pub token_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The API key the token was exchanged for, when it was.
    pub api_key: String,
}

impl Principal {
    /// The verified caller of a tonic request (put there by [`GuardLayer`]).
    pub fn of<T>(req: &tonic::Request<T>) -> Result<&Principal> {
        req.extensions().get::<Principal>().ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                "this call needs a bearer access token",
            )
        })
    }

    /// Whether `resource` (`tenants/{t}/…`) lies in the caller's own tenant.
    pub fn owns(&self, resource: &str) -> bool {
        tenant_of(resource).is_some_and(|t| t == self.tenant)
    }
}

/// The tenant id a resource name lies in, if any.
pub fn tenant_of(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("tenants/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|t| !t.is_empty())
}

/// Where the public keys come from: IAM's key ring in-process, or its JWKS over gRPC.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn jwks(&self) -> Result<Vec<Jwk>>;
}

/// The answer of an [`Authorizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: String,
}

/// Decides whether the caller holds `permission` on `resource` (the policy engine, in this
/// process or IAM's over gRPC, which is asked with the caller's own `credential`).
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    async fn authorize(
        &self,
        caller: &Principal,
        credential: &str,
        permission: &str,
        resource: &str,
    ) -> Result<Verdict>;
}

fn unauthenticated() -> Error {
    // One message for every cause: which check failed is no help to a caller, only to an attacker.
    Error::new(ErrorKind::Unauthenticated, "the access token is not valid")
}

/// Verifies access tokens; see the module docs.
pub struct Verifier {
    issuer: String,
    source: Arc<dyn KeySource>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched: Mutex<Option<Instant>>,
    verified: TtlMap<Principal>,
    /// Revoked token id → its expiry (unix seconds); dropped once the token has expired anyway.
    revoked: RwLock<HashMap<String, i64>>,
}

impl Verifier {
    pub fn new(issuer: impl Into<String>, source: Arc<dyn KeySource>) -> Arc<Self> {
        Arc::new(Verifier {
            issuer: issuer.into(),
            source,
            keys: RwLock::new(HashMap::new()),
            fetched: Mutex::new(None),
            verified: TtlMap::new(VERIFIED_CAPACITY),
            revoked: RwLock::new(HashMap::new()),
        })
    }

    /// Follows revocations (a token id or an API key name, with its expiry) and key rotations
    /// announced by any replica until `shutdown`.
    pub async fn follow_revocations(
        self: &Arc<Self>,
        notifier: &dyn crate::shared_state::Notifier,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let mut rx = notifier
            .subscribe(REVOKED_CHANNEL)
            .await
            .map_err(Error::internal)?;
        let mut rotations = notifier
            .subscribe(KEYS_CHANNEL)
            .await
            .map_err(Error::internal)?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    rotated = rotations.recv() => {
                        if matches!(rotated, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break }
                        let Some(v) = me.upgrade() else { break };
                        if let Err(e) = v.reload().await {
                            tracing::warn!(error = %e, "could not reload the token keys after a rotation");
                        }
                    }
                    msg = rx.recv() => match msg {
                        Ok(text) => {
                            let Some(v) = me.upgrade() else { break };
                            let mut parts = text.split(' ');
                            if let (Some(jti), Some(exp)) = (parts.next(), parts.next().and_then(|e| e.parse().ok())) {
                                v.revoke(jti, exp);
                            }
                        }
                        // Missed announcements: forget every verified token, so each is checked again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let Some(v) = me.upgrade() else { break };
                            v.verified.clear();
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        Ok(())
    }

    /// Refuses the token `jti` from now on in this process.
    pub fn revoke(&self, jti: &str, expires_at: i64) {
        let now = now_micros() / 1_000_000;
        {
            let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
            revoked.retain(|_, exp| *exp + LEEWAY_SECS as i64 >= now);
            revoked.insert(jti.to_owned(), expires_at);
        }
        self.verified
            .retain(|p| p.token_id != jti && p.api_key != jti);
    }

    /// Verifies `token`: signature, `kid`, issuer, audience, lifetime, not revoked.
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        if let Some(p) = self.verified.get(token) {
            return Ok(p);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        if header.alg != Algorithm::EdDSA {
            return Err(unauthenticated());
        }
        let kid = header.kid.ok_or_else(unauthenticated)?;
        if !self.has_key(&kid) {
            self.refetch().await?;
        }
        let claims = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            let key = keys.get(&kid).ok_or_else(unauthenticated)?;
            let mut validation = Validation::new(Algorithm::EdDSA);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[AUDIENCE]);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map_err(|_| unauthenticated())?
                .claims
        };
        let barred = {
            let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
            revoked.contains_key(&claims.jti)
                || (!claims.key.is_empty() && revoked.contains_key(&claims.key))
        };
        if barred {
            return Err(unauthenticated());
        }
        let principal = Principal {
            subject: claims.sub,
            tenant: claims.tid,
            token_id: claims.jti,
            expires_at: claims.exp,
            api_key: claims.key,
        };
        // Kept while the token is valid: its signature is checked once per process.
        let now = now_micros() / 1_000_000;
        let left = (principal.expires_at + LEEWAY_SECS as i64 - now).max(0) as u64;
        self.verified.insert(
            token.to_owned(),
            principal.clone(),
            Duration::from_secs(left),
        );
        Ok(principal)
    }

    fn has_key(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(kid)
    }

    /// Reloads the JWK Set unless it was loaded within [`REFETCH_EVERY`]. Keys that left the
    /// set (retired) are dropped, and with them every token they verified.
    async fn refetch(&self) -> Result<()> {
        {
            let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            if fetched.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
                return Ok(());
            }
            *fetched = Some(Instant::now());
        }
        self.reload().await
    }

    /// Reloads the JWK Set now (after a rotation in this process).
    pub async fn reload(&self) -> Result<()> {
        let jwks = self.source.jwks().await?;
        let mut keys = HashMap::new();
        for jwk in jwks {
            if jwk.kty == "OKP" && jwk.crv == "Ed25519" {
                if let Ok(k) = DecodingKey::from_ed_components(&jwk.x) {
                    keys.insert(jwk.kid, k);
                }
            }
        }
        let dropped = {
            let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
            let dropped = current.keys().any(|k| !keys.contains_key(k));
            *current = keys;
            dropped
        };
        if dropped {
            self.verified.clear();
        }
        Ok(())
    }
}

/// The bearer token in an `authorization` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let v = value?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What one RPC demands, read from its `(maxai.api.v1.auth)` option.
#[derive(Debug, Clone)]
pub struct MethodRule {
    pub public: bool,
    pub permission: String,
    /// Dotted path of the request field naming the resource; empty: the platform.
    pub resource_field: String,
    pub input: MessageDescriptor,
}

/// Authenticates and authorizes calls by their gRPC path; see the module docs.
pub struct Guard {
    verifier: Arc<Verifier>,
    authorizer: Arc<dyn Authorizer>,
    rules: HashMap<String, MethodRule>,
}

impl Guard {
    pub fn new(verifier: Arc<Verifier>, authorizer: Arc<dyn Authorizer>) -> Arc<Self> {
        let mut rules = HashMap::new();
        for service in descriptors::pool().services() {
            for method in service.methods() {
                let rule = descriptors::auth_rule(&method).unwrap_or_default();
                rules.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    MethodRule {
                        public: rule.public,
                        permission: rule.permission,
                        resource_field: rule.resource_field,
                        input: method.input(),
                    },
                );
            }
        }
        Arc::new(Guard {
            verifier,
            authorizer,
            rules,
        })
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The rule of `/{service}/{method}`; `None` for paths outside the contracts (health,
    /// reflection).
    pub fn rule(&self, path: &str) -> Option<&MethodRule> {
        self.rules.get(path)
    }

    /// Verifies the bearer token in an `authorization` header value; returns it with its principal.
    pub async fn authenticate<'a>(
        &self,
        authorization: Option<&'a str>,
    ) -> Result<(Principal, &'a str)> {
        let token = bearer(authorization).ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                "this call needs a bearer access token",
            )
        })?;
        Ok((self.verifier.verify(token).await?, token))
    }

    /// Whether `principal` (proven by `credential`) may make the call `rule` describes with
    /// `request`.
    pub async fn authorize(
        &self,
        principal: &Principal,
        credential: &str,
        rule: &MethodRule,
        request: &DynamicMessage,
    ) -> Result<()> {
        let resource = resource_of(request, &rule.resource_field);
        self.authorize_resource(principal, credential, rule, &resource)
            .await
    }

    /// Whether `principal` may make the call `rule` describes on `resource`.
    pub async fn authorize_resource(
        &self,
        principal: &Principal,
        credential: &str,
        rule: &MethodRule,
        resource: &str,
    ) -> Result<()> {
        let verdict = self
            .authorizer
            .authorize(principal, credential, &rule.permission, resource)
            .await?;
        if verdict.allowed {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{} may not {} here: {}",
                    principal.subject, rule.permission, verdict.reason
                ),
            ))
        }
    }
}

/// The string at dotted `path` in `message` ("" when unset or not a string).
pub fn resource_of(message: &DynamicMessage, path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(field) = current.descriptor().get_field_by_name(part) else {
            return String::new();
        };
        let value = current.get_field(&field).into_owned();
        match (value, parts.peek().is_some()) {
            (Value::Message(m), true) => current = m,
            (Value::String(s), false) => return s,
            _ => return String::new(),
        }
    }
    String::new()
}

/// Puts [`Guard`] in front of tonic services.
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
    max_message_bytes: usize,
}

impl GuardLayer {
    pub fn new(guard: Arc<Guard>, max_message_bytes: usize) -> Self {
        GuardLayer {
            guard,
            max_message_bytes,
        }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    layer: GuardLayer,
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for GuardService<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        // The clone is the not-yet-ready one; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let rule = match layer.guard.rule(req.uri().path()) {
                Some(rule) if !rule.public => rule.clone(),
                _ => return inner.call(req).await,
            };
            match admit(&layer, &rule, req).await {
                Ok(req) => inner.call(req).await,
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// Authenticates, reads the request message, authorizes; hands back the request rebuilt with
/// the same bytes and the principal in its extensions.
async fn admit(layer: &GuardLayer, rule: &MethodRule, req: HttpRequest) -> Result<HttpRequest> {
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (principal, token) = layer.guard.authenticate(authorization).await?;
    let token = token.to_owned();
    let (mut parts, body) = req.into_parts();
    // Only a method whose permission is checked on a resource named in the request needs the
    // request read here; the others stream on untouched.
    let body = if rule.resource_field.is_empty() {
        layer
            .guard
            .authorize_resource(&principal, &token, rule, "")
            .await?;
        body
    } else {
        let limit = layer.max_message_bytes.saturating_add(5);
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "the request could not be read or is too large",
                )
            })?
            .to_bytes();
        let resource =
            resource_from_wire(&rule.input, unary_payload(&bytes)?, &rule.resource_field);
        layer
            .guard
            .authorize_resource(&principal, &token, rule, &resource)
            .await?;
        tonic::body::Body::new(http_body_util::Full::new(bytes))
    };
    parts.extensions.insert(principal);
    Ok(http::Request::from_parts(parts, body))
}

/// The single length-prefixed message of a unary gRPC request body.
fn unary_payload(bytes: &Bytes) -> Result<&[u8]> {
    let bad = |m: &str| Error::new(ErrorKind::InvalidArgument, m.to_owned());
    if bytes.len() < 5 {
        return Err(bad("the request holds no message"));
    }
    if bytes[0] != 0 {
        return Err(bad("compressed requests are not accepted"));
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    bytes
        .get(5..5 + len)
        .ok_or_else(|| bad("the request message is truncated"))
}

/// The string at dotted `path` read straight from a message's wire bytes, without decoding the
/// rest (a batch of 100 checks is not decoded twice to find its `parent`). Protobuf merge rules
/// hold: of several occurrences the last wins, embedded messages merge. "" when absent or
/// malformed; the service's own decoding then reports malformed input.
pub fn resource_from_wire(input: &MessageDescriptor, wire: &[u8], path: &str) -> String {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let mut desc = input.clone();
    let mut scopes: Vec<&[u8]> = vec![wire];
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(field) = desc.get_field_by_name(part) else {
            return String::new();
        };
        let number = field.number();
        let mut found: Vec<&[u8]> = Vec::new();
        for scope in scopes {
            let mut buf = scope;
            while !buf.is_empty() {
                let Ok((tag, wire_type)) = decode_key(&mut buf) else {
                    return String::new();
                };
                let value: &[u8] = match wire_type {
                    WireType::Varint => {
                        if decode_varint(&mut buf).is_err() {
                            return String::new();
                        }
                        continue;
                    }
                    WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                        let n = if wire_type == WireType::SixtyFourBit {
                            8
                        } else {
                            4
                        };
                        if buf.len() < n {
                            return String::new();
                        }
                        buf = &buf[n..];
                        continue;
                    }
                    WireType::LengthDelimited => {
                        let Ok(len) = decode_varint(&mut buf) else {
                            return String::new();
                        };
                        let len = len as usize;
                        if buf.len() < len {
                            return String::new();
                        }
                        let (value, rest) = buf.split_at(len);
                        buf = rest;
                        value
                    }
                    WireType::StartGroup | WireType::EndGroup => return String::new(),
                };
                if tag == number {
                    found.push(value);
                }
            }
        }
        if parts.peek().is_none() {
            return found
                .last()
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default()
                .to_owned();
        }
        match field.kind() {
            prost_reflect::Kind::Message(m) => desc = m,
            _ => return String::new(),
        }
        scopes = found;
    }
    String::new()
}

/// The JWK Set read from IAM over gRPC (processes that do not run IAM).
pub struct GrpcKeySource {
    channel: tonic::transport::Channel,
}

impl GrpcKeySource {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        GrpcKeySource { channel }
    }
}

#[async_trait]
impl KeySource for GrpcKeySource {
    async fn jwks(&self) -> Result<Vec<Jwk>> {
        use maxai_proto::maxai::iam::v1::{auth_service_client::AuthServiceClient, GetJwksRequest};
        let mut req = tonic::Request::new(GetJwksRequest {});
        req.set_timeout(Duration::from_secs(5));
        AuthServiceClient::new(self.channel.clone())
            .get_jwks(req)
            .await
            .map(|r| r.into_inner().keys)
            .map_err(|s| {
                Error::new(
                    ErrorKind::Unavailable,
                    "the token keys could not be read from IAM",
                )
                .with_source(anyhow::anyhow!("{s}"))
            })
    }
}

/// Decisions kept at most by [`RemoteAuthorizer`], and for how long (a change announced on
/// [`POLICY_CHANNEL`] clears them at once; the age bounds a missed announcement).
const DECISIONS_CAPACITY: usize = 50_000;
const DECISION_TTL: Duration = Duration::from_secs(30);

/// Asks IAM's `AuthorizationService` over gRPC, with the caller's own credential (every
/// principal may ask about itself), and caches the answers.
pub struct RemoteAuthorizer {
    channel: tonic::transport::Channel,
    decisions: TtlMap<Verdict>,
}

impl RemoteAuthorizer {
    pub async fn start(
        channel: tonic::transport::Channel,
        notifier: &dyn crate::shared_state::Notifier,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>> {
        let me = Arc::new(RemoteAuthorizer {
            channel,
            decisions: TtlMap::new(DECISIONS_CAPACITY),
        });
        let mut rx = notifier
            .subscribe(POLICY_CHANNEL)
            .await
            .map_err(Error::internal)?;
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = rx.recv() => {
                        if matches!(msg, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break }
                        let Some(me) = weak.upgrade() else { break };
                        me.decisions.clear();
                    }
                }
            }
        });
        Ok(me)
    }
}

#[async_trait]
impl Authorizer for RemoteAuthorizer {
    async fn authorize(
        &self,
        caller: &Principal,
        credential: &str,
        permission: &str,
        resource: &str,
    ) -> Result<Verdict> {
        use maxai_proto::maxai::iam::v1::{
            authorization_service_client::AuthorizationServiceClient, AuthorizationCheck,
            AuthorizeRequest, Decision,
        };
        // NUL cannot occur in a name or a permission: the key is unambiguous.
        let key = format!("{}\0{permission}\0{resource}", caller.subject);
        if let Some(v) = self.decisions.get(&key) {
            return Ok(v);
        }
        let mut req = tonic::Request::new(AuthorizeRequest {
            check: Some(AuthorizationCheck {
                subject: String::new(),
                permission: permission.to_owned(),
                resource: resource.to_owned(),
            }),
        });
        with_bearer(&mut req, credential);
        req.set_timeout(Duration::from_secs(5));
        let verdict = match AuthorizationServiceClient::new(self.channel.clone())
            .authorize(req)
            .await
        {
            Ok(resp) => {
                let result = resp.into_inner().result.unwrap_or_default();
                Verdict {
                    allowed: result.decision() == Decision::Allow,
                    reason: result.reason,
                }
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => Verdict {
                allowed: false,
                reason: s.message().to_owned(),
            },
            Err(s) if s.code() == tonic::Code::Unauthenticated => return Err(unauthenticated()),
            Err(s) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the policy engine could not be reached",
                )
                .with_source(anyhow::anyhow!("{s}")))
            }
        };
        self.decisions.insert(key, verdict.clone(), DECISION_TTL);
        Ok(verdict)
    }
}

/// Sends `authorization: Bearer {token}` on every call of a tonic client.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Result<Self> {
        format!("Bearer {token}")
            .parse()
            .map(Bearer)
            .map_err(|_| Error::invalid("token", "must be ASCII"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A channel whose calls carry a bearer token: `XServiceClient::new(authed)`.
pub type Authed =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` with `token` on every call.
pub fn authed(channel: tonic::transport::Channel, token: &str) -> Result<Authed> {
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer::new(token)?,
    ))
}

/// Adds `authorization: Bearer {token}` to an outgoing tonic request.
pub fn with_bearer<T>(req: &mut tonic::Request<T>, token: &str) {
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_nothing_else_is() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn tenant_of_reads_the_first_segment_only() {
        assert_eq!(tenant_of("tenants/a/clients/b"), Some("a"));
        assert_eq!(tenant_of("tenants/a"), Some("a"));
        assert_eq!(tenant_of("flags/x"), None);
        assert_eq!(tenant_of("tenants/"), None);
    }

    #[test]
    fn resource_from_wire_agrees_with_decoding() {
        use prost::Message;
        let method = descriptors::pool()
            .get_service_by_name("maxai.iam.v1.TenantService")
            .and_then(|s| s.methods().find(|m| m.name() == "UpdateTenant"))
            .unwrap();
        let msg = crate::dynamic::message_from_json(
            method.input(),
            &serde_json::json!({"tenant": {"name": "tenants/acme", "displayName": "Acme", "labels": {"a": "b"}}, "updateMask": "displayName"}),
        )
        .unwrap();
        let wire = msg.encode_to_vec();
        assert_eq!(
            resource_from_wire(&method.input(), &wire, "tenant.name"),
            "tenants/acme"
        );
        assert_eq!(
            resource_from_wire(&method.input(), &wire, "tenant.contact_email"),
            ""
        );
        // Last occurrence wins, as decoding would have it.
        let mut twice = wire.clone();
        let other = crate::dynamic::message_from_json(
            method.input(),
            &serde_json::json!({"tenant": {"name": "tenants/other"}}),
        )
        .unwrap();
        twice.extend(other.encode_to_vec());
        assert_eq!(
            resource_from_wire(&method.input(), &twice, "tenant.name"),
            "tenants/other"
        );
        assert_eq!(
            resource_from_wire(&method.input(), &wire[..wire.len() - 3], "tenant.name"),
            ""
        );
    }

    #[test]
    fn resource_of_follows_dotted_paths() {
        let method = descriptors::pool()
            .get_service_by_name("maxai.iam.v1.TenantService")
            .and_then(|s| s.methods().find(|m| m.name() == "UpdateTenant"))
            .unwrap();
        let msg = crate::dynamic::message_from_json(
            method.input(),
            &serde_json::json!({"tenant": {"name": "tenants/acme"}}),
        )
        .unwrap();
        assert_eq!(resource_of(&msg, "tenant.name"), "tenants/acme");
        assert_eq!(resource_of(&msg, "tenant.missing"), "");
        assert_eq!(resource_of(&msg, ""), "");
    }
}
