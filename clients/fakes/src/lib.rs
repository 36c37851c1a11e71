//! Faithful fake provider servers for tests and the sandbox.
//!
//! Each fake is an axum server on a loopback port that answers the provider's own paths,
//! parameters and error shapes (as recorded in PROVIDERS.md), records what it received with
//! secrets redacted, and can be told to fail, so adapters are tested over real HTTP.
//!
//! | module | provider |
//! | --- | --- |
//! | [`google_oidc`] | Google OAuth 2.0 / OIDC: discovery, authorize, token, JWKS, userinfo, revoke |
#![forbid(unsafe_code)]

pub mod google_oidc;

pub use google_oidc::{
    FailureMode, FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser, RecordedRequest,
};
