//! How long a tenant's webhook records are kept.

/// Retention settings of one tenant (a singleton); `None` means the platform default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub tenant_id: String,
    pub event_retention_secs: Option<i64>,
    pub quarantine_retention_secs: Option<i64>,
    pub dead_letter_retention_secs: Option<i64>,
    /// 0 while never stored; +1 with every change: the etag.
    pub revision: i64,
    pub updated_at_us: i64,
}

/// What a purge removes, as absolute times (UTC µs): records older than these go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Events received before this, once no delivery is pending...
    pub events_before_us: i64,
    /// ...and no dead letter of theirs changed at or after this.
    pub dead_letters_before_us: i64,
    /// Quarantined events received before this.
    pub quarantine_before_us: i64,
}

impl Cutoffs {
    /// Cut-offs for `now_us` under retention periods in seconds.
    pub fn at(now_us: i64, events_secs: i64, dead_letters_secs: i64, quarantine_secs: i64) -> Self {
        let before = |secs: i64| now_us.saturating_sub(secs.saturating_mul(1_000_000));
        Cutoffs {
            events_before_us: before(events_secs),
            dead_letters_before_us: before(dead_letters_secs),
            quarantine_before_us: before(quarantine_secs),
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Events (their outbox rows and attempts went with them).
    pub events: u64,
    pub quarantined: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_count_back_from_now() {
        let c = Cutoffs::at(10_000_000, 1, 2, 3);
        assert_eq!(
            (
                c.events_before_us,
                c.dead_letters_before_us,
                c.quarantine_before_us
            ),
            (9_000_000, 8_000_000, 7_000_000)
        );
        assert_eq!(Cutoffs::at(0, i64::MAX, 0, 0).events_before_us, -i64::MAX);
    }
}
