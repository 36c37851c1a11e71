//! Cache, cross-replica notifications and rate limiting: Redis (fred) in production, in-process
//! memory in the embedded default. Durable state never lives only here.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use fred::{
    clients::SubscriberClient,
    prelude::{
        Builder, Client, ClientLike, Config, EventInterface, Expiration, KeysInterface,
        PubsubInterface,
    },
};
use secrecy::ExposeSecret;
use tokio::sync::broadcast;

use crate::{
    config::StorageConfig,
    rate_limit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter},
};

/// Publish/subscribe of small messages between replicas (invalidations, wake-ups).
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()>;
    /// Messages published on `channel` by any replica (this one included) from now on.
    async fn subscribe(&self, channel: &str) -> anyhow::Result<broadcast::Receiver<String>>;
}

/// A key/value cache with expiry.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<()>;
    /// Sets `key` only when it holds nothing (or only something expired), atomically across
    /// every replica sharing the cache; true when this call set it.
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<bool>;
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
}

/// Keys the memory cache and the memory rate limiter each hold at most.
const MEMORY_CAPACITY: usize = 100_000;

/// Redis keys of rate-limit buckets, after the configured prefix.
const RATE_LIMIT_PREFIX: &str = "ratelimit:";

/// The cache, notifier and rate limiter a process uses.
#[derive(Clone)]
pub struct SharedState {
    pub cache: Arc<dyn Cache>,
    pub notifier: Arc<dyn Notifier>,
    pub limiter: Arc<dyn RateLimiter>,
    pub backend: &'static str,
}

impl SharedState {
    pub fn memory() -> Self {
        SharedState {
            cache: Arc::new(MemoryCache::new(MEMORY_CAPACITY)),
            notifier: Arc::new(MemoryNotifier::default()),
            limiter: Arc::new(MemoryRateLimiter::new(MEMORY_CAPACITY)),
            backend: "memory",
        }
    }

    /// Redis when `storage.redis_url` is set, else memory.
    pub async fn connect(cfg: &StorageConfig) -> anyhow::Result<Self> {
        let url = cfg.redis_url.expose_secret();
        if url.is_empty() {
            return Ok(Self::memory());
        }
        let redis = Arc::new(Redis::connect(url, &cfg.redis_prefix).await?);
        let limiter = RedisRateLimiter::new(
            redis.client.clone(),
            &format!("{}{RATE_LIMIT_PREFIX}", cfg.redis_prefix),
        );
        Ok(SharedState {
            cache: redis.clone(),
            notifier: redis,
            limiter: Arc::new(limiter),
            backend: "redis",
        })
    }
}

const CHANNEL_CAPACITY: usize = 1024;

/// In-process notifier: one broadcast channel per name.
#[derive(Default)]
pub struct MemoryNotifier {
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl MemoryNotifier {
    fn sender(&self, channel: &str) -> broadcast::Sender<String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .clone()
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()> {
        // No receiver is not an error: nobody is interested yet.
        let _ = self.sender(channel).send(message.to_owned());
        Ok(())
    }
    async fn subscribe(&self, channel: &str) -> anyhow::Result<broadcast::Receiver<String>> {
        Ok(self.sender(channel).subscribe())
    }
}

/// In-process cache bounded to `capacity` entries: expired entries go first, then the oldest.
pub struct MemoryCache {
    capacity: usize,
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl MemoryCache {
    pub fn new(capacity: usize) -> Self {
        MemoryCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl MemoryCache {
    /// Inserts under the caller's lock, making room first: expired entries, then the oldest.
    fn insert(
        &self,
        entries: &mut HashMap<String, (Vec<u8>, Instant)>,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) {
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            let now = Instant::now();
            entries.retain(|_, (_, exp)| *exp > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, exp))| *exp)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl));
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone()))
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<()> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.insert(&mut entries, key, value, ttl);
        Ok(())
    }
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<bool> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries
            .get(key)
            .is_some_and(|(_, exp)| *exp > Instant::now())
        {
            return Ok(false);
        }
        self.insert(&mut entries, key, value, ttl);
        Ok(true)
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        Ok(())
    }
}

/// Redis cache and notifier; every key and channel is prefixed.
pub struct Redis {
    client: Client,
    subscriber: SubscriberClient,
    prefix: String,
    local: Arc<MemoryNotifier>,
}

impl Redis {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config.clone())
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
            .build()?;
        client.init().await?;
        let subscriber = Builder::from_config(config)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
            .build_subscriber_client()?;
        subscriber.init().await?;
        // Resubscribe after a reconnect, so invalidations keep flowing.
        // The returned handle is the spawned task; dropping it does not stop it.
        drop(subscriber.manage_subscriptions());
        let local = Arc::new(MemoryNotifier::default());
        let mut rx = subscriber.message_rx();
        let forward_to = local.clone();
        let strip = prefix.to_owned();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        let channel = msg.channel.to_string();
                        let name = channel.strip_prefix(&strip).unwrap_or(&channel);
                        if let Ok(text) = msg.value.convert::<String>() {
                            let _ = forward_to.publish(name, &text).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "redis subscriber lagged")
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Redis {
            client,
            subscriber,
            prefix: prefix.to_owned(),
            local,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Notifier for Redis {
    async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()> {
        let _: i64 = self.client.publish(self.key(channel), message).await?;
        Ok(())
    }
    async fn subscribe(&self, channel: &str) -> anyhow::Result<broadcast::Receiver<String>> {
        let rx = self.local.subscribe(channel).await?;
        self.subscriber.subscribe(self.key(channel)).await?;
        Ok(rx)
    }
}

#[async_trait]
impl Cache for Redis {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.client.get::<Option<Vec<u8>>, _>(self.key(key)).await?)
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<()> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let _: () = self
            .client
            .set(self.key(key), value, Some(Expiration::PX(ms)), None, false)
            .await?;
        Ok(())
    }
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> anyhow::Result<bool> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set: Option<String> = self
            .client
            .set(
                self.key(key),
                value,
                Some(Expiration::PX(ms)),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let _: i64 = self.client.del(self.key(key)).await?;
        Ok(())
    }
}
