//! Webhook ingress: verifies, validates, normalizes and stores provider webhooks.
//!
//! Today the crate holds only the first of those steps, [`signature`]: authenticating an
//! inbound webhook from GoHighLevel, Retell, Twilio, Stripe or PayPal against the raw request
//! bytes, before anything parses the body. Validation, normalization, deduplication and
//! storage come later and build on it.
#![forbid(unsafe_code)]

pub mod signature;
