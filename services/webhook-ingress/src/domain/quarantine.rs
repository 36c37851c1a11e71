//! Quarantine: verified webhooks that failed schema validation or normalization. They are stored
//! byte for byte and acknowledged, so the provider stops retrying and nothing is dropped; an
//! operator replays them after a fix.
use serde::{Deserialize, Serialize};

use super::event::Provider;

/// One HTTP header line, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Which stage refused a verified payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuarantineReason {
    SchemaInvalid,
    UnknownEventType,
    NormalizationFailed,
}

impl QuarantineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::SchemaInvalid => "schema_invalid",
            QuarantineReason::UnknownEventType => "unknown_event_type",
            QuarantineReason::NormalizationFailed => "normalization_failed",
        }
    }
    pub fn parse(s: &str) -> Option<QuarantineReason> {
        [
            QuarantineReason::SchemaInvalid,
            QuarantineReason::UnknownEventType,
            QuarantineReason::NormalizationFailed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One JSON Schema validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaError {
    pub instance_path: String,
    pub schema_path: String,
    pub message: String,
}

/// Why a payload is (still) quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineFailure {
    pub reason: QuarantineReason,
    /// For [`QuarantineReason::SchemaInvalid`].
    pub schema_errors: Vec<SchemaError>,
    /// For the other reasons.
    pub error_message: String,
    /// The JSON Schema the payload was validated against.
    pub schema_url: String,
}

/// A payload to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuarantined {
    pub tenant_id: String,
    pub client_id: String,
    pub endpoint_id: String,
    pub provider: Provider,
    /// Body byte for byte.
    pub raw_body: Vec<u8>,
    /// The headers needed to understand and replay the payload (content type, provider event
    /// headers); the caller leaves out anything it must not keep.
    pub headers: Vec<Header>,
    /// When it could be read.
    pub provider_event_type: String,
    /// When it could be read.
    pub provider_event_id: String,
    pub failure: QuarantineFailure,
    pub received_at_us: i64,
}

/// The life cycle of a quarantined event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuarantineState {
    Quarantined,
    Replayed,
}

/// A stored quarantined event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedEvent {
    /// `{quarantined_event}` in `tenants/{tenant}/quarantinedEvents/{quarantined_event}`.
    pub id: String,
    pub entry: NewQuarantined,
    pub state: QuarantineState,
    /// The event a successful replay stored (or found stored).
    pub replayed_event_id: Option<String>,
    pub replayed_at_us: Option<i64>,
    pub updated_at_us: i64,
}

impl QuarantinedEvent {
    /// Key of this entry in a newest-first page (pass it back as `after`).
    pub fn page_key(&self) -> String {
        format!("{}:{}", self.entry.received_at_us, self.id)
    }
}

/// Filters of ListQuarantinedEvents; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineFilter {
    pub client_id: Option<String>,
    pub provider: Option<Provider>,
    pub state: Option<QuarantineState>,
    /// Received at or after (UTC µs).
    pub start_us: Option<i64>,
    /// Received before (UTC µs).
    pub end_us: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in [
            QuarantineReason::SchemaInvalid,
            QuarantineReason::UnknownEventType,
            QuarantineReason::NormalizationFailed,
        ] {
            assert_eq!(QuarantineReason::parse(r.as_str()), Some(r));
        }
    }
}
