//! The gRPC surface of IAM.
mod names;
pub mod tenants;

pub use tenants::TenantsApi;
