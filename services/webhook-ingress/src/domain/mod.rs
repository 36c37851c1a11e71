//! What the webhook store holds, as plain values: no IO here.
//!
//! | module | holds |
//! | --- | --- |
//! | [`event`] | providers, canonical events, what appending them reports, event filters |
//! | [`delivery`] | outbox rows: claimed deliveries, their outcomes, dead letters, retry backoff |
//! | [`quarantine`] | verified payloads that failed validation or normalization |
//! | [`endpoint`] | provider accounts of clients, how webhooks resolve to them, secret versions |
//! | [`retention`] | per-tenant retention settings and purge cut-offs |
pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod quarantine;
pub mod retention;

pub use delivery::{
    retry_delay_us, ConsumerDelivery, DeadLetter, DeadLetterFilter, DeadLetterState, Delivery,
    DeliveryAttempt, DeliveryState, EventRecord, Failure, Next, OutboxState, MAX_ATTEMPTS_KEPT,
};
pub use endpoint::{
    Account, ActiveSecret, Endpoint, EndpointFilter, EndpointKey, EndpointUpdate, NewEndpoint,
    NewSecret, ResolvedEndpoint, SecretState, SecretVersion,
};
pub use event::{
    new_id, Appended, CanonicalEvent, EventFilter, EventRef, NewEvent, Provider, StoredEvent,
    SPEC_VERSION,
};
pub use quarantine::{
    Header, NewQuarantined, QuarantineFailure, QuarantineFilter, QuarantineReason, QuarantineState,
    QuarantinedEvent, SchemaError,
};
pub use retention::{Cutoffs, Purged, RetentionSettings};

/// Splits a newest-first page key `"{time_us}:{id}"` (see the `page_key` methods).
pub fn split_time_key(key: &str) -> Option<(i64, &str)> {
    let (t, id) = key.split_once(':')?;
    Some((t.parse().ok()?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_split() {
        assert_eq!(split_time_key("12:abc"), Some((12, "abc")));
        assert_eq!(split_time_key("12:a:b"), Some((12, "a:b")));
        assert_eq!(split_time_key("x:abc"), None);
        assert_eq!(split_time_key("12"), None);
    }
}
