//! What every provider adapter shares, so an adapter crate holds only its provider's paths,
//! payloads and mappings.
//!
//! | module | job |
//! | --- | --- |
//! | [`context`] | the connection a port call acts for: its name parsed and checked against the caller's tenant |
//! | [`credentials`] | the connection's current credential: from IAM's ConnectionCredentialService (cached until near expiry) or fixed (tests) |
//! | [`http`] | provider HTTP calls: per-attempt timeout, retries with exponential backoff and full jitter only for safe calls, `Retry-After` honoured, a circuit breaker per provider and connection, one forced credential refresh on 401 |
//! | [`breaker`] | the circuit breakers |
//! | [`error`] | provider failures mapped to gRPC codes, the provider's message kept in `ErrorInfo` metadata, never a secret |
//! | [`validate`] | request checks shared by ports: E.164 numbers, time ranges |
//! | [`calendar`] | calendar checks and dates both calendar adapters share |
//! | [`money`] | provider prices (decimal text or JSON numbers) into exact `Money` |
#![forbid(unsafe_code)]

pub mod breaker;
pub mod calendar;
pub mod context;
pub mod credentials;
pub mod durable_cache;
pub mod error;
pub mod http;
pub mod money;
pub mod validate;

pub use context::Connection;
pub use credentials::{CredentialSource, IamCredentials, StaticCredentials};
pub use durable_cache::SqlCache;
pub use error::ProviderError;
pub use http::{HttpConfig, ProviderHttp, ProviderResponse, Retry};
