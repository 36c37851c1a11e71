//! `TenantService` and `ClientService`: tenants (agencies) and their clients. Validate → convert → store → map.
use std::sync::Arc;

use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, expected_revision, mask_paths, request_id},
    storage::now_micros,
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, client_service_server::ClientService, tenant_service_server::TenantService,
};
use tonic::{Request, Response, Status};

use super::names;
use crate::audit::AuditLog;
use crate::{
    convert::{
        client_fields, client_state_from_pb, client_to_pb, tenant_fields, tenant_state_from_pb,
        tenant_to_pb,
    },
    domain::{Client, Tenant, TenantState},
    store::TenancyStore,
};

const TENANT_PATHS: &[&str] = &[
    "display_name",
    "contact_email",
    "rate_limits",
    "audit_retention",
    "labels",
];
const CLIENT_PATHS: &[&str] = &[
    "display_name",
    "state",
    "time_zone",
    "website",
    "contact_email",
    "labels",
];

pub struct TenantsApi {
    store: Arc<dyn TenancyStore>,
    audit: Arc<AuditLog>,
    policy: Arc<crate::policy::PolicyEngine>,
}

impl TenantsApi {
    pub fn new(
        store: Arc<dyn TenancyStore>,
        audit: Arc<AuditLog>,
        policy: Arc<crate::policy::PolicyEngine>,
    ) -> Self {
        TenantsApi {
            store,
            audit,
            policy,
        }
    }

    async fn tenant(&self, id: &str) -> Result<Tenant> {
        self.store
            .get_tenant(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("tenant {id}")))
    }

    async fn client(&self, tenant: &str, id: &str) -> Result<Client> {
        self.store
            .get_client(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("client tenants/{tenant}/clients/{id}")))
    }
}

#[tonic::async_trait]
impl TenantService for TenantsApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateTenantRequest {
            tenant,
            tenant_id,
            request_id: rid,
        } = request.into_inner();
        let mut v = Violations::new();
        if let Err(m) = check_id(&tenant_id, 3, 63) {
            v.add("tenant_id", m);
        }
        let tenant = tenant.unwrap_or_default();
        let all: Vec<String> = TENANT_PATHS.iter().map(|s| s.to_string()).collect();
        let f = tenant_fields(&tenant, &all, &mut v);
        v.into_result()?;
        let new = Tenant {
            id: tenant_id,
            display_name: f.display_name,
            state: TenantState::Active,
            contact_email: f.contact_email,
            rate_limits: f.rate_limits,
            audit_retention_secs: f.audit_retention_secs,
            labels: f.labels,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
            deleted_at_us: None,
        };
        let created = self.store.create_tenant(&new, request_id(&rid)?).await?;
        tracing::info!(tenant = %created.id, "tenant created");
        self.audit
            .changed(
                &md,
                &created.id,
                "maxai.iam.v1.TenantService/CreateTenant",
                "iam.tenants.create",
                &format!("tenants/{}", created.id),
                serde_json::json!({"display_name": created.display_name}),
            )
            .await;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_to_pb(&created)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let pb::GetTenantRequest { name } = request.into_inner();
        let t = self.tenant(&names::tenant(&name, "name")?).await?;
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(tenant_to_pb(&t)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let pb::ListTenantsRequest {
            page_size: size,
            page_token,
            state,
        } = request.into_inner();
        let limit = page_size(size)?;
        let filter = if state == 0 {
            None
        } else {
            Some(
                tenant_state_from_pb(state)
                    .ok_or_else(|| Error::invalid("state", "is not a known state"))?,
            )
        };
        let scope = format!("tenants:{state}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_tenants(after.as_deref(), limit + 1, filter)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |t| t.id.clone());
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: rows.iter().map(tenant_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::UpdateTenantResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateTenantRequest {
            tenant,
            update_mask,
        } = request.into_inner();
        let tenant = tenant.ok_or_else(|| Error::invalid("tenant", "is required"))?;
        let id = names::tenant(&tenant.name, "tenant.name")?;
        let expected = expected_revision(&tenant.etag, "tenant.etag")?;
        let paths = mask_paths(update_mask.as_ref(), TENANT_PATHS)?;
        let mut v = Violations::new();
        let f = tenant_fields(&tenant, &paths, &mut v);
        v.into_result()?;
        let current = self.tenant(&id).await?;
        if current.state == TenantState::Deleted {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("tenant {id} is deleted"),
            )
            .into());
        }
        let mut next = current.clone();
        for p in &paths {
            match p.as_str() {
                "display_name" => next.display_name = f.display_name.clone(),
                "contact_email" => next.contact_email = f.contact_email.clone(),
                "rate_limits" => next.rate_limits = f.rate_limits.clone(),
                "audit_retention" => next.audit_retention_secs = f.audit_retention_secs,
                _ => next.labels = f.labels.clone(),
            }
        }
        let updated = self
            .store
            .update_tenant(&next, expected.unwrap_or(current.revision))
            .await?;
        self.audit
            .changed(
                &md,
                &id,
                "maxai.iam.v1.TenantService/UpdateTenant",
                "iam.tenants.update",
                &format!("tenants/{id}"),
                serde_json::json!({"update_mask": paths}),
            )
            .await;
        Ok(Response::new(pb::UpdateTenantResponse {
            tenant: Some(tenant_to_pb(&updated)),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteTenantRequest { name, etag } = request.into_inner();
        let id = names::tenant(&name, "name")?;
        let expected = expected_revision(&etag, "etag")?;
        let current = self.tenant(&id).await?;
        if current.state == TenantState::Deleted {
            return Err(Error::not_found(format!("tenant {id}")).into());
        }
        // Soft delete: the data stays for the retention period; nobody can use the tenant.
        let mut gone = current.clone();
        gone.state = TenantState::Deleted;
        gone.deleted_at_us = Some(now_micros());
        self.store
            .update_tenant(&gone, expected.unwrap_or(current.revision))
            .await?;
        // Every credential of the tenant stops working now, on every replica.
        self.policy.changed().await;
        tracing::info!(tenant = %id, "tenant deleted");
        self.audit
            .changed(
                &md,
                &id,
                "maxai.iam.v1.TenantService/DeleteTenant",
                "iam.tenants.delete",
                &format!("tenants/{id}"),
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteTenantResponse {}))
    }
}

#[tonic::async_trait]
impl ClientService for TenantsApi {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateClientRequest {
            parent,
            client,
            client_id,
            request_id: rid,
        } = request.into_inner();
        let mut v = Violations::new();
        let tenant = names::tenant(&parent, "parent")
            .map_err(|e| {
                v.add(
                    "parent",
                    e.violations
                        .first()
                        .map(|x| x.description.clone())
                        .unwrap_or_default(),
                )
            })
            .ok();
        if let Err(m) = check_id(&client_id, 1, 63) {
            v.add("client_id", m);
        }
        let client = client.unwrap_or_default();
        let all: Vec<String> = CLIENT_PATHS.iter().map(|s| s.to_string()).collect();
        let f = client_fields(&client, &all, &mut v);
        v.into_result()?;
        let new = Client {
            tenant_id: tenant.unwrap_or_default(),
            id: client_id,
            display_name: f.display_name,
            state: f.state,
            time_zone: f.time_zone,
            website: f.website,
            contact_email: f.contact_email,
            labels: f.labels,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let created = self.store.create_client(&new, request_id(&rid)?).await?;
        tracing::info!(tenant = %created.tenant_id, client = %created.id, "client created");
        self.audit
            .changed(
                &md,
                &created.tenant_id,
                "maxai.iam.v1.ClientService/CreateClient",
                "iam.clients.create",
                &format!("tenants/{}/clients/{}", created.tenant_id, created.id),
                serde_json::json!({"display_name": created.display_name}),
            )
            .await;
        Ok(Response::new(pb::CreateClientResponse {
            client: Some(client_to_pb(&created)),
        }))
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::GetClientResponse>, Status> {
        let pb::GetClientRequest { name } = request.into_inner();
        let (t, c) = names::client(&name, "name")?;
        let client = self.client(&t, &c).await?;
        Ok(Response::new(pb::GetClientResponse {
            client: Some(client_to_pb(&client)),
        }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let pb::ListClientsRequest {
            parent,
            page_size: size,
            page_token,
            state,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        let filter = if state == 0 {
            None
        } else {
            Some(
                client_state_from_pb(state)
                    .ok_or_else(|| Error::invalid("state", "is not a known state"))?,
            )
        };
        self.tenant(&tenant).await?;
        let scope = format!("clients:{tenant}:{state}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_clients(&tenant, after.as_deref(), limit + 1, filter)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |c| c.id.clone());
        Ok(Response::new(pb::ListClientsResponse {
            clients: rows.iter().map(client_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_client(
        &self,
        request: Request<pb::UpdateClientRequest>,
    ) -> Result<Response<pb::UpdateClientResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateClientRequest {
            client,
            update_mask,
        } = request.into_inner();
        let client = client.ok_or_else(|| Error::invalid("client", "is required"))?;
        let (t, c) = names::client(&client.name, "client.name")?;
        let expected = expected_revision(&client.etag, "client.etag")?;
        let paths = mask_paths(update_mask.as_ref(), CLIENT_PATHS)?;
        let mut v = Violations::new();
        let f = client_fields(&client, &paths, &mut v);
        v.into_result()?;
        let current = self.client(&t, &c).await?;
        let mut next = current.clone();
        for p in &paths {
            match p.as_str() {
                "display_name" => next.display_name = f.display_name.clone(),
                "state" => next.state = f.state,
                "time_zone" => next.time_zone = f.time_zone.clone(),
                "website" => next.website = f.website.clone(),
                "contact_email" => next.contact_email = f.contact_email.clone(),
                _ => next.labels = f.labels.clone(),
            }
        }
        let updated = self
            .store
            .update_client(&next, expected.unwrap_or(current.revision))
            .await?;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ClientService/UpdateClient",
                "iam.clients.update",
                &format!("tenants/{t}/clients/{c}"),
                serde_json::json!({"update_mask": paths}),
            )
            .await;
        Ok(Response::new(pb::UpdateClientResponse {
            client: Some(client_to_pb(&updated)),
        }))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteClientRequest { name, etag } = request.into_inner();
        let (t, c) = names::client(&name, "name")?;
        let expected = expected_revision(&etag, "etag")?;
        self.store.delete_client(&t, &c, expected).await?;
        tracing::info!(tenant = %t, client = %c, "client deleted");
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.ClientService/DeleteClient",
                "iam.clients.delete",
                &format!("tenants/{t}/clients/{c}"),
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}
