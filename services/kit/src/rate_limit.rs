//! Rate limiting with GCRA (the generic cell rate algorithm): Redis in production, so every
//! replica shares one bucket per key; in-process memory in the embedded default.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): when the bucket is full
//! again. With emission interval `T = ceil(1 min / per_minute)` (whole microseconds, rounded up so
//! the limit is never exceeded) and tolerance `τ = T × (burst − 1)`, a request at `now` is
//! allowed when `max(TAT, now) − now ≤ τ`, and then `TAT ← max(TAT, now) + T`. A full bucket
//! (`TAT ≤ now`) lets `burst` requests through at once, then one every `T`. When limited, the
//! next request is allowed in exactly `max(TAT, now) − τ − now` (> 0), and nothing is stored.
//! `remaining` is how many more requests would be allowed right now.
//!
//! Both backends run that same integer-microsecond arithmetic ([`gcra`] here, the Lua script in
//! Redis), so they answer identically for the same sequence of requests and times. A key whose
//! bucket is full again carries no state, so dropping it (Redis `PX` expiry, memory eviction) is
//! exact; that bounds memory per key to one integer that vanishes when idle.
//!
//! Why not the `governor` crate for memory: its keyed limiter takes one `Quota` per limiter while
//! rates here are per tenant (one map per distinct rate), `retain_recent` only drops idle keys and
//! sets no hard cap on the number of keys (a flood of client IPs grows it without limit), and its
//! nanosecond arithmetic differs from what the Redis script can do exactly (Lua numbers are
//! doubles, exact to 2^53 µs), so the two backends could disagree. GCRA over a bounded map is the
//! few lines below.
use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use fred::prelude::{Client, LuaInterface};

/// A rate: `per_minute` requests per minute sustained (tenants' limits are set per minute), `burst` at once. Integer fields (no floats
/// in config). Both must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Refuses a rate that could never allow a request (zero rate or zero burst).
    pub fn validate(self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.per_minute >= 1,
            "rate limit per_minute must be at least 1"
        );
        anyhow::ensure!(self.burst >= 1, "rate limit burst must be at least 1");
        Ok(())
    }

    /// `T`: microseconds between two requests at the sustained rate, rounded up.
    pub fn emission_interval_us(self) -> u64 {
        60_000_000u64.div_ceil(u64::from(self.per_minute.max(1)))
    }

    /// Time for an empty bucket to be full again: `burst × T`.
    pub fn full_refill(self) -> Duration {
        Duration::from_micros(self.emission_interval_us() * u64::from(self.burst))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; `remaining` more would be let through right now.
    Allowed { remaining: u32 },
    /// Refused; the next request on this key is allowed after `retry_after` (never zero).
    Limited { retry_after: Duration },
}

/// Whole seconds for an HTTP `Retry-After` header: rounded up, at least 1.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    retry_after.as_micros().div_ceil(1_000_000).max(1) as u64
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one token from `key`'s bucket at `rate`; atomic under concurrency across every
    /// replica sharing the backend. The bucket is identified by `key` alone: put the scope in it
    /// (`tenant:<id>`, `ip:<addr>`). A key whose rate changes keeps its state.
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Verdict>;
}

/// One GCRA step at `now` (µs) for a bucket whose TAT is `tat` (`None`: full bucket). Returns the
/// verdict and, when allowed, the new TAT to store. Mirrors [`REDIS_SCRIPT`] exactly.
fn gcra(tat: Option<u64>, now: u64, rate: Rate) -> (Verdict, Option<u64>) {
    let t = rate.emission_interval_us();
    let burst = u64::from(rate.burst.max(1));
    let tau = t * (burst - 1);
    let tat = tat.unwrap_or(now).max(now);
    if tat - now > tau {
        let retry_after = Duration::from_micros(tat - tau - now);
        return (Verdict::Limited { retry_after }, None);
    }
    let new_tat = tat + t;
    let remaining = (burst * t - (new_tat - now)) / t;
    let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
    (Verdict::Allowed { remaining }, Some(new_tat))
}

/// In-process limiter bounded to `capacity` keys. A key whose bucket is full again is dropped
/// (exact); if every key is still refilling when a new one arrives, the eighth of keys closest to
/// full is evicted (they get their burst back a little early; bounded memory wins over exactness
/// only under a flood of distinct keys).
pub struct MemoryRateLimiter {
    capacity: usize,
    origin: Instant,
    /// key → TAT in µs since `origin`.
    buckets: Mutex<HashMap<String, u64>>,
}

impl MemoryRateLimiter {
    pub fn new(capacity: usize) -> Self {
        MemoryRateLimiter {
            capacity: capacity.max(1),
            origin: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Keys currently holding state.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`RateLimiter::check`] at an explicit time: `now_us` microseconds on a clock of the
    /// caller's choosing, used consistently for the keys it touches (simulations and
    /// deterministic tests; [`RateLimiter::check`] uses this limiter's monotonic clock).
    pub fn check_at(&self, key: &str, rate: Rate, now_us: u64) -> anyhow::Result<Verdict> {
        rate.validate()?;
        let mut buckets = self.lock();
        let (verdict, new_tat) = gcra(buckets.get(key).copied(), now_us, rate);
        if let Some(new_tat) = new_tat {
            if let Some(tat) = buckets.get_mut(key) {
                *tat = new_tat;
            } else {
                if buckets.len() >= self.capacity {
                    self.make_room(&mut buckets, now_us);
                }
                buckets.insert(key.to_owned(), new_tat);
            }
        }
        Ok(verdict)
    }

    fn make_room(&self, buckets: &mut HashMap<String, u64>, now_us: u64) {
        // Full buckets carry no state: dropping them changes no answer.
        buckets.retain(|_, tat| *tat > now_us);
        if buckets.len() < self.capacity {
            return;
        }
        // Still full: evict the keys closest to full, a batch at a time so the scan is amortised.
        let evict = (self.capacity / 8).max(1);
        let mut tats: Vec<u64> = buckets.values().copied().collect();
        let (_, threshold, _) = tats.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        buckets.retain(|_, tat| *tat > threshold);
        tracing::debug!(
            capacity = self.capacity,
            kept = buckets.len(),
            "rate limiter at capacity: evicted the keys closest to full"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Verdict> {
        self.check_at(key, rate, self.now_us())
    }
}

/// GCRA in Redis, atomic because a script runs alone. `KEYS[1]`: the bucket (its value is the TAT
/// in µs since the Unix epoch on the Redis server's clock); `ARGV`: emission interval µs, burst,
/// and an explicit time in µs or `""` for the server's `TIME`, so replicas' clocks don't matter.
/// The key expires when the bucket is full again. Numbers stay below 2^53, where Lua's doubles
/// are exact; they are written with `%.0f` (Lua's `tostring` keeps only 14 digits) and integer
/// division is corrected after the floating-point quotient. Returns `{1, remaining}` or
/// `{0, retry_after_us}`.
pub const REDIS_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local tau = interval * (burst - 1)
if tat - now > tau then
  return {0, tat - tau - now}
end
local new_tat = tat + interval
local ttl = new_tat - now
local ttl_ms = div(ttl + 999, 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
return {1, div(burst * interval - ttl, interval)}
"#;

/// Redis limiter: one key `<prefix><key>` per bucket, expiring when the bucket is full again.
pub struct RedisRateLimiter {
    client: Client,
    prefix: String,
    /// SHA-1 of [`REDIS_SCRIPT`], from `SCRIPT LOAD` on first use.
    sha: OnceLock<String>,
}

impl RedisRateLimiter {
    pub fn new(client: Client, prefix: &str) -> Self {
        RedisRateLimiter {
            client,
            prefix: prefix.to_owned(),
            sha: OnceLock::new(),
        }
    }

    /// The Redis key holding `key`'s bucket.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// [`RateLimiter::check`] at an explicit time (µs since the Unix epoch) instead of the Redis
    /// server's clock: for simulations and deterministic tests; don't mix both clocks on a key.
    pub async fn check_at(&self, key: &str, rate: Rate, now_us: u64) -> anyhow::Result<Verdict> {
        self.run(key, rate, now_us.to_string()).await
    }

    async fn run(&self, key: &str, rate: Rate, now: String) -> anyhow::Result<Verdict> {
        rate.validate()?;
        let key = self.redis_key(key);
        let args = vec![
            rate.emission_interval_us().to_string(),
            rate.burst.to_string(),
            now,
        ];
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = self.client.script_load(REDIS_SCRIPT).await?;
                self.sha.get_or_init(|| sha).clone()
            }
        };
        let reply: Vec<i64> = match self.client.evalsha(sha, key.clone(), args.clone()).await {
            // The server lost its script cache (restart, failover, another cluster node): EVAL
            // runs the source and caches it there again.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.client.eval(REDIS_SCRIPT, key, args).await?
            }
            other => other?,
        };
        match reply.as_slice() {
            [1, remaining] => Ok(Verdict::Allowed {
                remaining: u32::try_from(*remaining).unwrap_or(u32::MAX),
            }),
            [0, retry_us] if *retry_us > 0 => Ok(Verdict::Limited {
                retry_after: Duration::from_micros(retry_us.unsigned_abs()),
            }),
            other => anyhow::bail!("unexpected rate limit script reply {other:?}"),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Verdict> {
        self.run(key, rate, String::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_follows_the_documented_formula() {
        let rate = Rate {
            per_minute: 600,
            burst: 3,
        };
        // T = 100 ms, τ = 200 ms.
        let (v, tat) = gcra(None, 1_000, rate);
        assert_eq!(v, Verdict::Allowed { remaining: 2 });
        assert_eq!(tat, Some(101_000));
        let (v, tat) = gcra(tat, 1_000, rate);
        assert_eq!(v, Verdict::Allowed { remaining: 1 });
        let (v, tat) = gcra(tat, 1_000, rate);
        assert_eq!(v, Verdict::Allowed { remaining: 0 });
        assert_eq!(tat, Some(301_000));
        let (v, none) = gcra(tat, 51_000, rate);
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: Duration::from_millis(50)
            }
        );
        assert_eq!(none, None);
        let (v, _) = gcra(tat, 101_000, rate);
        assert_eq!(v, Verdict::Allowed { remaining: 0 });
    }

    #[test]
    fn emission_interval_rounds_up() {
        let rate = Rate {
            per_minute: 180,
            burst: 1,
        };
        assert_eq!(rate.emission_interval_us(), 333_334);
        assert_eq!(retry_after_seconds(Duration::from_micros(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
    }
}
