//! The rate limiter against its real backends: in-process memory, and Redis shared by replicas.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
use maxai_kit::{
    rate_limit::{MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter, Verdict},
    shared_state::SharedState,
};
use secrecy::ExposeSecret;

/// A backend's name, two replicas' limiters on it, and the backend (kept so its resources
/// outlive the test).
type Replicas = (
    &'static str,
    Arc<dyn RateLimiter>,
    Arc<dyn RateLimiter>,
    maxai_testkit::Backend,
);

/// Per backend, two replicas' limiters: one process's twice for memory, two separately connected
/// clients for Redis.
async fn replicas() -> Vec<Replicas> {
    let mut all = Vec::new();
    for backend in maxai_testkit::backends().await {
        let one = SharedState::connect(&backend.storage)
            .await
            .expect("shared state");
        let two = if one.backend == "memory" {
            one.clone()
        } else {
            SharedState::connect(&backend.storage)
                .await
                .expect("shared state")
        };
        all.push((one.backend, one.limiter, two.limiter, backend));
    }
    assert!(all.iter().any(|(name, ..)| *name == "memory"));
    all
}

/// A Redis limiter on the test prefix, for looking at its keys; `None` without Redis.
async fn redis_limiter() -> Option<(fred::prelude::Client, RedisRateLimiter)> {
    let backend = maxai_testkit::backends()
        .await
        .into_iter()
        .find(|b| !b.storage.redis_url.expose_secret().is_empty())?;
    let config = Config::from_url(backend.storage.redis_url.expose_secret()).expect("redis url");
    let client = Builder::from_config(config).build().expect("client");
    client.init().await.expect("connect redis");
    let limiter = RedisRateLimiter::new(
        client.clone(),
        &format!("{}ratelimit:", backend.storage.redis_prefix),
    );
    Some((client, limiter))
}

fn allowed(v: &Verdict) -> bool {
    matches!(v, Verdict::Allowed { .. })
}

#[tokio::test]
async fn burst_is_allowed_then_limited_with_an_accurate_retry_after() {
    let rate = Rate {
        per_minute: 600,
        burst: 5,
    };
    for (name, limiter, _, _backend) in replicas().await {
        for expected_remaining in (0..5).rev() {
            let v = limiter.check("tenant:a", rate).await.expect("check");
            assert_eq!(
                v,
                Verdict::Allowed {
                    remaining: expected_remaining
                },
                "{name}"
            );
        }
        match limiter.check("tenant:a", rate).await.expect("check") {
            Verdict::Limited { retry_after } => assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100),
                "{name}: retry after {retry_after:?}"
            ),
            v => panic!("{name}: sixth request {v:?}"),
        }
    }
}

#[tokio::test]
async fn waiting_retry_after_lets_exactly_one_more_through() {
    let rate = Rate {
        per_minute: 1200,
        burst: 2,
    };
    for (name, limiter, _, _backend) in replicas().await {
        assert!(allowed(&limiter.check("k", rate).await.expect("check")));
        assert!(allowed(&limiter.check("k", rate).await.expect("check")));
        let Verdict::Limited { retry_after } = limiter.check("k", rate).await.expect("check")
        else {
            panic!("{name}: third request allowed")
        };
        tokio::time::sleep(retry_after).await;
        assert_eq!(
            limiter.check("k", rate).await.expect("check"),
            Verdict::Allowed { remaining: 0 },
            "{name}: after {retry_after:?}"
        );
        let again = limiter.check("k", rate).await.expect("check");
        assert!(!allowed(&again), "{name}: one token refilled, not two");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_across_replicas_take_exactly_the_burst() {
    const REQUESTS: usize = 200;
    const BURST: u32 = 50;
    let rate = Rate {
        per_minute: 60,
        burst: BURST,
    };
    for (name, one, two, _backend) in replicas().await {
        let start = Instant::now();
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let limiter = if i % 2 == 0 { one.clone() } else { two.clone() };
                tokio::spawn(async move { limiter.check("ip:10.0.0.1", rate).await })
            })
            .collect();
        let mut remaining = Vec::new();
        let mut limited = 0;
        for task in tasks {
            match task.await.expect("task").expect("check") {
                Verdict::Allowed { remaining: r } => remaining.push(r),
                Verdict::Limited { retry_after } => {
                    assert!(retry_after > Duration::ZERO, "{name}");
                    limited += 1;
                }
            }
        }
        let elapsed = start.elapsed();
        // One token refills per emission interval (1 s here) while the test runs.
        let refilled = (elapsed.as_micros() / u128::from(rate.emission_interval_us())) as usize;
        assert!(
            remaining.len() >= BURST as usize && remaining.len() <= BURST as usize + refilled,
            "{name}: {} allowed in {elapsed:?}",
            remaining.len()
        );
        assert_eq!(remaining.len() + limited, REQUESTS, "{name}");
        if refilled == 0 {
            // Each allowed request saw its own state: the counts left are all distinct.
            remaining.sort_unstable();
            assert_eq!(remaining, (0..BURST).collect::<Vec<_>>(), "{name}");
        }
    }
}

#[tokio::test]
async fn keys_are_independent_and_each_has_its_own_rate() {
    let strict = Rate {
        per_minute: 600,
        burst: 2,
    };
    let loose = Rate {
        per_minute: 600,
        burst: 5,
    };
    for (name, limiter, _, _backend) in replicas().await {
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.push(allowed(
                &limiter.check("tenant:strict", strict).await.expect("check"),
            ));
        }
        assert_eq!(verdicts, [true, true, false], "{name}: strict tenant");
        // Same rate, another key: untouched by the first.
        assert_eq!(
            limiter.check("tenant:other", strict).await.expect("check"),
            Verdict::Allowed { remaining: 1 },
            "{name}"
        );
        let mut verdicts = Vec::new();
        for _ in 0..6 {
            verdicts.push(allowed(
                &limiter.check("tenant:loose", loose).await.expect("check"),
            ));
        }
        assert_eq!(
            verdicts,
            [true, true, true, true, true, false],
            "{name}: loose tenant"
        );
    }
}

#[tokio::test]
async fn zero_rates_are_refused() {
    for (name, limiter, _, _backend) in replicas().await {
        for rate in [
            Rate {
                per_minute: 0,
                burst: 5,
            },
            Rate {
                per_minute: 300,
                burst: 0,
            },
        ] {
            assert!(limiter.check("k", rate).await.is_err(), "{name}: {rate:?}");
        }
    }
}

#[test]
fn rates_deserialize_from_config_and_reject_unknown_fields() {
    let rate: Rate = serde_json::from_str(r#"{"per_minute": 300, "burst": 20}"#).expect("rate");
    assert_eq!(
        rate,
        Rate {
            per_minute: 300,
            burst: 20
        }
    );
    assert!(serde_json::from_str::<Rate>(r#"{"per_minute": 300, "burst": 20, "x": 1}"#).is_err());
    assert!(serde_json::from_str::<Rate>(r#"{"per_minute": 0.5, "burst": 20}"#).is_err());
}

/// A fixed sequence at explicit times, worked out by hand from the GCRA formula, gives the same
/// answers from memory and from the Redis script.
#[tokio::test]
async fn memory_and_redis_answer_identically() {
    const MS: u64 = 1_000;
    // Microseconds since the Unix epoch, as the Redis script sees them: big enough that Lua's
    // default number formatting would lose digits.
    const BASE: u64 = 1_750_000_000_000_000;
    let a = Rate {
        per_minute: 240,
        burst: 3,
    }; // T = 250 ms, τ = 500 ms
    let b = Rate {
        per_minute: 180,
        burst: 1,
    }; // T = 333 334 µs, τ = 0
    let ok = |remaining| Verdict::Allowed { remaining };
    let wait = |us| Verdict::Limited {
        retry_after: Duration::from_micros(us),
    };
    let steps = [
        (0, "a", a, ok(2)),
        (0, "a", a, ok(1)),
        (0, "a", a, ok(0)),
        (0, "a", a, wait(250 * MS)),
        (100 * MS, "a", a, wait(150 * MS)),
        (250 * MS, "a", a, ok(0)),
        (1_000 * MS, "a", a, ok(2)),
        (0, "b", b, ok(0)),
        (1, "b", b, wait(333_333)),
        (333_334, "b", b, ok(0)),
        (5_000 * MS, "b", b, ok(0)),
    ];
    let memory = MemoryRateLimiter::new(16);
    let redis = redis_limiter().await;
    for (at, key, rate, expected) in steps {
        let got = memory.check_at(key, rate, BASE + at).expect("memory");
        assert_eq!(got, expected, "memory: {key} at +{at} µs");
        if let Some((_, redis)) = &redis {
            let got = redis.check_at(key, rate, BASE + at).await.expect("redis");
            assert_eq!(got, expected, "redis: {key} at +{at} µs");
        }
    }
}

/// Each Redis bucket expires when it is full again, so idle keys vanish.
#[tokio::test]
async fn redis_buckets_expire_when_full_again() {
    let Some((client, limiter)) = redis_limiter().await else {
        return;
    };
    let rate = Rate {
        per_minute: 600,
        burst: 5,
    };
    let key = limiter.redis_key("tenant:ttl");
    let full = rate.full_refill().as_millis() as i64;
    assert!(allowed(
        &limiter.check("tenant:ttl", rate).await.expect("check")
    ));
    let pttl: i64 = client.pttl(&key).await.expect("pttl");
    assert!(
        pttl > 0 && pttl <= 100,
        "one token refills in 100 ms: {pttl}"
    );
    for _ in 0..4 {
        assert!(allowed(
            &limiter.check("tenant:ttl", rate).await.expect("check")
        ));
    }
    let pttl: i64 = client.pttl(&key).await.expect("pttl");
    assert!(
        pttl > 400 && pttl <= full,
        "five tokens refill in {full} ms: {pttl}"
    );
    // A limited request stores nothing, so it does not extend the expiry.
    assert!(!allowed(
        &limiter.check("tenant:ttl", rate).await.expect("check")
    ));
    let after: i64 = client.pttl(&key).await.expect("pttl");
    assert!(after <= pttl, "{after} > {pttl}");

    let fast = Rate {
        per_minute: 1200,
        burst: 1,
    };
    let short = limiter.redis_key("tenant:short");
    assert!(allowed(
        &limiter.check("tenant:short", fast).await.expect("check")
    ));
    assert_eq!(client.exists::<i64, _>(&short).await.expect("exists"), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        client.exists::<i64, _>(&short).await.expect("exists"),
        0,
        "an idle full bucket leaves no key"
    );
}

#[tokio::test]
async fn memory_limiter_stays_within_its_capacity() {
    let limiter = MemoryRateLimiter::new(100);
    // Slow refill: no bucket is full again during the test, so eviction has to make room.
    let rate = Rate {
        per_minute: 60,
        burst: 10,
    };
    for i in 0..1_000 {
        let v = limiter
            .check(&format!("ip:{i}"), rate)
            .await
            .expect("check");
        assert_eq!(v, Verdict::Allowed { remaining: 9 });
        assert!(limiter.len() <= 100, "{} keys after {i}", limiter.len());
    }
    assert!(limiter.len() > 50, "eviction keeps most keys");
}

#[test]
fn memory_eviction_drops_full_buckets_first_then_those_closest_to_full() {
    let ms = 1_000;
    let rate = Rate {
        per_minute: 60,
        burst: 1,
    }; // a bucket is full again 1 s after its request
    let limiter = MemoryRateLimiter::new(8);
    for i in 0..8 {
        limiter
            .check_at(&format!("k{i}"), rate, i * ms)
            .expect("check");
    }
    assert_eq!(limiter.len(), 8);
    // Every bucket still refilling: the one closest to full (k0) goes.
    limiter.check_at("k8", rate, 10 * ms).expect("check");
    assert_eq!(limiter.len(), 8);
    assert!(!allowed(
        &limiter.check_at("k7", rate, 10 * ms).expect("check")
    ));
    assert!(!allowed(
        &limiter.check_at("k8", rate, 10 * ms).expect("check")
    ));
    assert!(
        allowed(&limiter.check_at("k0", rate, 10 * ms).expect("check")),
        "the evicted key starts again from a full bucket"
    );
    assert_eq!(limiter.len(), 8);
    // Later every bucket is full again: they carry no state and all go, exactly.
    limiter.check_at("late", rate, 2_000 * ms).expect("check");
    assert_eq!(limiter.len(), 1);
    assert!(allowed(
        &limiter.check_at("k7", rate, 2_000 * ms).expect("check")
    ));
}
