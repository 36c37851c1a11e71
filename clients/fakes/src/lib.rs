//! Faithful fake provider servers for tests and the sandbox.
//!
//! Each fake is an axum server on a loopback port that answers the provider's own paths,
//! parameters and error shapes (as recorded in PROVIDERS.md), records what it received with
//! secrets redacted, and can be told to fail, so adapters are tested over real HTTP.
//!
//! | module | provider |
//! | --- | --- |
//! | [`harness`] | what every fake shares: loopback server, request record, failure injection, webhook delivery |
//! | [`google_oidc`] | Google OAuth 2.0 / OIDC: discovery, authorize, token, JWKS, userinfo, revoke |
//! | [`google_calendar`] | Google Calendar v3: events, freeBusy |
//! | [`microsoft`] | Microsoft identity platform OAuth and Graph calendar |
//! | [`ghl`] | GoHighLevel: OAuth, contacts, notes, opportunities, signed webhooks |
//! | [`retell`] | Retell AI: agents, LLMs, calls, signed call webhooks |
//! | [`twilio`] | Twilio: messages, calls, signed status callbacks and inbound SMS |
//! | [`openrouter`] | OpenRouter: chat completions, models and pricing, generations |
//! | [`n8n`] | n8n public API: workflows, executions, webhook triggers |
#![forbid(unsafe_code)]

pub mod ghl;
pub mod google_calendar;
pub mod google_oidc;
pub mod harness;
pub mod microsoft;
pub mod n8n;
pub mod openrouter;
pub mod retell;
pub mod twilio;

pub use google_oidc::{
    FailureMode, FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser, RecordedRequest,
};
