//! `RoleService` (built-in and custom roles, the permission catalogue, role assignments) and
//! `AuthorizationService` (the policy engine's checks).
use std::{collections::BTreeSet, sync::Arc};

use maxai_kit::{
    auth::Principal,
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, etag, expected_revision, mask_paths, micros, request_id, timestamp},
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, authorization_service_server::AuthorizationService,
    role_service_server::RoleService,
};
use tonic::{Request, Response, Status};

use super::names;
use crate::audit::AuditLog;
use crate::{
    domain::{
        built_in, built_in_roles, catalogue, scope_contains, scope_kind, Assignment, BuiltInRole,
        CustomRole, ScopeKind,
    },
    policy::PolicyEngine,
    store::{AccessStore, AssignmentFilter, TenancyStore},
};

const ROLE_PATHS: &[&str] = &["title", "description", "permissions"];
const ASSIGNMENT_PATHS: &[&str] = &["description", "expire_time"];
const MAX_CHECKS: usize = 100;

pub struct AccessApi {
    tenancy: Arc<dyn TenancyStore>,
    store: Arc<dyn AccessStore>,
    policy: Arc<PolicyEngine>,
    audit: Arc<AuditLog>,
}

impl AccessApi {
    pub fn new(
        tenancy: Arc<dyn TenancyStore>,
        store: Arc<dyn AccessStore>,
        policy: Arc<PolicyEngine>,
        audit: Arc<AuditLog>,
    ) -> Self {
        AccessApi {
            tenancy,
            store,
            policy,
            audit,
        }
    }

    async fn live_tenant(&self, id: &str) -> Result<()> {
        match self.tenancy.get_tenant(id).await? {
            Some(t) if t.state != crate::domain::TenantState::Deleted => Ok(()),
            _ => Err(Error::not_found(format!("tenant {id}"))),
        }
    }

    /// Custom-role name → (tenant, id).
    fn custom_role_name(name: &str, field: &str) -> Result<(String, String)> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["tenants", t, "roles", r]
                if check_id(t, 3, 63).is_ok() && check_id(r, 1, 63).is_ok() =>
            {
                Ok((t.to_string(), r.to_string()))
            }
            _ => Err(Error::invalid(
                field,
                "must be a role name of the form tenants/{tenant}/roles/{role}",
            )),
        }
    }

    fn assignment_name(name: &str, field: &str) -> Result<(String, String)> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["tenants", t, "roleAssignments", a]
                if check_id(t, 3, 63).is_ok() && !a.is_empty() && a.len() <= 64 =>
            {
                Ok((t.to_string(), a.to_string()))
            }
            _ => Err(Error::invalid(
                field,
                "must be of the form tenants/{tenant}/roleAssignments/{assignment}",
            )),
        }
    }

    /// Permissions a custom role may hold: known ones, grantable inside a tenant.
    fn check_permissions(perms: &[String], field: &str, v: &mut Violations) -> BTreeSet<String> {
        let cat = catalogue();
        v.check(
            !perms.is_empty() && perms.len() <= 500,
            field.to_owned(),
            "must hold 1-500 permissions",
        );
        for (i, p) in perms.iter().enumerate() {
            match cat.get(p) {
                None => v.add(format!("{field}[{i}]"), "is not a permission (see ListPermissions)"),
                Some(info) if !info.scopes.contains(&ScopeKind::Tenant) && !info.scopes.contains(&ScopeKind::Client) => {
                    v.add(format!("{field}[{i}]"), "is a platform permission; custom roles hold tenant or client permissions only")
                }
                Some(_) => {}
            }
        }
        perms.iter().cloned().collect()
    }
}

fn scope_to_pb(k: ScopeKind) -> pb::ScopeKind {
    match k {
        ScopeKind::Platform => pb::ScopeKind::Platform,
        ScopeKind::Tenant => pb::ScopeKind::Tenant,
        ScopeKind::Client => pb::ScopeKind::Client,
    }
}

fn built_in_to_pb(r: &BuiltInRole) -> pb::Role {
    let BuiltInRole {
        id,
        title,
        description,
        permissions,
    } = r;
    pb::Role {
        name: format!("roles/{id}"),
        title: (*title).to_owned(),
        description: (*description).to_owned(),
        permissions: permissions.iter().cloned().collect(),
        built_in: true,
        etag: etag(1),
        create_time: None,
        update_time: None,
    }
}

fn custom_to_pb(r: &CustomRole) -> pb::Role {
    let CustomRole {
        tenant_id,
        id,
        title,
        description,
        permissions,
        revision,
        created_at_us,
        updated_at_us,
    } = r;
    pb::Role {
        name: format!("tenants/{tenant_id}/roles/{id}"),
        title: title.clone(),
        description: description.clone(),
        permissions: permissions.iter().cloned().collect(),
        built_in: false,
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

fn assignment_to_pb(a: &Assignment) -> pb::RoleAssignment {
    let Assignment {
        tenant_id: _,
        id: _,
        principal,
        role,
        scope,
        description,
        expire_at_us,
        creator,
        revision,
        created_at_us,
        updated_at_us,
    } = a;
    pb::RoleAssignment {
        name: a.name(),
        principal: principal.clone(),
        role: role.clone(),
        scope: scope.clone(),
        scope_kind: scope_kind(scope)
            .map(scope_to_pb)
            .unwrap_or(pb::ScopeKind::Unspecified) as i32,
        description: description.clone(),
        expire_time: expire_at_us.map(timestamp),
        creator: creator.clone(),
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

#[tonic::async_trait]
impl RoleService for AccessApi {
    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateRoleRequest {
            parent,
            role,
            role_id,
            request_id: rid,
        } = request.into_inner();
        let mut v = Violations::new();
        let tenant = names::tenant(&parent, "parent")
            .map_err(|_| v.add("parent", "must be tenants/{tenant}"))
            .ok();
        if let Err(m) = check_id(&role_id, 1, 63) {
            v.add("role_id", m);
        }
        let pb::Role {
            title,
            description,
            permissions,
            ..
        } = role.unwrap_or_default();
        v.check(
            !title.trim().is_empty() && title.len() <= 100,
            "role.title",
            "must be 1-100 bytes",
        );
        v.check(
            description.len() <= 1000,
            "role.description",
            "must be at most 1000 bytes",
        );
        let permissions = Self::check_permissions(&permissions, "role.permissions", &mut v);
        v.into_result()?;
        let tenant = tenant.unwrap_or_default();
        self.live_tenant(&tenant).await?;
        let new = CustomRole {
            tenant_id: tenant,
            id: role_id,
            title,
            description,
            permissions,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let created = self.store.create_role(&new, request_id(&rid)?).await?;
        self.audit
            .changed(
                &md,
                &created.tenant_id,
                "maxai.iam.v1.RoleService/CreateRole",
                "iam.roles.create",
                &format!("tenants/{}/roles/{}", created.tenant_id, created.id),
                serde_json::json!({"permissions": created.permissions}),
            )
            .await;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(custom_to_pb(&created)),
        }))
    }

    async fn get_role(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        let pb::GetRoleRequest { name } = request.into_inner();
        let role = if let Some(id) = name.strip_prefix("roles/") {
            built_in(id)
                .map(built_in_to_pb)
                .ok_or_else(|| Error::not_found(format!("role {name}")))?
        } else {
            let (t, r) = Self::custom_role_name(&name, "name")?;
            self.store
                .get_role(&t, &r)
                .await?
                .map(|r| custom_to_pb(&r))
                .ok_or_else(|| Error::not_found(format!("role {name}")))?
        };
        Ok(Response::new(pb::GetRoleResponse { role: Some(role) }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let pb::ListRolesRequest {
            parent,
            page_size: size,
            page_token,
            include_built_in,
        } = request.into_inner();
        let limit = page_size(size)?;
        if parent.is_empty() {
            // Five roles: one page.
            return Ok(Response::new(pb::ListRolesResponse {
                roles: built_in_roles().iter().map(built_in_to_pb).collect(),
                next_page_token: String::new(),
            }));
        }
        let tenant = names::tenant(&parent, "parent")?;
        self.live_tenant(&tenant).await?;
        let scope = format!("roles:{tenant}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_roles(&tenant, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |r| r.id.clone());
        let mut roles: Vec<pb::Role> = Vec::new();
        if include_built_in && after.is_none() {
            roles.extend(built_in_roles().iter().map(built_in_to_pb));
        }
        roles.extend(rows.iter().map(custom_to_pb));
        Ok(Response::new(pb::ListRolesResponse {
            roles,
            next_page_token,
        }))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateRoleRequest { role, update_mask } = request.into_inner();
        let role = role.ok_or_else(|| Error::invalid("role", "is required"))?;
        if role.name.starts_with("roles/") {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "built-in roles cannot be changed",
            )
            .into());
        }
        let (t, r) = Self::custom_role_name(&role.name, "role.name")?;
        let expected = expected_revision(&role.etag, "role.etag")?;
        let paths = mask_paths(update_mask.as_ref(), ROLE_PATHS)?;
        let mut v = Violations::new();
        let mut next = self
            .store
            .get_role(&t, &r)
            .await?
            .ok_or_else(|| Error::not_found(format!("role {}", role.name)))?;
        let current_revision = next.revision;
        for p in &paths {
            match p.as_str() {
                "title" => {
                    v.check(
                        !role.title.trim().is_empty() && role.title.len() <= 100,
                        "role.title",
                        "must be 1-100 bytes",
                    );
                    next.title = role.title.clone();
                }
                "description" => {
                    v.check(
                        role.description.len() <= 1000,
                        "role.description",
                        "must be at most 1000 bytes",
                    );
                    next.description = role.description.clone();
                }
                _ => {
                    next.permissions =
                        Self::check_permissions(&role.permissions, "role.permissions", &mut v)
                }
            }
        }
        v.into_result()?;
        let updated = self
            .store
            .update_role(&next, expected.unwrap_or(current_revision))
            .await?;
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.RoleService/UpdateRole",
                "iam.roles.update",
                &format!("tenants/{t}/roles/{r}"),
                serde_json::json!({"update_mask": paths, "permissions": updated.permissions}),
            )
            .await;
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(custom_to_pb(&updated)),
        }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteRoleRequest { name, etag } = request.into_inner();
        if name.starts_with("roles/") {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "built-in roles cannot be deleted",
            )
            .into());
        }
        let (t, r) = Self::custom_role_name(&name, "name")?;
        self.store
            .delete_role(&t, &r, expected_revision(&etag, "etag")?)
            .await?;
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.RoleService/DeleteRole",
                "iam.roles.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let pb::ListPermissionsRequest {
            page_size: size,
            page_token,
            area,
            scope,
        } = request.into_inner();
        let limit = if size == 0 { 1000 } else { page_size(size)? };
        let want_scope = match pb::ScopeKind::try_from(scope)
            .map_err(|_| Error::invalid("scope", "is not a known scope"))?
        {
            pb::ScopeKind::Unspecified => None,
            pb::ScopeKind::Platform => Some(ScopeKind::Platform),
            pb::ScopeKind::Tenant => Some(ScopeKind::Tenant),
            pb::ScopeKind::Client => Some(ScopeKind::Client),
        };
        let token_scope = format!("permissions:{area}:{scope}");
        let after = decode_token(&token_scope, &page_token)?.unwrap_or_default();
        let mut rows: Vec<pb::Permission> = catalogue()
            .values()
            .filter(|p| p.permission > after)
            .filter(|p| area.is_empty() || p.permission.split('.').next() == Some(area.as_str()))
            .filter(|p| want_scope.is_none_or(|s| p.scopes.contains(&s)))
            .take(limit as usize + 1)
            .map(|p| pb::Permission {
                permission: p.permission.clone(),
                description: format!("Needed by {}", p.methods.join(", ")),
                scopes: p.scopes.iter().map(|s| scope_to_pb(*s) as i32).collect(),
                built_in_roles: built_in_roles()
                    .iter()
                    .filter(|r| r.permissions.contains(&p.permission))
                    .map(|r| format!("roles/{}", r.id))
                    .collect(),
            })
            .collect();
        let next_page_token = next_page(&mut rows, limit, &token_scope, |p| p.permission.clone());
        Ok(Response::new(pb::ListPermissionsResponse {
            permissions: rows,
            next_page_token,
        }))
    }

    async fn create_role_assignment(
        &self,
        request: Request<pb::CreateRoleAssignmentRequest>,
    ) -> Result<Response<pb::CreateRoleAssignmentResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateRoleAssignmentRequest {
            parent,
            role_assignment,
            request_id: rid,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let pb::RoleAssignment {
            principal,
            role,
            scope,
            description,
            expire_time,
            ..
        } = role_assignment.unwrap_or_default();
        let mut v = Violations::new();
        let prefix = format!("tenants/{tenant}/");
        let principal_ok = principal
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(kind, id)| {
                matches!(kind, "users" | "serviceAccounts") && !id.is_empty() && !id.contains('/')
            });
        v.check(
            principal_ok,
            "role_assignment.principal",
            format!("must be {prefix}users/{{user}} or {prefix}serviceAccounts/{{account}}"),
        );
        let role_ok = match role.strip_prefix("roles/") {
            Some(id) => built_in(id).is_some(),
            None => role.starts_with(&format!("{prefix}roles/")),
        };
        v.check(
            role_ok,
            "role_assignment.role",
            "must be a built-in role (roles/...) or a role of this tenant",
        );
        let kind = scope_kind(&scope);
        let scope_ok = match kind {
            Some(ScopeKind::Platform) => role == "roles/platform-admin",
            Some(_) => scope_contains(&format!("tenants/{tenant}"), &scope),
            None => false,
        };
        v.check(scope_ok, "role_assignment.scope", "must be this tenant or one of its clients (the platform only for roles/platform-admin)");
        v.check(
            description.len() <= 1000,
            "role_assignment.description",
            "must be at most 1000 bytes",
        );
        let expire_at_us = expire_time.as_ref().map(micros);
        v.check(
            expire_at_us.is_none_or(|t| t > maxai_kit::storage::now_micros()),
            "role_assignment.expire_time",
            "must be in the future",
        );
        v.into_result()?;
        self.live_tenant(&tenant).await?;
        if let Some((t, r)) = role
            .strip_prefix(&prefix)
            .and_then(|_| Self::custom_role_name(&role, "role_assignment.role").ok())
        {
            if self.store.get_role(&t, &r).await?.is_none() {
                return Err(Error::invalid(
                    "role_assignment.role",
                    "names a role that does not exist",
                )
                .into());
            }
        }
        if let Some(ScopeKind::Client) = kind {
            let (t, c) = names::client(&scope, "role_assignment.scope")?;
            if self.tenancy.get_client(&t, &c).await?.is_none() {
                return Err(Error::invalid(
                    "role_assignment.scope",
                    "names a client that does not exist",
                )
                .into());
            }
        }
        let new = Assignment {
            tenant_id: tenant,
            id: uuid::Uuid::new_v4().simple().to_string(),
            principal,
            role,
            scope,
            description,
            expire_at_us,
            creator: String::new(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let created = self
            .store
            .create_assignment(&new, request_id(&rid)?)
            .await?;
        self.policy.changed().await;
        tracing::info!(assignment = %created.name(), role = %created.role, principal = %created.principal, "role assigned");
        self.audit.changed(&md, &created.tenant_id, "maxai.iam.v1.RoleService/CreateRoleAssignment", "iam.roleAssignments.create", &created.name(), serde_json::json!({"principal": created.principal, "role": created.role, "scope": created.scope})).await;
        Ok(Response::new(pb::CreateRoleAssignmentResponse {
            role_assignment: Some(assignment_to_pb(&created)),
        }))
    }

    async fn get_role_assignment(
        &self,
        request: Request<pb::GetRoleAssignmentRequest>,
    ) -> Result<Response<pb::GetRoleAssignmentResponse>, Status> {
        let pb::GetRoleAssignmentRequest { name } = request.into_inner();
        let (t, a) = Self::assignment_name(&name, "name")?;
        let found = self
            .store
            .get_assignment(&t, &a)
            .await?
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Response::new(pb::GetRoleAssignmentResponse {
            role_assignment: Some(assignment_to_pb(&found)),
        }))
    }

    async fn list_role_assignments(
        &self,
        request: Request<pb::ListRoleAssignmentsRequest>,
    ) -> Result<Response<pb::ListRoleAssignmentsResponse>, Status> {
        let pb::ListRoleAssignmentsRequest {
            parent,
            page_size: size,
            page_token,
            principal,
            role,
            scope,
            include_expired,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        // A token is only valid for the same list (same filters).
        let token_scope =
            format!("assignments:{tenant}:{principal}:{role}:{scope}:{include_expired}");
        let filter = AssignmentFilter {
            principal: (!principal.is_empty()).then_some(principal),
            role: (!role.is_empty()).then_some(role),
            scope: (!scope.is_empty()).then_some(scope),
            active_at_us: (!include_expired).then(maxai_kit::storage::now_micros),
        };
        let after = decode_token(&token_scope, &page_token)?;
        let mut rows = self
            .store
            .list_assignments(&tenant, &filter, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &token_scope, |a| a.id.clone());
        Ok(Response::new(pb::ListRoleAssignmentsResponse {
            role_assignments: rows.iter().map(assignment_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_role_assignment(
        &self,
        request: Request<pb::UpdateRoleAssignmentRequest>,
    ) -> Result<Response<pb::UpdateRoleAssignmentResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateRoleAssignmentRequest {
            role_assignment,
            update_mask,
        } = request.into_inner();
        let a = role_assignment.ok_or_else(|| Error::invalid("role_assignment", "is required"))?;
        let (t, id) = Self::assignment_name(&a.name, "role_assignment.name")?;
        let expected = expected_revision(&a.etag, "role_assignment.etag")?;
        let paths = mask_paths(update_mask.as_ref(), ASSIGNMENT_PATHS)?;
        let mut next = self
            .store
            .get_assignment(&t, &id)
            .await?
            .ok_or_else(|| Error::not_found(a.name.clone()))?;
        let current_revision = next.revision;
        let mut v = Violations::new();
        for p in &paths {
            if p == "description" {
                v.check(
                    a.description.len() <= 1000,
                    "role_assignment.description",
                    "must be at most 1000 bytes",
                );
                next.description = a.description.clone();
            } else {
                next.expire_at_us = a.expire_time.as_ref().map(micros);
            }
        }
        v.into_result()?;
        let updated = self
            .store
            .update_assignment(&next, expected.unwrap_or(current_revision))
            .await?;
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.RoleService/UpdateRoleAssignment",
                "iam.roleAssignments.update",
                &a.name,
                serde_json::json!({"update_mask": paths}),
            )
            .await;
        Ok(Response::new(pb::UpdateRoleAssignmentResponse {
            role_assignment: Some(assignment_to_pb(&updated)),
        }))
    }

    async fn delete_role_assignment(
        &self,
        request: Request<pb::DeleteRoleAssignmentRequest>,
    ) -> Result<Response<pb::DeleteRoleAssignmentResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteRoleAssignmentRequest { name, etag } = request.into_inner();
        let (t, id) = Self::assignment_name(&name, "name")?;
        self.store
            .delete_assignment(&t, &id, expected_revision(&etag, "etag")?)
            .await?;
        self.policy.changed().await;
        tracing::info!(assignment = %name, "role assignment removed");
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.RoleService/DeleteRoleAssignment",
                "iam.roleAssignments.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteRoleAssignmentResponse {}))
    }
}

impl AccessApi {
    async fn answer(
        &self,
        caller: &Principal,
        mut check: pb::AuthorizationCheck,
        field: &str,
    ) -> Result<pb::AuthorizationResult> {
        if check.subject.is_empty() {
            check.subject = caller.subject.clone();
        }
        let pb::AuthorizationCheck {
            subject,
            permission,
            resource,
        } = check.clone();
        let mut v = Violations::new();
        v.check(
            catalogue().contains_key(&permission),
            format!("{field}.permission"),
            "is not a permission (see ListPermissions)",
        );
        v.check(
            resource.len() <= 512,
            format!("{field}.resource"),
            "must be at most 512 bytes",
        );
        v.into_result()?;
        if subject != caller.subject
            && !self
                .policy
                .check(&caller.subject, "iam.roleAssignments.list", &resource)
                .await?
                .allowed
        {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("checking another principal needs iam.roleAssignments.list on {resource}"),
            ));
        }
        let d = self.policy.check(&subject, &permission, &resource).await?;
        Ok(pb::AuthorizationResult {
            check: Some(check),
            decision: if d.allowed {
                pb::Decision::Allow
            } else {
                pb::Decision::Deny
            } as i32,
            reason: d.reason,
            role_assignment: d.assignment.unwrap_or_default(),
            role: d.role.unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl AuthorizationService for AccessApi {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let caller = Principal::of(&request)?.clone();
        let pb::AuthorizeRequest { check } = request.into_inner();
        let check = check.ok_or_else(|| Error::invalid("check", "is required"))?;
        Ok(Response::new(pb::AuthorizeResponse {
            result: Some(self.answer(&caller, check, "check").await?),
        }))
    }

    async fn batch_authorize(
        &self,
        request: Request<pb::BatchAuthorizeRequest>,
    ) -> Result<Response<pb::BatchAuthorizeResponse>, Status> {
        let caller = Principal::of(&request)?.clone();
        let pb::BatchAuthorizeRequest { parent, checks } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let mut v = Violations::new();
        v.check(
            !checks.is_empty() && checks.len() <= MAX_CHECKS,
            "checks",
            "must hold 1-100 checks",
        );
        for (i, c) in checks.iter().enumerate() {
            v.check(
                scope_contains(&format!("tenants/{tenant}"), &c.resource),
                format!("checks[{i}].resource"),
                "must be inside parent",
            );
        }
        v.into_result()?;
        let mut results = Vec::with_capacity(checks.len());
        for (i, c) in checks.into_iter().enumerate() {
            results.push(self.answer(&caller, c, &format!("checks[{i}]")).await?);
        }
        Ok(Response::new(pb::BatchAuthorizeResponse { results }))
    }
}
