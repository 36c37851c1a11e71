//! Canonical events as stored: the CloudEvents attributes the consumers see, plus where the
//! webhook came from.
use serde::{Deserialize, Serialize};

/// CloudEvents `specversion` of every canonical event.
pub const SPEC_VERSION: &str = "1.0";

/// A new platform id: a UUIDv7 in lower-case hex (time-ordered, so B-tree inserts stay local).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A webhook source the platform verifies and normalizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Ghl,
    Retell,
    Twilio,
    Stripe,
    Paypal,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Ghl,
        Provider::Retell,
        Provider::Twilio,
        Provider::Stripe,
        Provider::Paypal,
    ];

    /// The name used in URLs (`/v1/webhooks/{provider}`), in storage and in `CanonicalEvent.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ghl => "ghl",
            Provider::Retell => "retell",
            Provider::Twilio => "twilio",
            Provider::Stripe => "stripe",
            Provider::Paypal => "paypal",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// One normalized provider event: the `maxai.common.v1.CanonicalEvent` fields (`spec_version` is
/// always [`SPEC_VERSION`]; `tenant` and `client` are ids here, not resource names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEvent {
    /// CloudEvents id, derived from the provider event id by the normalizer.
    pub cloud_event_id: String,
    /// CloudEvents source, e.g. "maxai://providers/retell".
    pub source: String,
    /// CloudEvents type from the catalogue, e.g. "voice.call.ended".
    pub event_type: String,
    /// CloudEvents subject, e.g. "calls/call_123".
    pub subject: String,
    /// When the provider says the event happened (UTC µs).
    pub time_us: i64,
    /// The normalized data as JSON text (an object).
    pub data: String,
    pub tenant_id: String,
    pub client_id: String,
    pub provider: Provider,
    /// The provider's own event id; unique per provider across the platform (the normalizer
    /// qualifies ids that are not, e.g. Retell's `call_ended:{call_id}`).
    pub provider_event_id: String,
    /// Events with the same key (a call, a conversation) are delivered in order, per consumer.
    /// Empty: no ordering constraint.
    pub ordering_key: String,
}

/// An event to store together with its outbox rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event: CanonicalEvent,
    /// The webhook endpoint the webhook was resolved to.
    pub endpoint_id: String,
    /// When the gateway received the webhook (UTC µs).
    pub received_at_us: i64,
    /// The quarantined event this one was replayed from.
    pub replayed_from: Option<String>,
    /// Consumers to deliver to ("orchestrator", "billing"): one outbox row each.
    pub consumers: Vec<String>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Platform id: `{event}` in `tenants/{tenant}/events/{event}`.
    pub id: String,
    pub event: CanonicalEvent,
    pub endpoint_id: String,
    pub received_at_us: i64,
    pub replayed_from: Option<String>,
}

impl StoredEvent {
    /// Key of this event in a newest-first page (pass it back as `after`).
    pub fn page_key(&self) -> String {
        format!("{}:{}", self.received_at_us, self.id)
    }
}

/// Which stored event an append refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub tenant_id: String,
    pub id: String,
    pub cloud_event_id: String,
}

/// What appending one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with its outbox rows.
    Stored(EventRef),
    /// The same (provider, provider event id) was stored before: nothing new was written. The
    /// reference is the earlier event's (its tenant may differ if an account moved tenants).
    Duplicate(EventRef),
}

impl Appended {
    pub fn event(&self) -> &EventRef {
        match self {
            Appended::Stored(r) | Appended::Duplicate(r) => r,
        }
    }
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Appended::Duplicate(_))
    }
}

/// Filters of ListEvents; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub client_id: Option<String>,
    pub provider: Option<Provider>,
    pub event_type: Option<String>,
    pub subject: Option<String>,
    pub provider_event_id: Option<String>,
    /// The summary state (see [`crate::domain::EventRecord::delivery_state`]).
    pub delivery_state: Option<crate::domain::DeliveryState>,
    /// Received at or after (UTC µs).
    pub start_us: Option<i64>,
    /// Received before (UTC µs).
    pub end_us: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("GHL"), None);
    }

    #[test]
    fn ids_are_time_ordered_hex() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b);
    }
}
