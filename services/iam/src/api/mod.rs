//! The gRPC surface of IAM.
pub mod accounts;
pub(crate) mod names;
pub mod roles;
pub mod tenants;
pub mod users;

pub use accounts::AccountsApi;
pub use roles::AccessApi;
pub use tenants::TenantsApi;
pub use users::UsersApi;
