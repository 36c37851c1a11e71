//! Shared plumbing every MaxAI service uses, so each service crate holds only its domain.
//!
//! | module | job |
//! | --- | --- |
//! | [`auth`] | access-token verification, the per-RPC guard (authn + authz) and its tower layer |
//! | [`config`] | typed config: embedded defaults → file → `MAXAI_…` env, unknown keys rejected |
//! | [`telemetry`] | JSON logs via tracing, correlation ids |
//! | [`error`] | one [`error::ErrorKind`] list mapped to gRPC codes (rich details) and HTTP |
//! | [`server`] | gRPC server assembly: health, reflection, metrics, graceful shutdown |
//! | [`storage`] | sqlx pool by URL scheme (PostgreSQL schema / SQLite file per service), migrations |
//! | [`shared_state`] | cache and pub/sub notification: Redis (fred) or memory |
//! | [`metrics`] | RED metrics per RPC and route, Prometheus exporter |
//! | [`descriptors`] | the contracts' descriptor pool and their `http` / `auth` options |
//! | [`dynamic`] | JSON ⇄ protobuf calls to any RPC through the descriptor pool |
//! | [`paging`] | AIP-158 page sizes and tokens |
//! | [`rate_limit`] | GCRA rate limiting: Redis script or memory |
//! | [`sealed`] | secrets sealed at rest under the master key (AES-256-GCM, owner as associated data) |
//! | [`structs`] | protobuf `Struct` / `Value` ⇄ JSON |
//! | [`ttl_map`] | bounded in-process map with expiring entries, for the hot-path caches |
//! | [`resource`] | etags, timestamps, field masks, request ids, resource ids |
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod descriptors;
pub mod dynamic;
pub mod error;
pub mod metrics;
pub mod paging;
pub mod rate_limit;
pub mod resource;
pub mod sealed;
pub mod server;
pub mod shared_state;
pub mod storage;
pub mod structs;
pub mod telemetry;
pub mod ttl_map;

pub use error::{Error, ErrorKind, Result};
pub use tokio_util::sync::CancellationToken;
