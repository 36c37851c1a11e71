//! `ServiceAccountService`: non-human principals of a tenant and their API keys (the secret is
//! returned once, by CreateApiKey; only its SHA-256 is kept).
use std::sync::Arc;

use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, etag, expected_revision, mask_paths, micros, request_id, timestamp},
    storage::now_micros,
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, service_account_service_server::ServiceAccountService,
};
use tonic::{Request, Response, Status};

use super::names;
use crate::{
    audit::AuditLog,
    domain::{new_secret, secret_hash, ApiKey, ServiceAccount},
    policy::PolicyEngine,
    store::{AccountStore, TenancyStore},
};

const ACCOUNT_PATHS: &[&str] = &["display_name", "description", "disabled"];
/// Keys per account, so a leaked account cannot mint keys without bound.
const MAX_KEYS: usize = 10;
/// How long a CreateApiKey request_id answers retries (the contract says 10 minutes).
const RETRY_WINDOW_US: i64 = 10 * 60 * 1_000_000;

pub struct AccountsApi {
    tenancy: Arc<dyn TenancyStore>,
    store: Arc<dyn AccountStore>,
    policy: Arc<PolicyEngine>,
    audit: Arc<AuditLog>,
}

impl AccountsApi {
    pub fn new(
        tenancy: Arc<dyn TenancyStore>,
        store: Arc<dyn AccountStore>,
        policy: Arc<PolicyEngine>,
        audit: Arc<AuditLog>,
    ) -> Self {
        AccountsApi {
            tenancy,
            store,
            policy,
            audit,
        }
    }
}

fn account_name(name: &str, field: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "serviceAccounts", a]
            if check_id(t, 3, 63).is_ok() && check_id(a, 1, 63).is_ok() =>
        {
            Ok((t.to_string(), a.to_string()))
        }
        _ => Err(Error::invalid(
            field,
            "must be of the form tenants/{tenant}/serviceAccounts/{account}",
        )),
    }
}

fn key_name(name: &str, field: &str) -> Result<(String, String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "serviceAccounts", a, "apiKeys", k]
            if check_id(t, 3, 63).is_ok()
                && check_id(a, 1, 63).is_ok()
                && !k.is_empty()
                && k.len() <= 64 =>
        {
            Ok((t.to_string(), a.to_string(), k.to_string()))
        }
        _ => Err(Error::invalid(
            field,
            "must be of the form tenants/{tenant}/serviceAccounts/{account}/apiKeys/{key}",
        )),
    }
}

fn account_to_pb(a: &ServiceAccount) -> pb::ServiceAccount {
    let ServiceAccount {
        tenant_id: _,
        id: _,
        display_name,
        description,
        disabled,
        revision,
        created_at_us,
        updated_at_us,
    } = a;
    pb::ServiceAccount {
        name: a.name(),
        display_name: display_name.clone(),
        description: description.clone(),
        disabled: *disabled,
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

fn key_to_pb(k: &ApiKey) -> pb::ApiKey {
    let ApiKey {
        tenant_id: _,
        account_id: _,
        id: _,
        display_name,
        secret_prefix,
        secret_hash: _,
        expire_at_us,
        last_use_at_us,
        created_at_us,
    } = k;
    pb::ApiKey {
        name: k.name(),
        display_name: display_name.clone(),
        secret_prefix: secret_prefix.clone(),
        expire_time: expire_at_us.map(timestamp),
        last_use_time: last_use_at_us.map(timestamp),
        create_time: Some(timestamp(*created_at_us)),
    }
}

#[tonic::async_trait]
impl ServiceAccountService for AccountsApi {
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateServiceAccountRequest {
            parent,
            service_account,
            service_account_id,
            request_id: rid,
        } = request.into_inner();
        let mut v = Violations::new();
        let tenant = names::tenant(&parent, "parent")
            .map_err(|_| v.add("parent", "must be tenants/{tenant}"))
            .ok();
        if let Err(m) = check_id(&service_account_id, 1, 63) {
            v.add("service_account_id", m);
        }
        let a = service_account.unwrap_or_default();
        v.check(
            !a.display_name.trim().is_empty() && a.display_name.len() <= 200,
            "service_account.display_name",
            "must be 1-200 bytes",
        );
        v.check(
            a.description.len() <= 1000,
            "service_account.description",
            "must be at most 1000 bytes",
        );
        v.into_result()?;
        let tenant = tenant.unwrap_or_default();
        super::active_tenant(self.tenancy.as_ref(), &tenant).await?;
        let new = ServiceAccount {
            tenant_id: tenant,
            id: service_account_id,
            display_name: a.display_name,
            description: a.description,
            disabled: a.disabled,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let created = self.store.create_account(&new, request_id(&rid)?).await?;
        self.audit
            .changed(
                &md,
                &created.tenant_id,
                "maxai.iam.v1.ServiceAccountService/CreateServiceAccount",
                "iam.serviceAccounts.create",
                &created.name(),
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::CreateServiceAccountResponse {
            service_account: Some(account_to_pb(&created)),
        }))
    }

    async fn get_service_account(
        &self,
        request: Request<pb::GetServiceAccountRequest>,
    ) -> Result<Response<pb::GetServiceAccountResponse>, Status> {
        let pb::GetServiceAccountRequest { name } = request.into_inner();
        let (t, a) = account_name(&name, "name")?;
        let found = self
            .store
            .get_account(&t, &a)
            .await?
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Response::new(pb::GetServiceAccountResponse {
            service_account: Some(account_to_pb(&found)),
        }))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let pb::ListServiceAccountsRequest {
            parent,
            page_size: size,
            page_token,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        let scope = format!("accounts:{tenant}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_accounts(&tenant, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |a| a.id.clone());
        Ok(Response::new(pb::ListServiceAccountsResponse {
            service_accounts: rows.iter().map(account_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_service_account(
        &self,
        request: Request<pb::UpdateServiceAccountRequest>,
    ) -> Result<Response<pb::UpdateServiceAccountResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateServiceAccountRequest {
            service_account,
            update_mask,
        } = request.into_inner();
        let a = service_account.ok_or_else(|| Error::invalid("service_account", "is required"))?;
        let (t, id) = account_name(&a.name, "service_account.name")?;
        let expected = expected_revision(&a.etag, "service_account.etag")?;
        let paths = mask_paths(update_mask.as_ref(), ACCOUNT_PATHS)?;
        let mut next = self
            .store
            .get_account(&t, &id)
            .await?
            .ok_or_else(|| Error::not_found(a.name.clone()))?;
        let current = next.revision;
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "display_name" => {
                    v.check(
                        !a.display_name.trim().is_empty() && a.display_name.len() <= 200,
                        "service_account.display_name",
                        "must be 1-200 bytes",
                    );
                    next.display_name = a.display_name.clone();
                }
                "description" => {
                    v.check(
                        a.description.len() <= 1000,
                        "service_account.description",
                        "must be at most 1000 bytes",
                    );
                    next.description = a.description.clone();
                }
                _ => next.disabled = a.disabled,
            }
        }
        v.into_result()?;
        let updated = self
            .store
            .update_account(&next, expected.unwrap_or(current))
            .await?;
        // Suspending or disabling takes the principal's grants away at once.
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ServiceAccountService/UpdateServiceAccount",
                "iam.serviceAccounts.update",
                &updated.name(),
                serde_json::json!({"update_mask": paths, "disabled": updated.disabled}),
            )
            .await;
        Ok(Response::new(pb::UpdateServiceAccountResponse {
            service_account: Some(account_to_pb(&updated)),
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteServiceAccountRequest { name, etag } = request.into_inner();
        let (t, a) = account_name(&name, "name")?;
        self.store
            .delete_account(&t, &a, expected_revision(&etag, "etag")?)
            .await?;
        // Its assignments went with it.
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ServiceAccountService/DeleteServiceAccount",
                "iam.serviceAccounts.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateApiKeyRequest {
            parent,
            api_key,
            request_id: rid,
        } = request.into_inner();
        let (t, a) = account_name(&parent, "parent")?;
        let rid = request_id(&rid)?;
        let k = api_key.unwrap_or_default();
        let mut v = Violations::new();
        v.check(
            k.display_name.len() <= 200,
            "api_key.display_name",
            "must be at most 200 bytes",
        );
        let expire_at_us = k.expire_time.as_ref().map(micros);
        v.check(
            expire_at_us.is_none_or(|e| e > now_micros()),
            "api_key.expire_time",
            "must be in the future",
        );
        v.into_result()?;
        let account = self
            .store
            .get_account(&t, &a)
            .await?
            .ok_or_else(|| Error::not_found(parent.clone()))?;
        if account.disabled {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("{parent} is disabled"),
            )
            .into());
        }
        if self
            .store
            .list_keys(&t, &a, None, MAX_KEYS as i64)
            .await?
            .len()
            >= MAX_KEYS
        {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("{parent} already has {MAX_KEYS} keys; delete one first"),
            )
            .into());
        }
        let (secret, prefix) = new_secret();
        let new = ApiKey {
            tenant_id: t.clone(),
            account_id: a,
            id: uuid::Uuid::new_v4().simple().to_string(),
            display_name: k.display_name,
            secret_prefix: prefix,
            secret_hash: secret_hash(&secret),
            expire_at_us,
            last_use_at_us: None,
            created_at_us: 0,
        };
        let (created, made_now) = self.store.create_key(&new, rid).await?;
        if !made_now {
            // A retry of a request that already made a key: the same key, never its secret
            // again (only its hash is kept), and only within the retry window.
            if now_micros() - created.created_at_us > RETRY_WINDOW_US {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "this request_id was used more than 10 minutes ago; use a new one",
                )
                .into());
            }
            return Ok(Response::new(pb::CreateApiKeyResponse {
                api_key: Some(key_to_pb(&created)),
                secret: String::new(),
            }));
        }
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ServiceAccountService/CreateApiKey",
                "iam.apiKeys.create",
                &created.name(),
                serde_json::json!({"secret_prefix": created.secret_prefix}),
            )
            .await;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(key_to_pb(&created)),
            secret,
        }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let pb::GetApiKeyRequest { name } = request.into_inner();
        let (t, a, k) = key_name(&name, "name")?;
        let found = self
            .store
            .get_key(&t, &a, &k)
            .await?
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Response::new(pb::GetApiKeyResponse {
            api_key: Some(key_to_pb(&found)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let pb::ListApiKeysRequest {
            parent,
            page_size: size,
            page_token,
        } = request.into_inner();
        let (t, a) = account_name(&parent, "parent")?;
        let limit = page_size(size)?;
        let scope = format!("keys:{t}:{a}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_keys(&t, &a, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |k| k.id.clone());
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(key_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteApiKeyRequest { name } = request.into_inner();
        let (t, a, k) = key_name(&name, "name")?;
        self.store.delete_key(&t, &a, &k).await?;
        // Tokens exchanged for the key live at most an hour: refuse them everywhere until then.
        let until = now_micros() / 1_000_000 + 3600 + 60;
        if let Err(e) = self
            .policy
            .notifier()
            .publish(maxai_kit::auth::REVOKED_CHANNEL, &format!("{name} {until}"))
            .await
        {
            tracing::warn!(error = %e, key = %name, "could not announce the key's revocation");
        }
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ServiceAccountService/DeleteApiKey",
                "iam.apiKeys.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }
}
