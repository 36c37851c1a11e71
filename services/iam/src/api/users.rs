//! `UserService`: the people of a tenant. Creating one is an invitation by e-mail; the Google
//! account binds at first sign-in.
use std::sync::Arc;

use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, etag, expected_revision, mask_paths, request_id, timestamp},
    Error, Result,
};
use maxai_proto::maxai::iam::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use super::names;
use crate::{
    audit::AuditLog,
    domain::{email_ok, User, UserState},
    policy::PolicyEngine,
    store::{TenancyStore, UserStore},
};

const USER_PATHS: &[&str] = &["display_name", "state"];

pub struct UsersApi {
    tenancy: Arc<dyn TenancyStore>,
    store: Arc<dyn UserStore>,
    policy: Arc<PolicyEngine>,
    audit: Arc<AuditLog>,
}

impl UsersApi {
    pub fn new(
        tenancy: Arc<dyn TenancyStore>,
        store: Arc<dyn UserStore>,
        policy: Arc<PolicyEngine>,
        audit: Arc<AuditLog>,
    ) -> Self {
        UsersApi {
            tenancy,
            store,
            policy,
            audit,
        }
    }

    fn user_name(name: &str, field: &str) -> Result<(String, String)> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["tenants", t, "users", u]
                if check_id(t, 3, 63).is_ok() && check_id(u, 1, 63).is_ok() =>
            {
                Ok((t.to_string(), u.to_string()))
            }
            _ => Err(Error::invalid(
                field,
                "must be a user name of the form tenants/{tenant}/users/{user}",
            )),
        }
    }
}

fn state_to_pb(s: UserState) -> pb::UserState {
    match s {
        UserState::Invited => pb::UserState::Invited,
        UserState::Active => pb::UserState::Active,
        UserState::Suspended => pb::UserState::Suspended,
    }
}

fn state_from_pb(raw: i32) -> Option<UserState> {
    match pb::UserState::try_from(raw).ok()? {
        pb::UserState::Unspecified => None,
        pb::UserState::Invited => Some(UserState::Invited),
        pb::UserState::Active => Some(UserState::Active),
        pb::UserState::Suspended => Some(UserState::Suspended),
    }
}

pub fn user_to_pb(u: &User) -> pb::User {
    let User {
        tenant_id: _,
        id: _,
        email,
        display_name,
        state,
        google_subject,
        hosted_domain,
        picture_uri,
        last_sign_in_at_us,
        revision,
        created_at_us,
        updated_at_us,
    } = u;
    pb::User {
        name: u.name(),
        email: email.clone(),
        display_name: display_name.clone(),
        state: state_to_pb(*state) as i32,
        google_subject: google_subject.clone(),
        hosted_domain: hosted_domain.clone(),
        picture_uri: picture_uri.clone(),
        last_sign_in_time: last_sign_in_at_us.map(timestamp),
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

#[tonic::async_trait]
impl UserService for UsersApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::CreateUserRequest {
            parent,
            user,
            user_id,
            request_id: rid,
        } = request.into_inner();
        let mut v = Violations::new();
        let tenant = names::tenant(&parent, "parent")
            .map_err(|_| v.add("parent", "must be tenants/{tenant}"))
            .ok();
        let user = user.unwrap_or_default();
        let email = user.email.trim().to_lowercase();
        v.check(email_ok(&email), "user.email", "must be an e-mail address");
        v.check(
            user.display_name.len() <= 200,
            "user.display_name",
            "must be at most 200 bytes",
        );
        if !user_id.is_empty() {
            if let Err(m) = check_id(&user_id, 1, 63) {
                v.add("user_id", m);
            }
        }
        v.into_result()?;
        let tenant = tenant.unwrap_or_default();
        super::active_tenant(self.tenancy.as_ref(), &tenant).await?;
        let id = if user_id.is_empty() {
            format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..15])
        } else {
            user_id
        };
        let new = User {
            tenant_id: tenant,
            id,
            email,
            display_name: user.display_name,
            state: UserState::Invited,
            google_subject: String::new(),
            hosted_domain: String::new(),
            picture_uri: String::new(),
            last_sign_in_at_us: None,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let created = self.store.create_user(&new, request_id(&rid)?).await?;
        self.audit
            .changed(
                &md,
                &created.tenant_id,
                "maxai.iam.v1.UserService/CreateUser",
                "iam.users.create",
                &created.name(),
                serde_json::json!({"email": created.email}),
            )
            .await;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(&created)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let pb::GetUserRequest { name } = request.into_inner();
        let (t, u) = Self::user_name(&name, "name")?;
        let user = self
            .store
            .get_user(&t, &u)
            .await?
            .ok_or_else(|| Error::not_found(name))?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let pb::ListUsersRequest {
            parent,
            page_size: size,
            page_token,
            state,
            email_prefix,
        } = request.into_inner();
        let tenant = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        let filter = if state == 0 {
            None
        } else {
            Some(
                state_from_pb(state)
                    .ok_or_else(|| Error::invalid("state", "is not a known state"))?,
            )
        };
        let prefix = email_prefix.to_lowercase();
        let scope = format!("users:{tenant}:{state}:{prefix}");
        let after = decode_token(&scope, &page_token)?;
        let mut rows = self
            .store
            .list_users(&tenant, after.as_deref(), limit + 1, filter, &prefix)
            .await?;
        let next_page_token = next_page(&mut rows, limit, &scope, |u| u.id.clone());
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(user_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::UpdateUserRequest { user, update_mask } = request.into_inner();
        let user = user.ok_or_else(|| Error::invalid("user", "is required"))?;
        let (t, u) = Self::user_name(&user.name, "user.name")?;
        let expected = expected_revision(&user.etag, "user.etag")?;
        let paths = mask_paths(update_mask.as_ref(), USER_PATHS)?;
        let mut next = self
            .store
            .get_user(&t, &u)
            .await?
            .ok_or_else(|| Error::not_found(user.name.clone()))?;
        let current_revision = next.revision;
        let mut v = Violations::new();
        for p in &paths {
            if p == "display_name" {
                v.check(
                    user.display_name.len() <= 200,
                    "user.display_name",
                    "must be at most 200 bytes",
                );
                next.display_name = user.display_name.clone();
            } else {
                // Invited is where a user starts, not a state to go back to.
                match state_from_pb(user.state) {
                    Some(UserState::Active) if next.state == UserState::Invited => {
                        v.add("user.state", "an invited user becomes active by signing in")
                    }
                    Some(s @ (UserState::Active | UserState::Suspended)) => next.state = s,
                    _ => v.add(
                        "user.state",
                        "must be USER_STATE_ACTIVE or USER_STATE_SUSPENDED",
                    ),
                }
            }
        }
        v.into_result()?;
        let updated = self
            .store
            .update_user(&next, expected.unwrap_or(current_revision))
            .await?;
        // Suspending or disabling takes the principal's grants away at once.
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.UserService/UpdateUser",
                "iam.users.update",
                &updated.name(),
                serde_json::json!({"update_mask": paths, "state": updated.state.as_str()}),
            )
            .await;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_pb(&updated)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let md = crate::audit::Caller::of(&request);
        let pb::DeleteUserRequest { name, etag } = request.into_inner();
        let (t, u) = Self::user_name(&name, "name")?;
        self.store
            .delete_user(&t, &u, expected_revision(&etag, "etag")?)
            .await?;
        // Their assignments went with them.
        self.policy.changed().await;
        self.audit
            .changed(
                &md,
                &t,
                "maxai.iam.v1.UserService/DeleteUser",
                "iam.users.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }
}
