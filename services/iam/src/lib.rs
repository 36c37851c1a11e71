//! Identity and access management.
//!
//! Today: tenants (agencies, `tenants/{tenant}`, soft-deleted), their clients (businesses,
//! `tenants/{tenant}/clients/{client}`) and users (invited by e-mail); built-in and custom roles, the permission catalogue
//! (read from the contracts) and role assignments scoped to a tenant or one client; and the
//! policy engine answering Authorize / BatchAuthorize with a reason, cached and invalidated on
//! every role or assignment change; and the audit trail: every change above is appended to the
//! tenant's hash chain, listed, verified and purged by `AuditService`; Google sign-in with
//! hosted-domain binding, access tokens (signing keys encrypted at rest, rotated, published as
//! JWKS), refresh tokens with reuse detection and API-key exchange (`AuthService`).
//!
//! | module | job |
//! | --- | --- |
//! | [`domain`] | tenant and client model, field rules |
//! | [`store`] | `TenancyStore` trait, its SQL implementation and conformance suite |
//! | [`convert`] | proto ⇄ domain |
//! | [`policy`] | the policy engine and its decision cache |
//! | [`audit`] | recording to the audit chain, and `AuditService` |
//! | [`sessions`] | refresh-token families: rotation and reuse detection |
//! | [`sso`] | Google sign-in (OIDC code + PKCE) and hosted-domain bindings |
//! | [`tokens`] | signing keys (encrypted at rest, rotated), access-token issue and verify |
//! | [`connections`] | clients' connected provider accounts: OAuth and API keys, sealed, refreshed |
//! | [`api`] | the tonic services |
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod config;
pub mod connections;
pub mod convert;
pub mod domain;
pub mod policy;
pub mod sessions;
pub mod sso;
pub mod store;
pub mod tokens;

use std::sync::Arc;

use maxai_kit::{
    config::StorageConfig,
    shared_state::SharedState,
    storage::{self, Migrations},
    CancellationToken,
};
use maxai_proto::maxai::iam::v1::{
    audit_service_server::AuditServiceServer, auth_service_server::AuthServiceServer,
    authorization_service_server::AuthorizationServiceServer,
    client_service_server::ClientServiceServer,
    connection_credential_service_server::ConnectionCredentialServiceServer,
    connection_service_server::ConnectionServiceServer, role_service_server::RoleServiceServer,
    service_account_service_server::ServiceAccountServiceServer,
    sso_domain_service_server::SsoDomainServiceServer, tenant_service_server::TenantServiceServer,
    user_service_server::UserServiceServer,
};
use sqlx::migrate::Migrator;

/// gRPC services this crate serves, for health, reflection and the gateway.
pub const SERVICE_NAMES: [&str; 11] = [
    "maxai.iam.v1.AuthService",
    "maxai.iam.v1.SsoDomainService",
    "maxai.iam.v1.TenantService",
    "maxai.iam.v1.ClientService",
    "maxai.iam.v1.RoleService",
    "maxai.iam.v1.AuthorizationService",
    "maxai.iam.v1.AuditService",
    "maxai.iam.v1.UserService",
    "maxai.iam.v1.ServiceAccountService",
    "maxai.iam.v1.ConnectionService",
    "maxai.iam.v1.ConnectionCredentialService",
];
/// Storage name: PostgreSQL schema `iam`, SQLite file `iam.db`.
pub const STORAGE_NAME: &str = "iam";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/iam/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/iam/sqlite");

pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// The gRPC servers of IAM.
pub struct Servers {
    pub tenants: TenantServiceServer<api::TenantsApi>,
    pub clients: ClientServiceServer<api::TenantsApi>,
    pub roles: RoleServiceServer<api::AccessApi>,
    pub authorization: AuthorizationServiceServer<api::AccessApi>,
    pub audit: AuditServiceServer<audit::AuditApi>,
    pub users: UserServiceServer<api::UsersApi>,
    pub accounts: ServiceAccountServiceServer<api::AccountsApi>,
    pub auth: AuthServiceServer<api::AuthApi>,
    pub sso_domains: SsoDomainServiceServer<api::SsoDomainsApi>,
    pub connections: ConnectionServiceServer<api::ConnectionsApi>,
    pub credentials: ConnectionCredentialServiceServer<api::ConnectionsApi>,
    /// The signing keys, for verifying tokens in this process.
    pub key_ring: Arc<tokens::KeyRing>,
    /// The policy engine, for authorizing calls in this process.
    pub policy: Arc<policy::PolicyEngine>,
    /// Tenants, for the gateway's per-tenant rate limits in this process.
    pub tenancy: Arc<dyn store::TenancyStore>,
}

impl Servers {
    /// Adds every server to a router.
    pub fn add_to(self, routes: &mut tonic::service::RoutesBuilder) {
        routes.add_service(self.tenants);
        routes.add_service(self.clients);
        routes.add_service(self.roles);
        routes.add_service(self.authorization);
        routes.add_service(self.audit);
        routes.add_service(self.users);
        routes.add_service(self.accounts);
        routes.add_service(self.auth);
        routes.add_service(self.sso_domains);
        routes.add_service(self.connections);
        routes.add_service(self.credentials);
    }
}

/// The operator's tenant and the bootstrap platform admin.
pub const PLATFORM_TENANT: &str = "platform";
pub const BOOTSTRAP_ADMIN: &str = "tenants/platform/users/admin";
/// The identity the platform's services call each other with (`roles/platform-service`).
pub const SERVICE_ACCOUNT: &str = "tenants/platform/serviceAccounts/mesh";

/// Makes sure the platform operator exists (idempotent, safe on every start of every replica).
pub async fn bootstrap_platform_admin(sql: &store::SqlIamStore) -> anyhow::Result<()> {
    use store::{AccessStore, AssignmentFilter, TenancyStore, UserStore};
    if sql.get_tenant(PLATFORM_TENANT).await?.is_none() {
        let t = domain::Tenant {
            id: PLATFORM_TENANT.into(),
            display_name: "Platform operator".into(),
            state: domain::TenantState::Active,
            contact_email: "operator@maxai.local".into(),
            rate_limits: domain::RateLimits::default(),
            audit_retention_secs: domain::DEFAULT_AUDIT_RETENTION_SECS,
            labels: Default::default(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
            deleted_at_us: None,
        };
        sql.create_tenant(&t, Some("bootstrap-tenant")).await?;
    }
    if sql.get_user(PLATFORM_TENANT, "admin").await?.is_none() {
        let user = domain::User {
            tenant_id: PLATFORM_TENANT.into(),
            id: "admin".into(),
            email: "admin@maxai.local".into(),
            display_name: "Platform admin".into(),
            state: domain::UserState::Active,
            google_subject: String::new(),
            hosted_domain: String::new(),
            picture_uri: String::new(),
            last_sign_in_at_us: None,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_user(&user, Some("bootstrap-admin")).await?;
    }
    let filter = AssignmentFilter {
        principal: Some(BOOTSTRAP_ADMIN.into()),
        role: Some("roles/platform-admin".into()),
        scope: Some(String::new()),
        active_at_us: None,
    };
    if sql
        .list_assignments(PLATFORM_TENANT, &filter, None, 1)
        .await?
        .is_empty()
    {
        let a = domain::Assignment {
            tenant_id: PLATFORM_TENANT.into(),
            id: "bootstrap-admin".into(),
            principal: BOOTSTRAP_ADMIN.into(),
            role: "roles/platform-admin".into(),
            scope: String::new(),
            description: "made by maxai on first start".into(),
            expire_at_us: None,
            creator: "system".into(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_assignment(&a, Some("bootstrap-admin")).await?;
    }
    use store::AccountStore;
    if sql.get_account(PLATFORM_TENANT, "mesh").await?.is_none() {
        let account = domain::ServiceAccount {
            tenant_id: PLATFORM_TENANT.into(),
            id: "mesh".into(),
            display_name: "Platform services".into(),
            description: "The identity the platform's own services call each other with".into(),
            disabled: false,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_account(&account, Some("bootstrap-mesh")).await?;
    }
    let filter = AssignmentFilter {
        principal: Some(SERVICE_ACCOUNT.into()),
        role: Some(format!("roles/{}", domain::PLATFORM_SERVICE)),
        scope: Some(String::new()),
        active_at_us: None,
    };
    if sql
        .list_assignments(PLATFORM_TENANT, &filter, None, 1)
        .await?
        .is_empty()
    {
        let a = domain::Assignment {
            tenant_id: PLATFORM_TENANT.into(),
            id: "bootstrap-mesh".into(),
            principal: SERVICE_ACCOUNT.into(),
            role: format!("roles/{}", domain::PLATFORM_SERVICE),
            scope: String::new(),
            description: "made by maxai on first start: service-to-service calls".into(),
            expire_at_us: None,
            creator: "system".into(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_assignment(&a, Some("bootstrap-mesh")).await?;
    }
    Ok(())
}

/// For `maxai token --role`: makes sure `subject` (a user, created active if missing, in an
/// existing tenant) holds `role` on `scope` (the subject's tenant when empty; the platform for
/// `roles/platform-admin`). Idempotent; the grant is audited like any other.
pub async fn ensure_grant(
    storage_config: &StorageConfig,
    subject: &str,
    role: &str,
    scope: Option<&str>,
) -> anyhow::Result<()> {
    use store::{AccessStore, AssignmentFilter, TenancyStore, UserStore};
    let parts: Vec<&str> = subject.split('/').collect();
    let ["tenants", t, "users", u] = parts.as_slice() else {
        anyhow::bail!("--role needs a user subject: tenants/{{tenant}}/users/{{user}}");
    };
    let known_role = match role.strip_prefix("roles/") {
        Some(id) => domain::built_in(id).is_some(),
        None => role.starts_with(&format!("tenants/{t}/roles/")),
    };
    anyhow::ensure!(
        known_role,
        "--role {role} is not a built-in role (roles/...) or one of tenant {t}'s roles"
    );
    let scope = match scope {
        Some(s) => s.to_owned(),
        None if role == "roles/platform-admin" => String::new(),
        None => format!("tenants/{t}"),
    };
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let sql = store::SqlIamStore::new(db);
    anyhow::ensure!(
        sql.get_tenant(t)
            .await?
            .is_some_and(|x| x.state == domain::TenantState::Active),
        "tenant {t} does not exist or is not active; create it first (POST /v1/tenants)"
    );
    if sql.get_user(t, u).await?.is_none() {
        let user = domain::User {
            tenant_id: (*t).into(),
            id: (*u).into(),
            email: format!("{u}@{t}.invalid"),
            display_name: (*u).into(),
            state: domain::UserState::Active,
            google_subject: String::new(),
            hosted_domain: String::new(),
            picture_uri: String::new(),
            last_sign_in_at_us: None,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_user(&user, None).await?;
    }
    let filter = AssignmentFilter {
        principal: Some(subject.into()),
        role: Some(role.into()),
        scope: Some(scope.clone()),
        active_at_us: None,
    };
    if sql.list_assignments(t, &filter, None, 1).await?.is_empty() {
        let a = domain::Assignment {
            tenant_id: (*t).into(),
            id: format!("cli-{}", uuid::Uuid::now_v7().simple()),
            principal: subject.into(),
            role: role.into(),
            scope,
            description: "granted by maxai token --role".into(),
            expire_at_us: None,
            creator: "maxai token".into(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        sql.create_assignment(&a, None).await?;
    }
    Ok(())
}

/// Reloads the key ring when any replica announces a rotation, and every minute (a key's
/// overlap window ends without an announcement).
async fn follow_key_rotations(
    ring: Arc<tokens::KeyRing>,
    shared: &SharedState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut rx = shared
        .notifier
        .subscribe(maxai_kit::auth::KEYS_CHANNEL)
        .await?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    if matches!(msg, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break }
                }
                _ = every.tick() => {}
            }
            if let Err(e) = ring.refresh().await {
                tracing::warn!(error = %e, "could not reload the signing keys");
            }
        }
    });
    Ok(())
}

/// Opens storage (running migrations) and returns the gRPC servers.
pub async fn start(
    storage_config: &StorageConfig,
    config: &config::IamConfig,
    shared: &SharedState,
    max_message_bytes: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<Servers> {
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let key_ring = Arc::new(open_key_ring(db.clone(), storage_config, config).await?);
    follow_key_rotations(key_ring.clone(), shared, shutdown.clone()).await?;
    let sql = Arc::new(store::SqlIamStore::new(db.clone()));
    if config.bootstrap_admin {
        bootstrap_platform_admin(&sql).await?;
    }
    let tenancy: Arc<dyn store::TenancyStore> = sql.clone();
    let tenancy_for_limits = tenancy.clone();
    let access: Arc<dyn store::AccessStore> = sql.clone();
    let policy = policy::PolicyEngine::start(
        access.clone(),
        policy::Principals {
            tenancy: tenancy.clone(),
            users: sql.clone(),
            accounts: sql.clone(),
        },
        shared.notifier.clone(),
        shutdown,
    )
    .await?;
    let users_store: Arc<dyn store::UserStore> = sql.clone();
    let audit_store: Arc<dyn store::AuditStore> = sql.clone();
    let audit = Arc::new(audit::AuditLog::new(audit_store.clone()));
    let accounts_store: Arc<dyn store::AccountStore> = sql.clone();
    let google = Arc::new(sso::GoogleSignIn::new(
        config.google.clone(),
        db.clone(),
        users_store.clone(),
        access.clone(),
    ));
    let refresh = Arc::new(sessions::RefreshTokens::new(
        db.clone(),
        std::time::Duration::from_secs(config.refresh_token_ttl_secs.max(60)),
    ));
    let auth_api = Arc::new(api::AuthApi::new(
        key_ring.clone(),
        refresh,
        accounts_store.clone(),
        tenancy.clone(),
        audit.clone(),
        shared.notifier.clone(),
        google,
    ));
    let sso_api = Arc::new(api::SsoDomainsApi::new(
        db.clone(),
        tenancy.clone(),
        audit.clone(),
        config.google.domain_verification_url.clone(),
    ));
    let accounts_api = Arc::new(api::AccountsApi::new(
        tenancy.clone(),
        accounts_store,
        policy.clone(),
        audit.clone(),
    ));
    let users_api = Arc::new(api::UsersApi::new(
        tenancy.clone(),
        users_store,
        policy.clone(),
        audit.clone(),
    ));
    let access_api = Arc::new(api::AccessApi::new(
        tenancy.clone(),
        access,
        policy.clone(),
        audit.clone(),
    ));
    let master = Arc::new(tokens::MasterKey::for_storage(
        &config.master_key,
        storage_config,
    )?);
    let connections_api = Arc::new(api::ConnectionsApi::new(
        Arc::new(connections::Connections::new(
            db.clone(),
            master,
            config.connections.clone(),
        )),
        tenancy.clone(),
        audit.clone(),
    ));
    let audit_api = Arc::new(audit::AuditApi::new(audit_store, tenancy.clone()));
    let api = Arc::new(api::TenantsApi::new(tenancy, audit, policy.clone()));
    Ok(Servers {
        tenants: TenantServiceServer::from_arc(api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        clients: ClientServiceServer::from_arc(api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        roles: RoleServiceServer::from_arc(access_api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        authorization: AuthorizationServiceServer::from_arc(access_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        audit: AuditServiceServer::from_arc(audit_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        users: UserServiceServer::from_arc(users_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        accounts: ServiceAccountServiceServer::from_arc(accounts_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        auth: AuthServiceServer::from_arc(auth_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        sso_domains: SsoDomainServiceServer::from_arc(sso_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        connections: ConnectionServiceServer::from_arc(connections_api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        credentials: ConnectionCredentialServiceServer::from_arc(connections_api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        key_ring,
        policy,
        tenancy: tenancy_for_limits,
    })
}

/// The platform's signing keys (for `maxai token` and, with enforcement, every service).
pub async fn key_ring(
    storage: &StorageConfig,
    config: &config::IamConfig,
) -> anyhow::Result<tokens::KeyRing> {
    let db = storage::connect(storage, STORAGE_NAME, &MIGRATIONS).await?;
    open_key_ring(db, storage, config).await
}

async fn open_key_ring(
    db: storage::Db,
    storage: &StorageConfig,
    config: &config::IamConfig,
) -> anyhow::Result<tokens::KeyRing> {
    let master = tokens::MasterKey::for_storage(&config.master_key, storage)?;
    let ttl = std::time::Duration::from_secs(config.access_token_ttl_secs.max(1));
    // Keep the cause: "does not open with this master key" is what an operator needs to read.
    tokens::KeyRing::open(db, master, config.issuer.clone(), ttl)
        .await
        .map_err(|e| match e.source {
            Some(cause) => cause.context("opening the signing keys"),
            None => anyhow::anyhow!("opening the signing keys: {}", e.message),
        })
}
