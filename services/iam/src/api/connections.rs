//! `ConnectionService` (clients' connected provider accounts, never returning secrets) and the
//! internal `ConnectionCredentialService` adapters call for the current credential. Every
//! change and every credential hand-out is audited.
use std::sync::Arc;
use std::time::Duration;

use maxai_kit::{
    auth::Principal,
    error::Violations,
    paging,
    resource::{check_id, expected_revision, mask_paths, request_id, timestamp},
    storage::now_micros,
    Error, ErrorKind,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, connection_credential_service_server::ConnectionCredentialService,
    connection_service_server::ConnectionService, ConnectionAuthMethod as Method,
    ConnectionProvider as Provider, ConnectionState as State,
};
use tonic::{Request, Response, Status};

use super::names;
use crate::audit::{AuditLog, Caller};
use crate::connections::{hint, method_of, Connections, Row, Secrets};
use crate::store::TenancyStore;

/// `base_url` is not among them: pointed elsewhere, a connection would hand its stored key to
/// another server; a new instance is a new connection, with its key given again.
const UPDATE_PATHS: [&str; 2] = ["display_name", "config"];
/// Credentials are refreshed when they expire sooner than this, unless the caller says.
const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(60);

pub struct ConnectionsApi {
    connections: Arc<Connections>,
    tenancy: Arc<dyn TenancyStore>,
    audit: Arc<AuditLog>,
}

impl ConnectionsApi {
    pub fn new(
        connections: Arc<Connections>,
        tenancy: Arc<dyn TenancyStore>,
        audit: Arc<AuditLog>,
    ) -> Self {
        ConnectionsApi {
            connections,
            tenancy,
            audit,
        }
    }

    /// The client named by `parent`, which must exist in an active tenant.
    async fn client(&self, parent: &str) -> Result<(String, String), Error> {
        let (t, c) = names::client(parent, "parent")?;
        super::active_tenant(self.tenancy.as_ref(), &t).await?;
        self.tenancy
            .get_client(&t, &c)
            .await?
            .ok_or_else(|| Error::not_found(format!("client {parent}")))?;
        Ok((t, c))
    }

    async fn row(&self, name: &str, field: &str) -> Result<Row, Error> {
        let (t, c, id) = connection_name(name, field)?;
        self.connections
            .get(&t, &c, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("connection {name}")))
    }

    async fn changed(&self, caller: &Caller, row: &Row, action: &str, permission: &str) {
        self.audit
            .changed(
                caller,
                &row.tenant_id,
                &format!("maxai.iam.v1.ConnectionService/{action}"),
                permission,
                &row.name(),
                serde_json::json!({
                    "provider": row.provider().as_str_name(),
                    "state": row.state().as_str_name(),
                }),
            )
            .await;
    }
}

fn connection_name(name: &str, field: &str) -> Result<(String, String, String), Error> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c, "connections", id]
            if check_id(t, 3, 63).is_ok()
                && check_id(c, 1, 63).is_ok()
                && check_id(id, 1, 63).is_ok() =>
        {
            Ok((t.to_string(), c.to_string(), id.to_string()))
        }
        _ => Err(Error::invalid(
            field,
            "must be tenants/{tenant}/clients/{client}/connections/{connection}",
        )),
    }
}

/// Whether `url` has the scheme, host and port of `allowed` and lies under its path; a plain
/// prefix match would let `https://app.example.com.evil.test/` pass for `https://app.example.com`.
fn same_origin_under(url: &str, allowed: &str) -> bool {
    let (Ok(url), Ok(allowed)) = (url::Url::parse(url), url::Url::parse(allowed)) else {
        return false;
    };
    url.scheme() == allowed.scheme()
        && url.host_str() == allowed.host_str()
        && url.port_or_known_default() == allowed.port_or_known_default()
        && url.path().starts_with(allowed.path())
}

fn new_id(provider: Provider) -> String {
    let prefix = provider
        .as_str_name()
        .trim_start_matches("CONNECTION_PROVIDER_")
        .to_ascii_lowercase()
        .replace('_', "-");
    format!(
        "{prefix}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

fn config_json(config: Option<&prost_types::Struct>) -> String {
    config
        .map(crate::audit::struct_to_json)
        .unwrap_or_else(|| serde_json::json!({}))
        .to_string()
}

/// GHL's `user_type`: how the connection authorizes (agency or one sub-account).
fn check_ghl_config(provider: Provider, config: &str, field: &str, v: &mut Violations) {
    let value: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    if provider != Provider::Ghl {
        return;
    }
    match value.get("user_type") {
        None => {}
        Some(serde_json::Value::String(t)) if t == "Company" || t == "Location" => {}
        Some(_) => v.add(
            format!("{field}.user_type"),
            "must be \"Company\" (agency install) or \"Location\"",
        ),
    }
    if value.get("location_id").is_some_and(|l| !l.is_string()) {
        v.add(format!("{field}.location_id"), "must be a GHL location id");
    }
}

fn check_base_url(url: &str, v: &mut Violations) {
    if !url.is_empty()
        && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        v.add("connection.base_url", "must be an http(s) URL");
    }
}

fn blank_row(t: &str, c: &str, id: &str, provider: Provider, creator: &str) -> Row {
    Row {
        tenant_id: t.to_owned(),
        client_id: c.to_owned(),
        id: id.to_owned(),
        provider: provider as i32,
        auth_method: method_of(provider) as i32,
        state: State::PendingAuthorization as i32,
        display_name: String::new(),
        external_account_id: String::new(),
        external_account_name: String::new(),
        base_url: String::new(),
        scopes: String::new(),
        config: "{}".into(),
        secret_hint: String::new(),
        sealed: String::new(),
        access_expires_at_us: None,
        last_error: String::new(),
        creator: creator.to_owned(),
        request_id: None,
        revision: 0,
        created_at_us: 0,
        updated_at_us: 0,
        revoked_at_us: None,
        refresh_lease_until_us: None,
    }
}

#[tonic::async_trait]
impl ConnectionService for ConnectionsApi {
    async fn start_connection_o_auth(
        &self,
        request: Request<pb::StartConnectionOAuthRequest>,
    ) -> Result<Response<pb::StartConnectionOAuthResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::StartConnectionOAuthRequest {
            parent,
            provider,
            connection_id,
            connection,
            display_name,
            scopes,
            return_to,
            request_id: rid,
            config,
        } = request.into_inner();
        let config = config_json(config.as_ref());
        let provider = Provider::try_from(provider).unwrap_or(Provider::Unspecified);
        let mut v = Violations::new();
        if method_of(provider) != Method::Oauth {
            v.add(
                "provider",
                "must be GHL, GOOGLE_CALENDAR or MICROSOFT_CALENDAR",
            );
        }
        if !connection_id.is_empty() && connection.is_empty() {
            if let Err(m) = check_id(&connection_id, 1, 63) {
                v.add("connection_id", m);
            }
        }
        let allowed = &self.connections.config().return_to_allowlist;
        if !return_to.is_empty() && !allowed.iter().any(|a| same_origin_under(&return_to, a)) {
            v.add("return_to", "is not on this platform's allowlist");
        }
        check_ghl_config(provider, &config, "config", &mut v);
        let rid = request_id(&rid)?.map(str::to_owned);
        v.into_result()?;
        let (t, c) = self.client(&parent).await?;
        let row = if !connection.is_empty() {
            let row = self.row(&connection, "connection").await?;
            if (row.tenant_id.as_str(), row.client_id.as_str()) != (t.as_str(), c.as_str()) {
                return Err(Error::invalid("connection", "must be a connection of parent").into());
            }
            if row.provider() != provider {
                return Err(
                    Error::invalid("provider", "differs from the connection's provider").into(),
                );
            }
            row
        } else if let Some(existing) = match &rid {
            Some(r) => self.connections.by_request(&t, &c, r).await?,
            None => None,
        } {
            if existing.provider() != provider {
                return Err(Error::invalid(
                    "request_id",
                    "was used for a connection to another provider",
                )
                .into());
            }
            existing
        } else {
            let id = if connection_id.is_empty() {
                new_id(provider)
            } else {
                connection_id
            };
            let mut row = blank_row(&t, &c, &id, provider, &caller.actor);
            row.display_name = display_name;
            row.request_id = rid;
            row.config = config;
            let row = self.connections.insert(&row).await?;
            self.changed(
                &caller,
                &row,
                "StartConnectionOAuth",
                "iam.connections.create",
            )
            .await;
            row
        };
        let (url, state, expires) = self
            .connections
            .authorization_url(&row, &scopes, &return_to)
            .await?;
        Ok(Response::new(pb::StartConnectionOAuthResponse {
            authorization_url: url,
            state,
            expire_time: Some(timestamp(expires)),
            connection: Some(row.to_pb()),
        }))
    }

    async fn complete_connection_o_auth(
        &self,
        request: Request<pb::CompleteConnectionOAuthRequest>,
    ) -> Result<Response<pb::CompleteConnectionOAuthResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        if req.state.is_empty() {
            return Err(Error::invalid("state", "is required").into());
        }
        // Spent before anything else, so a state works once whatever happens next.
        let Some((t, c, id, verifier, return_to)) =
            self.connections.spend_state(&req.state).await?
        else {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "unknown, expired or already used state: start the connection again",
            )
            .into());
        };
        let row = self
            .connections
            .get(&t, &c, &id)
            .await?
            .ok_or_else(|| Error::not_found("the connection this authorization was for"))?;
        if !req.error.is_empty() || req.code.is_empty() {
            let mut failed = row.clone();
            failed.last_error = if req.error.is_empty() {
                "the provider sent no code".into()
            } else {
                format!("{}: {}", req.error, req.error_description)
            };
            if failed.state() == State::PendingAuthorization {
                let _ = self.connections.save(&failed).await?;
            }
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("the authorization was not granted: {}", failed.last_error),
            )
            .into());
        }
        let row = self.connections.complete(row, &req.code, &verifier).await?;
        tracing::info!(connection = %row.name(), provider = row.provider().as_str_name(), "connection authorized");
        self.changed(
            &caller,
            &row,
            "CompleteConnectionOAuth",
            "iam.connections.create",
        )
        .await;
        Ok(Response::new(pb::CompleteConnectionOAuthResponse {
            connection: Some(row.to_pb()),
            return_to,
        }))
    }

    async fn create_connection(
        &self,
        request: Request<pb::CreateConnectionRequest>,
    ) -> Result<Response<pb::CreateConnectionResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::CreateConnectionRequest {
            parent,
            connection,
            connection_id,
            credential,
            skip_validation,
            request_id: rid,
        } = request.into_inner();
        let connection = connection.unwrap_or_default();
        let credential = credential.unwrap_or_default();
        let provider = Provider::try_from(connection.provider).unwrap_or(Provider::Unspecified);
        let mut v = Violations::new();
        if method_of(provider) != Method::ApiKey {
            v.add(
                "connection.provider",
                "must be an API-key provider (RETELL, TWILIO, OPENROUTER, N8N, STRIPE, PAYPAL); OAuth providers connect with StartConnectionOAuth",
            );
        }
        if !connection_id.is_empty() {
            if let Err(m) = check_id(&connection_id, 1, 63) {
                v.add("connection_id", m);
            }
        }
        if credential.api_key.trim().is_empty() {
            v.add("credential.api_key", "is required");
        }
        if provider == Provider::Twilio && !credential.account_id.starts_with("AC") {
            v.add(
                "credential.account_id",
                "must be the Twilio Account SID (AC...)",
            );
        }
        if provider == Provider::N8n && connection.base_url.is_empty() {
            v.add(
                "connection.base_url",
                "is required for n8n (the instance URL)",
            );
        }
        check_base_url(&connection.base_url, &mut v);
        let rid = request_id(&rid)?.map(str::to_owned);
        v.into_result()?;
        let (t, c) = self.client(&parent).await?;
        if let Some(r) = &rid {
            if let Some(existing) = self.connections.by_request(&t, &c, r).await? {
                return Ok(Response::new(pb::CreateConnectionResponse {
                    connection: Some(existing.to_pb()),
                }));
            }
        }
        if !skip_validation {
            self.connections
                .check_key(provider, &connection.base_url, &credential)
                .await?;
        }
        let id = if connection_id.is_empty() {
            new_id(provider)
        } else {
            connection_id
        };
        let mut row = blank_row(&t, &c, &id, provider, &caller.actor);
        row.state = State::Active as i32;
        row.display_name = connection.display_name;
        row.base_url = connection.base_url.trim_end_matches('/').to_owned();
        row.config = config_json(connection.config.as_ref());
        row.external_account_id = credential.account_id.clone();
        row.secret_hint = hint(&credential.api_key);
        row.request_id = rid;
        let secrets = Secrets {
            api_key: credential.api_key,
            key_id: credential.key_id,
            webhook_secret: credential.webhook_secret,
            ..Secrets::default()
        };
        row.sealed = self.connections.seal(&row.name(), &secrets)?;
        let row = self.connections.insert(&row).await?;
        self.changed(&caller, &row, "CreateConnection", "iam.connections.create")
            .await;
        Ok(Response::new(pb::CreateConnectionResponse {
            connection: Some(row.to_pb()),
        }))
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Result<Response<pb::GetConnectionResponse>, Status> {
        let row = self.row(&request.get_ref().name, "name").await?;
        Ok(Response::new(pb::GetConnectionResponse {
            connection: Some(row.to_pb()),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let pb::ListConnectionsRequest {
            parent,
            page_size,
            page_token,
            provider,
            state,
        } = request.into_inner();
        let (t, c) = names::client(&parent, "parent")?;
        let limit = paging::page_size(page_size)?;
        let after = paging::decode_token(&parent, &page_token)?;
        let mut rows = self
            .connections
            .list(
                &t,
                &c,
                (provider != 0).then_some(provider),
                (state != 0).then_some(state),
                after.as_deref(),
                limit + 1,
            )
            .await?;
        let next_page_token = paging::next_page(&mut rows, limit, &parent, |r| r.id.clone());
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: rows.iter().map(Row::to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_connection(
        &self,
        request: Request<pb::UpdateConnectionRequest>,
    ) -> Result<Response<pb::UpdateConnectionResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::UpdateConnectionRequest {
            connection,
            update_mask,
        } = request.into_inner();
        let connection = connection.unwrap_or_default();
        let mut paths = mask_paths(update_mask.as_ref(), &UPDATE_PATHS)?;
        if paths.is_empty() {
            paths = UPDATE_PATHS.iter().map(|s| s.to_string()).collect();
        }
        let row = self.row(&connection.name, "connection.name").await?;
        if let Some(expected) = expected_revision(&connection.etag, "connection.etag")? {
            if expected != row.revision {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "the connection changed (etag mismatch)",
                )
                .into());
            }
        }
        let mut next = row.clone();
        for path in &paths {
            match path.as_str() {
                "display_name" => next.display_name = connection.display_name.clone(),
                "config" => next.config = config_json(connection.config.as_ref()),
                _ => {}
            }
        }
        let mut v = Violations::new();
        check_ghl_config(row.provider(), &next.config, "connection.config", &mut v);
        // The stored token is an agency's or a location's: that cannot change afterwards.
        if row.state() != State::PendingAuthorization && next.is_ghl_agency() != row.is_ghl_agency()
        {
            v.add(
                "connection.config.user_type",
                "is fixed once authorized; connect again to change it",
            );
        }
        v.into_result()?;
        let saved =
            self.connections.save(&next).await?.ok_or_else(|| {
                Error::new(ErrorKind::Conflict, "the connection changed meanwhile")
            })?;
        self.changed(
            &caller,
            &saved,
            "UpdateConnection",
            "iam.connections.update",
        )
        .await;
        Ok(Response::new(pb::UpdateConnectionResponse {
            connection: Some(saved.to_pb()),
        }))
    }

    async fn revoke_connection(
        &self,
        request: Request<pb::RevokeConnectionRequest>,
    ) -> Result<Response<pb::RevokeConnectionResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::RevokeConnectionRequest { name, etag } = request.into_inner();
        let row = self.row(&name, "name").await?;
        if let Some(expected) = expected_revision(&etag, "etag")? {
            if expected != row.revision {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "the connection changed (etag mismatch)",
                )
                .into());
            }
        }
        let saved = self.revoke(&row).await?;
        self.changed(
            &caller,
            &saved,
            "RevokeConnection",
            "iam.connections.revoke",
        )
        .await;
        Ok(Response::new(pb::RevokeConnectionResponse {
            connection: Some(saved.to_pb()),
        }))
    }

    async fn delete_connection(
        &self,
        request: Request<pb::DeleteConnectionRequest>,
    ) -> Result<Response<pb::DeleteConnectionResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::DeleteConnectionRequest { name, etag } = request.into_inner();
        let mut row = self.row(&name, "name").await?;
        if let Some(expected) = expected_revision(&etag, "etag")? {
            if expected != row.revision {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "the connection changed (etag mismatch)",
                )
                .into());
            }
        }
        if row.state() != State::Revoked {
            row = self.revoke(&row).await?;
        }
        if !self.connections.delete(&row).await? {
            return Err(Error::new(ErrorKind::Conflict, "the connection changed meanwhile").into());
        }
        self.changed(&caller, &row, "DeleteConnection", "iam.connections.delete")
            .await;
        Ok(Response::new(pb::DeleteConnectionResponse {}))
    }
}

impl ConnectionsApi {
    /// Revokes at the provider (best effort), destroys the secrets, keeps the record.
    async fn revoke(&self, row: &Row) -> Result<Row, Error> {
        if row.state() == State::Revoked {
            return Ok(row.clone());
        }
        self.connections.revoke_at_provider(row).await;
        let mut next = row.clone();
        next.state = State::Revoked as i32;
        next.sealed = String::new();
        next.access_expires_at_us = None;
        next.revoked_at_us = Some(now_micros());
        self.connections
            .save(&next)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Conflict, "the connection changed meanwhile"))
    }
}

#[tonic::async_trait]
impl ConnectionCredentialService for ConnectionsApi {
    async fn get_connection_credential(
        &self,
        request: Request<pb::GetConnectionCredentialRequest>,
    ) -> Result<Response<pb::GetConnectionCredentialResponse>, Status> {
        let caller = Caller::of(&request);
        let principal_tenant = Principal::of(&request)?.tenant.clone();
        let pb::GetConnectionCredentialRequest {
            name,
            min_remaining,
            force_refresh,
        } = request.into_inner();
        let row = self.row(&name, "name").await?;
        // The guard checked the permission; the tenant is checked again here because this
        // hands out secrets.
        if principal_tenant != row.tenant_id && principal_tenant != crate::PLATFORM_TENANT {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "the connection is not in the caller's tenant",
            )
            .into());
        }
        let min_remaining = min_remaining
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(DEFAULT_MIN_REMAINING);
        let result = self
            .connections
            .credential(row.clone(), min_remaining, force_refresh)
            .await;
        let event = crate::audit::Event {
            action: "maxai.iam.v1.ConnectionCredentialService/GetConnectionCredential",
            permission: "iam.connections.getCredential",
            resource: &name,
            outcome: if result.is_ok() {
                crate::domain::Outcome::Succeeded
            } else {
                crate::domain::Outcome::Failed
            },
            reason: if force_refresh { "forced refresh" } else { "" },
        };
        self.audit
            .refused(&caller, &row.tenant_id, &event, serde_json::json!({}))
            .await;
        Ok(Response::new(pb::GetConnectionCredentialResponse {
            credential: Some(result?),
        }))
    }
}
