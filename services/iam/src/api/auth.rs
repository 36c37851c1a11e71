//! `AuthService`: the JWKS, signing-key rotation, API-key exchange, refresh-token rotation with
//! reuse detection, revocation, and Google sign-in (see [`crate::sso`]).
use std::{sync::Arc, time::Duration};

use maxai_kit::{
    auth::{KEYS_CHANNEL, REVOKED_CHANNEL},
    paging::{decode_token, next_page, page_size},
    resource::timestamp,
    shared_state::Notifier,
    storage::now_micros,
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use crate::{
    audit::{AuditLog, Caller, Event},
    domain::{secret_hash, Outcome},
    sessions::{Issued, Refresh, RefreshTokens},
    sso::GoogleSignIn,
    store::{AccountStore, TenancyStore},
    tokens::{jwk, AccessClaims, KeyRing, KeyState, PublicKey},
};

/// API-key exchanges get at most this lifetime.
const MAX_EXCHANGE_TTL: Duration = Duration::from_secs(3600);

pub struct AuthApi {
    keys: Arc<KeyRing>,
    refresh: Arc<RefreshTokens>,
    accounts: Arc<dyn AccountStore>,
    tenancy: Arc<dyn TenancyStore>,
    audit: Arc<AuditLog>,
    notifier: Arc<dyn Notifier>,
    google: Arc<GoogleSignIn>,
}

fn unauthenticated(message: &str) -> Error {
    Error::new(ErrorKind::Unauthenticated, message.to_owned())
}

impl AuthApi {
    pub fn new(
        keys: Arc<KeyRing>,
        refresh: Arc<RefreshTokens>,
        accounts: Arc<dyn AccountStore>,
        tenancy: Arc<dyn TenancyStore>,
        audit: Arc<AuditLog>,
        notifier: Arc<dyn Notifier>,
        google: Arc<GoogleSignIn>,
    ) -> Self {
        AuthApi {
            keys,
            refresh,
            accounts,
            tenancy,
            audit,
            notifier,
            google,
        }
    }

    /// A sign-in's tokens: an access token and a new refresh-token family.
    async fn sign_in_tokens(&self, tenant_id: &str, principal: &str) -> Result<pb::TokenSet> {
        super::active_tenant(self.tenancy.as_ref(), tenant_id).await?;
        let (access, claims) = self.keys.issue(principal, tenant_id, None)?;
        let refresh = self.refresh.issue(tenant_id, principal).await?;
        Ok(token_set(access, &claims, Some(refresh)))
    }

    async fn denied(&self, caller: &Caller, tenant: &str, action: &str, reason: &str) {
        let event = Event {
            action,
            permission: "",
            resource: "",
            outcome: Outcome::Denied,
            reason,
        };
        self.audit
            .refused(caller, tenant, &event, serde_json::json!({}))
            .await;
    }
}

/// What a sign-in, refresh or API-key exchange answers.
fn token_set(access: String, claims: &AccessClaims, refresh: Option<Issued>) -> pb::TokenSet {
    pb::TokenSet {
        access_token: access,
        token_type: "Bearer".into(),
        access_token_expire_time: Some(timestamp(claims.exp * 1_000_000)),
        refresh_token_expire_time: refresh.as_ref().map(|r| timestamp(r.family_expires_at_us)),
        refresh_token: refresh.map(|r| r.token).unwrap_or_default(),
        principal: claims.sub.clone(),
        tenant: format!("tenants/{}", claims.tid),
    }
}

fn key_to_pb(k: &PublicKey) -> pb::SigningKey {
    pb::SigningKey {
        name: format!("signingKeys/{}", k.kid),
        state: match k.state {
            KeyState::Active => pb::SigningKeyState::Active,
            KeyState::Retiring => pb::SigningKeyState::Retiring,
            KeyState::Retired => pb::SigningKeyState::Retired,
        } as i32,
        public_key: Some(jwk(k)),
        create_time: Some(timestamp(k.created_at_us)),
        rotate_time: k.rotated_at_us.map(timestamp),
        retire_time: k.retire_at_us.map(timestamp),
    }
}

const PLATFORM: &str = crate::PLATFORM_TENANT;

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn start_google_sign_in(
        &self,
        request: Request<pb::StartGoogleSignInRequest>,
    ) -> Result<Response<pb::StartGoogleSignInResponse>, Status> {
        Ok(Response::new(
            self.google.start(request.into_inner()).await?,
        ))
    }

    async fn complete_google_sign_in(
        &self,
        request: Request<pb::CompleteGoogleSignInRequest>,
    ) -> Result<Response<pb::CompleteGoogleSignInResponse>, Status> {
        let caller = Caller::of(&request);
        let action = "maxai.iam.v1.AuthService/CompleteGoogleSignIn";
        match self.google.complete(request.into_inner()).await {
            Ok(signed_in) => {
                let tokens = self
                    .sign_in_tokens(&signed_in.tenant_id, &signed_in.principal)
                    .await?;
                let who = Caller {
                    actor: signed_in.principal.clone(),
                    ..caller
                };
                self.audit
                    .changed(
                        &who,
                        &signed_in.tenant_id,
                        action,
                        "",
                        &signed_in.principal,
                        serde_json::json!({"provider": "google", "user_created": signed_in.created}),
                    )
                    .await;
                Ok(Response::new(pb::CompleteGoogleSignInResponse {
                    tokens: Some(tokens),
                    return_to: signed_in.return_to,
                    user_created: signed_in.created,
                }))
            }
            Err(failure) => {
                // Failed sign-ins go to the operator's chain: the tenant is often unknown.
                self.denied(&caller, PLATFORM, action, &failure.reason)
                    .await;
                Err(failure.error.into())
            }
        }
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let caller = Caller::of(&request);
        let token = request.into_inner().refresh_token;
        let action = "maxai.iam.v1.AuthService/RefreshToken";
        match self.refresh.refresh(&token).await? {
            Refresh::Rotated(holder, next) => {
                super::active_tenant(self.tenancy.as_ref(), &holder.tenant_id).await?;
                let (access, claims) =
                    self.keys
                        .issue(&holder.principal, &holder.tenant_id, None)?;
                let who = Caller {
                    actor: holder.principal.clone(),
                    ..caller
                };
                self.audit
                    .changed(
                        &who,
                        &holder.tenant_id,
                        action,
                        "",
                        &holder.principal,
                        serde_json::json!({"token": "refresh", "jti": claims.jti}),
                    )
                    .await;
                Ok(Response::new(pb::RefreshTokenResponse {
                    tokens: Some(token_set(access, &claims, Some(next))),
                }))
            }
            Refresh::Reused(holder) => {
                let who = Caller {
                    actor: holder.principal.clone(),
                    ..caller
                };
                self.denied(
                    &who,
                    &holder.tenant_id,
                    action,
                    "a spent refresh token was presented again; its family is revoked",
                )
                .await;
                Err(unauthenticated("the refresh token is not valid").into())
            }
        }
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::RevokeTokenRequest {
            token,
            token_type_hint: _,
        } = request.into_inner();
        if token.is_empty() {
            return Err(Error::invalid("token", "is required").into());
        }
        let action = "maxai.iam.v1.AuthService/RevokeToken";
        if token.starts_with("mxr_") {
            if let Some(holder) = self.refresh.revoke(&token).await? {
                let who = Caller {
                    actor: holder.principal.clone(),
                    ..caller
                };
                self.audit
                    .changed(
                        &who,
                        &holder.tenant_id,
                        action,
                        "",
                        &holder.principal,
                        serde_json::json!({"token": "refresh"}),
                    )
                    .await;
            }
        } else if let Ok(claims) = self.keys.verify(&token) {
            self.notifier
                .publish(REVOKED_CHANNEL, &format!("{} {}", claims.jti, claims.exp))
                .await
                .map_err(Error::internal)?;
            let who = Caller {
                actor: claims.sub.clone(),
                ..caller
            };
            self.audit
                .changed(
                    &who,
                    &claims.tid,
                    action,
                    "",
                    &claims.sub,
                    serde_json::json!({"token": "access", "jti": claims.jti}),
                )
                .await;
        }
        // RFC 7009: an unknown or invalid token is not an error.
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn exchange_api_key(
        &self,
        request: Request<pb::ExchangeApiKeyRequest>,
    ) -> Result<Response<pb::ExchangeApiKeyResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::ExchangeApiKeyRequest {
            api_key,
            scope,
            ttl,
        } = request.into_inner();
        if !scope.is_empty() {
            return Err(Error::invalid(
                "scope",
                "narrowing to one client is not offered; grant the account a client-scoped role instead",
            )
            .into());
        }
        let action = "maxai.iam.v1.AuthService/ExchangeApiKey";
        let now = now_micros();
        let key = match self.accounts.key_by_hash(&secret_hash(&api_key)).await? {
            Some(k) if k.expire_at_us.is_none_or(|t| t > now) => k,
            _ => {
                self.denied(&caller, PLATFORM, action, "unknown or expired API key")
                    .await;
                return Err(unauthenticated("the API key is not valid").into());
            }
        };
        let account = self
            .accounts
            .get_account(&key.tenant_id, &key.account_id)
            .await?;
        let Some(account) = account.filter(|a| !a.disabled) else {
            self.denied(
                &caller,
                &key.tenant_id,
                action,
                "service account disabled or gone",
            )
            .await;
            return Err(unauthenticated("the API key is not valid").into());
        };
        let ttl = ttl
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .map_or(MAX_EXCHANGE_TTL, |d| d.min(MAX_EXCHANGE_TTL));
        super::active_tenant(self.tenancy.as_ref(), &account.tenant_id).await?;
        // The token names its key, so deleting the key revokes it everywhere.
        let claims = AccessClaims {
            key: key.name(),
            ..self
                .keys
                .claims(&account.name(), &account.tenant_id, Some(ttl))
        };
        let tokens = token_set(self.keys.sign(&claims)?, &claims, None);
        let who = Caller {
            actor: account.name(),
            ..caller
        };
        self.audit
            .changed(
                &who,
                &account.tenant_id,
                action,
                "",
                &key.name(),
                serde_json::json!({"ttl_secs": ttl.as_secs()}),
            )
            .await;
        Ok(Response::new(pb::ExchangeApiKeyResponse {
            tokens: Some(tokens),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: self.keys.published().iter().map(jwk).collect(),
        }))
    }

    async fn list_signing_keys(
        &self,
        request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let pb::ListSigningKeysRequest {
            page_size: size,
            page_token,
            include_retired,
        } = request.into_inner();
        let size = page_size(size)?;
        let after = decode_token("signingKeys", &page_token)?;
        // Newest first: kids are not ordered, creation times are (ties broken by kid).
        let mut keys: Vec<PublicKey> = self.keys.all(include_retired).await?;
        let key = |k: &PublicKey| format!("{:020}/{}", k.created_at_us, k.kid);
        keys.sort_by_key(|k| std::cmp::Reverse(key(k)));
        let mut page: Vec<PublicKey> = keys
            .into_iter()
            .filter(|k| after.as_ref().is_none_or(|a| key(k) < *a))
            .take(size as usize + 1)
            .collect();
        let next_page_token = next_page(&mut page, size, "signingKeys", key);
        Ok(Response::new(pb::ListSigningKeysResponse {
            signing_keys: page.iter().map(key_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn rotate_signing_keys(
        &self,
        request: Request<pb::RotateSigningKeysRequest>,
    ) -> Result<Response<pb::RotateSigningKeysResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::RotateSigningKeysRequest {
            algorithm,
            grace_period,
            request_id: _,
        } = request.into_inner();
        if !algorithm.is_empty() && algorithm != "EdDSA" {
            return Err(Error::invalid("algorithm", "only EdDSA is offered").into());
        }
        let grace = match grace_period {
            None => self.keys.ttl() * 2,
            Some(d) => {
                let d = Duration::try_from(d)
                    .map_err(|_| Error::invalid("grace_period", "must not be negative"))?;
                if d < self.keys.ttl() {
                    return Err(Error::invalid(
                        "grace_period",
                        "must be at least the access-token lifetime, or tokens signed a moment ago stop verifying",
                    )
                    .into());
                }
                d
            }
        };
        let active = self.keys.rotate(grace).await?;
        // Every verifier and key ring reloads now, not when it first meets the new kid.
        if let Err(e) = self.notifier.publish(KEYS_CHANNEL, &active.kid).await {
            tracing::warn!(error = %e, "could not announce the rotation; replicas reload within a minute");
        }
        let retiring: Vec<pb::SigningKey> = self
            .keys
            .published()
            .iter()
            .filter(|k| k.state == KeyState::Retiring)
            .map(key_to_pb)
            .collect();
        self.audit
            .changed(
                &caller,
                PLATFORM,
                "maxai.iam.v1.AuthService/RotateSigningKeys",
                "iam.signingKeys.rotate",
                &format!("signingKeys/{}", active.kid),
                serde_json::json!({"grace_secs": grace.as_secs()}),
            )
            .await;
        Ok(Response::new(pb::RotateSigningKeysResponse {
            active_key: Some(key_to_pb(&active)),
            retiring_keys: retiring,
        }))
    }
}
