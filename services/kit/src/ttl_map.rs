//! A bounded in-process map whose entries expire: the caches of verified tokens, decisions,
//! endpoint resolutions and exchanged tokens. Full means start over: refilling is cheap, and
//! the hot path keeps no eviction bookkeeping.
use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

pub struct TtlMap<V> {
    entries: RwLock<HashMap<String, (V, Instant)>>,
    capacity: usize,
}

impl<V: Clone> TtlMap<V> {
    pub fn new(capacity: usize) -> Self {
        TtlMap {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (value, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    /// Keeps `value` under `key` until `until`.
    pub fn insert_until(&self, key: String, value: V, until: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, (value, until));
    }

    /// Keeps `value` under `key` for `ttl`.
    pub fn insert(&self, key: String, value: V, ttl: Duration) {
        self.insert_until(key, value, Instant::now() + ttl);
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (v, _)| keep(v));
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let map = TtlMap::new(2);
        map.insert("a".into(), 1, Duration::from_secs(60));
        map.insert("gone".into(), 2, Duration::ZERO);
        assert_eq!(map.get("a"), Some(1));
        assert_eq!(map.get("gone"), None, "expired");
        map.insert("c".into(), 3, Duration::from_secs(60));
        assert!(map.len() <= 2, "bounded");
        assert_eq!(map.get("c"), Some(3));
        map.retain(|v| *v != 3);
        assert_eq!(map.get("c"), None);
    }
}
