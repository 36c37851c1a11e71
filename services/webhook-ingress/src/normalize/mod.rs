//! Validation and normalization of verified webhooks: from a provider's payload to one
//! canonical event with CloudEvents attributes.
//!
//! The ingress calls these in order, after the signature check:
//!
//! 1. [`parse`] reads the body (JSON; Twilio's `application/x-www-form-urlencoded` as a flat
//!    object of strings) and finds the provider's own event type;
//! 2. [`account_keys`] names the provider account the webhook belongs to, to find its endpoint
//!    (it needs no validation: the endpoint's secret is what verifies the signature);
//! 3. [`validate`] checks the body against the JSON Schema of its (provider, event type), from
//!    `schemas/webhook/<provider>/<event>.json`, embedded in the binary and compiled once;
//! 4. [`normalize`] validates and maps the body to a [`Normalized`] event: CloudEvents id,
//!    source, type (from the catalogue in `docs/events.md`, constants in [`types`]), subject,
//!    time and data, plus the provider event id (deduplication) and the ordering key (in-order
//!    delivery per call or conversation). The caller adds tenant and client from the endpoint
//!    ([`Normalized::into_event`]).
//!
//! What is refused is an [`Invalid`], and nothing verified is ever dropped:
//!
//! | [`Invalid`] | meaning | the caller |
//! | --- | --- | --- |
//! | [`Invalid::Unreadable`] | the body is not JSON (or form data), or not an object | quarantines it (`schema_invalid`) and acknowledges |
//! | [`Invalid::Schema`] | the body fails its schema; each error has a JSON pointer | quarantines it (`schema_invalid`) and acknowledges |
//! | [`Invalid::Unsupported`] | no schema for this event type (not in the catalogue) | quarantines it (`unknown_event_type`) and acknowledges: recorded, visible, replayable once support ships |
//! | [`Invalid::Normalization`] | valid, but cannot be mapped (e.g. an amount out of range) | quarantines it (`normalization_failed`) and acknowledges |
//!
//! [`Invalid::quarantine_failure`] builds what the quarantine stores. Acknowledging stops the
//! provider's retries; an operator replays the quarantined payload after a fix.
//!
//! Money is never a float: see [`Money`].

mod ghl;
mod money;
mod parse;
mod paypal;
mod retell;
mod schema;
mod stripe;
mod twilio;
pub mod types;
mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use sha1::Digest as _;

use crate::domain::{CanonicalEvent, QuarantineFailure, QuarantineReason};
pub use crate::domain::{Provider, SchemaError};
pub use money::{decimal_to_scaled, stripe_exponent, Money, MICROS_PER_UNIT};
pub use parse::{account_keys, parse, AccountKeys, Parsed};
pub use schema::{schema, schemas, validate, SchemaInfo, MAX_ERRORS};

/// A webhook event, normalized: the CloudEvents attributes plus what the store needs to
/// deduplicate and order it. Tenant and client come from the resolved endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// CloudEvents `id`: a UUIDv5 of `"<provider>:<provider_event_id>"` ([`cloud_event_id`]), so
    /// the same provider event always gets the same id.
    pub id: String,
    /// CloudEvents `source`: `maxai://providers/<provider>`.
    pub source: String,
    /// CloudEvents `type` from the catalogue ([`types`]), e.g. `voice.call.ended`.
    pub event_type: String,
    /// CloudEvents `subject`: the provider object, e.g. `calls/<call_id>`.
    pub subject: String,
    /// When the provider says the event happened (UTC); `received_at` when it does not say.
    pub time: SystemTime,
    /// The normalized data (a JSON object), documented per type in `docs/events.md`. It never
    /// holds the raw payload, which the store keeps separately.
    pub data: serde_json::Value,
    pub provider: Provider,
    /// The provider's own event type, e.g. `call_ended` or `invoice.paid`.
    pub provider_event_type: String,
    /// The provider's event id, unique per provider across the platform: the same event
    /// delivered again has the same id (e.g. `evt_…`, `WH-…`, `call_ended:<call_id>`,
    /// `<MessageSid>:<MessageStatus>`).
    pub provider_event_id: String,
    /// Events with the same key (a call, a conversation, a subscription) are delivered in order.
    pub ordering_key: String,
}

impl Normalized {
    /// [`Self::time`] in microseconds since the Unix epoch (0 before it).
    pub fn time_us(&self) -> i64 {
        system_time_us(self.time)
    }

    /// The event to store, for the tenant and client of the resolved endpoint.
    pub fn into_event(self, tenant_id: &str, client_id: &str) -> CanonicalEvent {
        CanonicalEvent {
            cloud_event_id: self.id,
            source: self.source,
            event_type: self.event_type,
            subject: self.subject,
            time_us: system_time_us(self.time),
            data: self.data.to_string(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            provider: self.provider,
            provider_event_id: self.provider_event_id,
            ordering_key: self.ordering_key,
        }
    }
}

fn system_time_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Why a verified payload was not normalized. `Display` names fields and schemas, never the
/// values in the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The body is not JSON (or, for Twilio, form data), or its top level is not an object.
    #[error("unreadable body: {message}")]
    Unreadable { message: String },
    /// The provider event type has no schema: it is not in the catalogue.
    #[error("unsupported {} event type {event_type:?}", provider.as_str())]
    Unsupported {
        provider: Provider,
        event_type: String,
    },
    /// The body fails the schema of its event type (or has no event type at all, in which case
    /// `schema_url` is empty). Every error carries the JSON pointer of the offending field.
    #[error("{}", schema_summary(schema_url, errors))]
    Schema {
        schema_url: String,
        errors: Vec<SchemaError>,
    },
    /// The body passed its schema but could not be mapped (an out-of-range amount or time).
    #[error("cannot normalize: {message}")]
    Normalization { message: String },
}

fn schema_summary(schema_url: &str, errors: &[SchemaError]) -> String {
    let what = if schema_url.is_empty() {
        "the payload".to_owned()
    } else {
        format!("the payload fails {schema_url}")
    };
    match errors.first() {
        Some(first) => format!(
            "{what}: {} error(s), first at {:?}: {}",
            errors.len(),
            first.instance_path,
            first.message
        ),
        None => what,
    }
}

impl Invalid {
    /// The quarantine reason for this failure.
    pub fn quarantine_reason(&self) -> QuarantineReason {
        match self {
            Invalid::Unreadable { .. } | Invalid::Schema { .. } => QuarantineReason::SchemaInvalid,
            Invalid::Unsupported { .. } => QuarantineReason::UnknownEventType,
            Invalid::Normalization { .. } => QuarantineReason::NormalizationFailed,
        }
    }

    /// What the quarantine stores about this failure. An unreadable body is reported as one
    /// schema error at the document root (`""`).
    pub fn quarantine_failure(&self) -> QuarantineFailure {
        let reason = self.quarantine_reason();
        match self {
            Invalid::Schema { schema_url, errors } => QuarantineFailure {
                reason,
                schema_errors: errors.clone(),
                error_message: String::new(),
                schema_url: schema_url.clone(),
            },
            Invalid::Unreadable { message } => QuarantineFailure {
                reason,
                schema_errors: vec![SchemaError {
                    instance_path: String::new(),
                    schema_path: String::new(),
                    message: message.clone(),
                }],
                error_message: self.to_string(),
                schema_url: String::new(),
            },
            Invalid::Unsupported { .. } | Invalid::Normalization { .. } => QuarantineFailure {
                reason,
                schema_errors: Vec::new(),
                error_message: self.to_string(),
                schema_url: String::new(),
            },
        }
    }

    pub(crate) fn normalization(message: impl Into<String>) -> Invalid {
        Invalid::Normalization {
            message: message.into(),
        }
    }
}

/// CloudEvents `source` of a provider's events.
pub fn source(provider: Provider) -> String {
    format!("maxai://providers/{}", provider.as_str())
}

/// Namespace of the UUIDv5 CloudEvents ids (a fixed random UUID; changing it changes every id).
pub const CLOUD_EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0xf9a6_72ba_62ba_400c_b577_0431_71be_894e);

/// The CloudEvents id of a provider event: UUIDv5 (RFC 9562, SHA-1) in
/// [`CLOUD_EVENT_ID_NAMESPACE`] of `"<provider>:<provider_event_id>"`, hyphenated lower case.
pub fn cloud_event_id(provider: Provider, provider_event_id: &str) -> String {
    uuid_v5(
        &CLOUD_EVENT_ID_NAMESPACE,
        &format!("{}:{provider_event_id}", provider.as_str()),
    )
    .hyphenated()
    .to_string()
}

fn uuid_v5(namespace: &uuid::Uuid, name: &str) -> uuid::Uuid {
    let mut hasher = sha1::Sha1::new();
    hasher.update(namespace.as_bytes());
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// What a provider mapping produces; [`normalize`] adds the id and source.
pub(crate) struct Mapped {
    pub event_type: &'static str,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub data: serde_json::Value,
    pub provider_event_id: String,
    pub ordering_key: String,
}

/// Validates `parsed` against its schema ([`validate`]) and maps it to the canonical event.
///
/// `received_at` is the event's time when the provider gives none. The result depends only on
/// the body and `received_at`, so replaying a quarantined payload gives the same event.
pub fn normalize(
    provider: Provider,
    parsed: &Parsed,
    received_at: SystemTime,
) -> Result<Normalized, Invalid> {
    validate(provider, parsed)?;
    let received_at = to_utc(received_at);
    let mapped = match provider {
        Provider::Ghl => ghl::normalize(parsed, received_at),
        Provider::Retell => retell::normalize(parsed, received_at),
        Provider::Twilio => twilio::normalize(parsed, received_at),
        Provider::Stripe => stripe::normalize(parsed, received_at),
        Provider::Paypal => paypal::normalize(parsed, received_at),
    }?;
    Ok(Normalized {
        id: cloud_event_id(provider, &mapped.provider_event_id),
        source: source(provider),
        event_type: mapped.event_type.to_owned(),
        subject: mapped.subject,
        time: from_utc(mapped.time),
        data: mapped.data,
        provider,
        provider_event_type: parsed.event_type.clone(),
        provider_event_id: mapped.provider_event_id,
        ordering_key: mapped.ordering_key,
    })
}

fn to_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

fn from_utc(t: DateTime<Utc>) -> SystemTime {
    match u64::try_from(t.timestamp_micros()) {
        Ok(us) => UNIX_EPOCH + Duration::from_micros(us),
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v5_matches_the_rfc_construction() {
        // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
        let dns = uuid::Uuid::from_u128(0x6ba7_b810_9dad_11d1_80b4_00c0_4fd4_30c8);
        assert_eq!(
            uuid_v5(&dns, "python.org").hyphenated().to_string(),
            "886313e1-3b8a-5372-9b90-0c9aee199e5d"
        );
    }

    #[test]
    fn cloud_event_ids_are_stable_and_provider_scoped() {
        let a = cloud_event_id(Provider::Stripe, "evt_1");
        assert_eq!(a, cloud_event_id(Provider::Stripe, "evt_1"));
        assert_ne!(a, cloud_event_id(Provider::Stripe, "evt_2"));
        assert_ne!(a, cloud_event_id(Provider::Paypal, "evt_1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5", "version nibble");
    }

    #[test]
    fn quarantine_reasons_follow_the_failure() {
        let unsupported = Invalid::Unsupported {
            provider: Provider::Ghl,
            event_type: "NoteCreate".into(),
        };
        assert_eq!(
            unsupported.quarantine_reason(),
            QuarantineReason::UnknownEventType
        );
        let schema = Invalid::Schema {
            schema_url: "maxai://schemas/webhook/ghl/ContactCreate.json".into(),
            errors: vec![SchemaError {
                instance_path: "/id".into(),
                schema_path: "/required".into(),
                message: "\"id\" is a required property".into(),
            }],
        };
        let failure = schema.quarantine_failure();
        assert_eq!(failure.reason, QuarantineReason::SchemaInvalid);
        assert_eq!(failure.schema_errors.len(), 1);
        assert!(schema.to_string().contains("\"/id\""));
        let unreadable = Invalid::Unreadable {
            message: "expected value at line 1 column 1".into(),
        }
        .quarantine_failure();
        assert_eq!(unreadable.reason, QuarantineReason::SchemaInvalid);
        assert_eq!(unreadable.schema_errors[0].instance_path, "");
        assert_eq!(
            Invalid::normalization("x").quarantine_reason(),
            QuarantineReason::NormalizationFailed
        );
    }

    #[test]
    fn times_round_trip_through_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(from_utc(to_utc(t)), t);
        assert_eq!(system_time_us(t), 1_700_000_000_123_456);
    }
}
