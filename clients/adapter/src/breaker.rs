//! Circuit breakers per provider and connection: after `failures` consecutive transient failures
//! (5xx, timeout, connection error, 429) calls fail fast for `cooldown`, then one trial call is let
//! through; its success closes the circuit, its failure opens it again. A broken provider account
//! then costs its callers nothing but a quick UNAVAILABLE, and the provider gets room to recover.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breakers kept at most; past it, closed ones are forgotten first (they hold no information).
const MAX_BREAKERS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the circuit.
    pub failures: u32,
    /// How long an open circuit refuses calls before letting one trial through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is under way; others are refused until it reports.
    HalfOpen,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; the circuit may let a trial through after this long.
    Refused {
        retry_after: Duration,
    },
}

pub struct Breakers {
    config: BreakerConfig,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            states: Mutex::new(HashMap::new()),
        }
    }

    pub fn admit(&self, key: &str) -> Admission {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match states.get(key).copied() {
            None | Some(State::Closed { .. }) => Admission::Allowed,
            Some(State::Open { until }) if now >= until => {
                states.insert(key.to_owned(), State::HalfOpen);
                Admission::Allowed
            }
            Some(State::Open { until }) => Admission::Refused {
                retry_after: until - now,
            },
            Some(State::HalfOpen) => Admission::Refused {
                retry_after: self.config.cooldown,
            },
        }
    }

    /// Reports the outcome of an admitted call; `transient_failure` is false for successes and
    /// for the provider's answers about the request itself (4xx), which say nothing of its health.
    pub fn report(&self, key: &str, transient_failure: bool) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let next = match (states.get(key).copied(), transient_failure) {
            (_, false) => None,
            (Some(State::HalfOpen), true) => Some(self.open()),
            (Some(State::Closed { failures }), true) if failures + 1 >= self.config.failures => {
                Some(self.open())
            }
            (Some(State::Closed { failures }), true) => Some(State::Closed {
                failures: failures + 1,
            }),
            (None, true) if self.config.failures <= 1 => Some(self.open()),
            (None, true) => Some(State::Closed { failures: 1 }),
            // A late report from a call admitted before the circuit opened.
            (Some(State::Open { until }), true) => Some(State::Open { until }),
        };
        match next {
            Some(state) => {
                if states.len() >= MAX_BREAKERS && !states.contains_key(key) {
                    states.retain(|_, s| !matches!(s, State::Closed { .. }));
                }
                states.insert(key.to_owned(), state);
            }
            None => {
                states.remove(key);
            }
        }
    }

    fn open(&self) -> State {
        State::Open {
            until: Instant::now() + self.config.cooldown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(failures: u32, cooldown_ms: u64) -> Breakers {
        Breakers::new(BreakerConfig {
            failures,
            cooldown: Duration::from_millis(cooldown_ms),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_only_for_that_key() {
        let b = breakers(3, 10_000);
        for _ in 0..2 {
            assert_eq!(b.admit("p:a"), Admission::Allowed);
            b.report("p:a", true);
        }
        assert_eq!(b.admit("p:a"), Admission::Allowed);
        b.report("p:a", true);
        assert!(matches!(b.admit("p:a"), Admission::Refused { .. }));
        assert_eq!(b.admit("p:b"), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breakers(2, 10_000);
        b.report("k", true);
        b.report("k", false);
        b.report("k", true);
        assert_eq!(b.admit("k"), Admission::Allowed);
    }

    #[test]
    fn half_open_lets_one_trial_through_which_decides() {
        let b = breakers(1, 20);
        b.report("k", true);
        assert!(matches!(b.admit("k"), Admission::Refused { .. }));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit("k"), Admission::Allowed);
        assert!(
            matches!(b.admit("k"), Admission::Refused { .. }),
            "only one trial"
        );
        b.report("k", true);
        assert!(
            matches!(b.admit("k"), Admission::Refused { .. }),
            "trial failed: open again"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit("k"), Admission::Allowed);
        b.report("k", false);
        assert_eq!(b.admit("k"), Admission::Allowed);
        assert_eq!(b.admit("k"), Admission::Allowed, "closed again");
    }
}
