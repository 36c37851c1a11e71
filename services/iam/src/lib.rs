//! Identity and access management.
//!
//! Today: tenants (agencies, `tenants/{tenant}`, soft-deleted) and their clients (businesses,
//! `tenants/{tenant}/clients/{client}`) over `maxai.iam.v1.TenantService`. Users, roles and
//! assignments, the policy engine, tokens, SSO and the audit trail are the rest of the IAM
//! issue and are not served yet.
//!
//! | module | job |
//! | --- | --- |
//! | [`domain`] | tenant and client model, field rules |
//! | [`store`] | `TenancyStore` trait, its SQL implementation and conformance suite |
//! | [`convert`] | proto ⇄ domain |
//! | [`api`] | the tonic services |
#![forbid(unsafe_code)]

pub mod api;
pub mod convert;
pub mod domain;
pub mod store;

use std::sync::Arc;

use maxai_kit::{
    config::StorageConfig,
    storage::{self, Migrations},
};
use maxai_proto::maxai::iam::v1::{
    client_service_server::ClientServiceServer, tenant_service_server::TenantServiceServer,
};
use sqlx::migrate::Migrator;

/// gRPC services this crate serves, for health, reflection and the gateway.
pub const SERVICE_NAMES: [&str; 2] = ["maxai.iam.v1.TenantService", "maxai.iam.v1.ClientService"];
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
}

impl Servers {
    /// Adds every server to a router.
    pub fn add_to(self, routes: &mut tonic::service::RoutesBuilder) {
        routes.add_service(self.tenants);
        routes.add_service(self.clients);
    }
}

/// Opens storage (running migrations) and returns the gRPC servers.
pub async fn start(
    storage_config: &StorageConfig,
    max_message_bytes: usize,
) -> anyhow::Result<Servers> {
    let db = storage::connect(storage_config, STORAGE_NAME, &MIGRATIONS).await?;
    let store: Arc<dyn store::TenancyStore> = Arc::new(store::SqlIamStore::new(db));
    let api = Arc::new(api::TenantsApi::new(store));
    Ok(Servers {
        tenants: TenantServiceServer::from_arc(api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
        clients: ClientServiceServer::from_arc(api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    })
}
