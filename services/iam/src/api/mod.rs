//! The gRPC surface of IAM.
pub mod accounts;
pub mod auth;
pub mod connections;
pub(crate) mod names;
pub mod roles;
pub mod sso_domains;
pub mod tenants;
pub mod users;

pub use accounts::AccountsApi;
pub use auth::AuthApi;
pub use connections::ConnectionsApi;
pub use roles::AccessApi;
pub use sso_domains::SsoDomainsApi;
pub use tenants::TenantsApi;
pub use users::UsersApi;

/// The tenant `id`, when it exists and is active: new users, accounts and the like go nowhere else.
pub(crate) async fn active_tenant(
    tenancy: &dyn crate::store::TenancyStore,
    id: &str,
) -> maxai_kit::Result<crate::domain::Tenant> {
    match tenancy.get_tenant(id).await? {
        Some(t) if t.state == crate::domain::TenantState::Active => Ok(t),
        Some(t) => Err(maxai_kit::Error::new(
            maxai_kit::ErrorKind::PreconditionFailed,
            format!("tenant {id} is {}", t.state.as_str()),
        )),
        None => Err(maxai_kit::Error::not_found(format!("tenant {id}"))),
    }
}
