//! Delivery of stored events to their consumers through the outbox.
//!
//! An outbox row is `pending` until its consumer accepts the event (`delivered`) or the retry
//! budget runs out (`dead`, a dead letter). A replayed dead letter is `pending` again with a fresh
//! budget; it stays a dead letter (REPLAYING, then REPLAYED) so operators can follow it.
use super::event::StoredEvent;

/// How many failed attempts are kept per outbox row (DeadLetter.attempts shows the most recent).
pub const MAX_ATTEMPTS_KEPT: i64 = 50;

/// The stored state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<OutboxState> {
        [
            OutboxState::Pending,
            OutboxState::Delivered,
            OutboxState::Dead,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// How far an event got to a consumer, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Pending, no attempt has failed yet (one may be in flight).
    Pending,
    /// Pending after a failed attempt; the next one is scheduled.
    Retrying,
    /// The consumer accepted the event (possibly as a duplicate).
    Delivered,
    /// The retry budget ran out.
    DeadLettered,
}

/// The delivery of one event to one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDelivery {
    /// Outbox row id; also `{dead_letter}` in `tenants/{tenant}/deadLetters/{dead_letter}`
    /// once `dead_letter` is true.
    pub outbox_id: i64,
    pub consumer: String,
    pub state: DeliveryState,
    /// Attempts started, across replays.
    pub attempts: i64,
    pub last_attempt_at_us: Option<i64>,
    /// When pending or retrying.
    pub next_attempt_at_us: Option<i64>,
    pub delivered_at_us: Option<i64>,
    /// The consumer said it had already consumed the event.
    pub duplicate: bool,
    pub last_error: Option<String>,
    /// The row has been a dead letter at some point (it may have been replayed since).
    pub dead_letter: bool,
}

/// A stored event with its deliveries (outbox rows, by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub event: StoredEvent,
    pub deliveries: Vec<ConsumerDelivery>,
}

impl EventRecord {
    /// DEAD_LETTERED if any delivery is, else RETRYING if any is, else PENDING if any is, else
    /// DELIVERED (also for an event without consumers).
    pub fn delivery_state(&self) -> DeliveryState {
        summary(self.deliveries.iter().map(|d| d.state))
    }
}

/// The summary rule of [`EventRecord::delivery_state`].
pub fn summary(states: impl IntoIterator<Item = DeliveryState>) -> DeliveryState {
    let mut worst = DeliveryState::Delivered;
    for s in states {
        let rank = |s: DeliveryState| match s {
            DeliveryState::DeadLettered => 3,
            DeliveryState::Retrying => 2,
            DeliveryState::Pending => 1,
            DeliveryState::Delivered => 0,
        };
        if rank(s) > rank(worst) {
            worst = s;
        }
    }
    worst
}

/// An outbox row leased to one dispatcher replica until `lease_until_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub outbox_id: i64,
    pub consumer: String,
    /// This attempt's number across replays (1-based): `ConsumeEventRequest.attempt`.
    pub attempt: i64,
    /// This attempt's number since the last replay (1-based): compare with the retry budget.
    pub round_attempt: i64,
    pub lease_until_us: i64,
    pub event: StoredEvent,
}

/// One failed attempt, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// gRPC status code name, e.g. "UNAVAILABLE".
    pub status_code: String,
    pub error_message: String,
    pub attempted_at_us: i64,
    pub latency_us: i64,
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (UTC µs).
    RetryAt(i64),
    /// Give up: the row becomes a dead letter.
    Dead,
}

/// One failed attempt, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempt: i64,
    pub attempted_at_us: i64,
    pub latency_us: i64,
    pub status_code: String,
    pub error_message: String,
}

/// The life cycle of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterState {
    /// Delivery gave up; waiting for an operator.
    Failed,
    /// Replayed; delivery in progress.
    Replaying,
    /// Delivered after a replay.
    Replayed,
}

impl DeadLetterState {
    pub(crate) fn of(state: OutboxState) -> DeadLetterState {
        match state {
            OutboxState::Dead => DeadLetterState::Failed,
            OutboxState::Pending => DeadLetterState::Replaying,
            OutboxState::Delivered => DeadLetterState::Replayed,
        }
    }
}

/// An outbox row whose delivery gave up at least once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The outbox row id: `{dead_letter}` in `tenants/{tenant}/deadLetters/{dead_letter}`.
    pub id: i64,
    pub tenant_id: String,
    pub event: StoredEvent,
    pub consumer: String,
    pub state: DeadLetterState,
    /// Attempts started, across replays.
    pub attempt_count: i64,
    /// The failed attempts, oldest first (the most recent [`MAX_ATTEMPTS_KEPT`]).
    pub attempts: Vec<DeliveryAttempt>,
    pub last_error: String,
    /// When delivery first gave up.
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub replayed_at_us: Option<i64>,
}

impl DeadLetter {
    /// Key of this dead letter in a newest-first page (pass it back as `after`).
    pub fn page_key(&self) -> String {
        format!("{}:{}", self.created_at_us, self.id)
    }
}

/// Filters of ListDeadLetters; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub consumer: Option<String>,
    pub state: Option<DeadLetterState>,
    pub event_type: Option<String>,
    /// Created (first gave up) at or after (UTC µs).
    pub start_us: Option<i64>,
    /// Created before (UTC µs).
    pub end_us: Option<i64>,
}

/// Delay before retry number `round_attempt + 1`: exponential from `base_us`, capped at `max_us`,
/// with "full jitter" (`jitter` in [0, 1) picks a point in the upper half of the window, so
/// replicas retrying the same consumer spread out but never retry sooner than half the backoff).
pub fn retry_delay_us(round_attempt: i64, base_us: i64, max_us: i64, jitter: f64) -> i64 {
    let factor = 1i64 << (round_attempt.clamp(1, 62) - 1);
    let window = base_us
        .max(1)
        .checked_mul(factor)
        .unwrap_or(i64::MAX)
        .min(max_us.max(1));
    let half = window / 2;
    let jitter = jitter.clamp(0.0, 1.0);
    half + ((window - half) as f64 * jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_prefers_the_worst_state() {
        use DeliveryState::*;
        assert_eq!(summary([]), Delivered);
        assert_eq!(summary([Delivered, Pending]), Pending);
        assert_eq!(summary([Pending, Retrying, Delivered]), Retrying);
        assert_eq!(summary([Retrying, DeadLettered]), DeadLettered);
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_the_upper_half() {
        let base = 1_000_000;
        let max = 60_000_000;
        assert_eq!(retry_delay_us(1, base, max, 0.0), 500_000);
        assert_eq!(retry_delay_us(1, base, max, 1.0), 1_000_000);
        assert_eq!(retry_delay_us(3, base, max, 0.0), 2_000_000);
        assert_eq!(retry_delay_us(40, base, max, 1.0), max);
        assert_eq!(retry_delay_us(63, base, max, 0.5), 45_000_000);
        let d = retry_delay_us(4, base, max, 0.37);
        assert!((4_000_000..=8_000_000).contains(&d));
    }

    #[test]
    fn outbox_states_round_trip() {
        for s in [
            OutboxState::Pending,
            OutboxState::Delivered,
            OutboxState::Dead,
        ] {
            assert_eq!(OutboxState::parse(s.as_str()), Some(s));
        }
    }
}
