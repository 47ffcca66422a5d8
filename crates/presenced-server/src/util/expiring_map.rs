//! `ExpiringMap`: a map whose entries expire after a fixed lifetime and
//! which never holds more than a fixed number of them.
//!
//! For state that requests can create faster than it expires (the nonces
//! of shared-secret registration, which anyone may ask for, and UIA
//! sessions): expired entries go first, and when the map is still full the
//! oldest entry makes room for the new one. Every operation is amortised
//! O(1): insertion order is kept in a queue, so neither expiry nor eviction
//! scans the map.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A bounded map of entries that expire `lifetime` after their insertion.
pub(crate) struct ExpiringMap<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Keys in insertion order with their insertion time. A key removed or
    /// re-inserted since leaves a stale item here, recognised by its time
    /// and skipped.
    order: VecDeque<(K, Instant)>,
    lifetime: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> ExpiringMap<K, V> {
    /// At most `capacity` entries (at least one), each for `lifetime`.
    pub(crate) fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            lifetime,
            capacity: capacity.max(1),
        }
    }

    /// Adds `key`, first dropping what has expired and, if the map is still
    /// full, the oldest entries.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        self.expire(now);
        while self.entries.len() >= self.capacity {
            if !self.pop_oldest() {
                break;
            }
        }
        self.entries.insert(key.clone(), (value, now));
        self.order.push_back((key, now));
        // Stale queue items (removed keys) are bounded too.
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(k, at)| entries.get(k).is_some_and(|(_, t)| t == at));
        }
    }

    /// The live entry for `key`.
    pub(crate) fn get<Q>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.lifetime)
            .map(|(v, _)| v)
    }

    /// Removes `key`, returning its value if it was live.
    pub(crate) fn remove<Q>(&mut self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, at) = self.entries.remove(key)?;
        (now.saturating_duration_since(at) < self.lifetime).then_some(value)
    }

    /// Entries held (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops every expired entry.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.lifetime {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Removes the oldest queued entry; false when the queue is empty.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else {
            return false;
        };
        if self.entries.get(&key).is_some_and(|(_, t)| *t == at) {
            self.entries.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_lifetime() {
        let t0 = Instant::now();
        let mut map = ExpiringMap::new(Duration::from_secs(60), 10);
        map.insert("a", 1, t0);
        assert_eq!(map.get("a", t0 + Duration::from_secs(59)), Some(&1));
        assert_eq!(map.get("a", t0 + Duration::from_secs(60)), None);
        map.insert("b", 2, t0 + Duration::from_secs(61));
        assert_eq!(map.len(), 1, "the expired entry went with the insert");
    }

    #[test]
    fn a_full_map_drops_its_oldest_entry() {
        let t0 = Instant::now();
        let mut map = ExpiringMap::new(Duration::from_secs(60), 3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            map.insert(key, i, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(map.len(), 3);
        let now = t0 + Duration::from_millis(5);
        assert_eq!(map.get("a", now), None);
        assert_eq!(map.get("d", now), Some(&3));
    }

    #[test]
    fn removed_keys_do_not_grow_the_queue_forever() {
        let t0 = Instant::now();
        let mut map = ExpiringMap::new(Duration::from_secs(3600), 100);
        for i in 0..10_000u32 {
            map.insert(i, (), t0);
            assert!(map.remove(&i, t0).is_some());
        }
        assert_eq!(map.len(), 0);
        assert!(map.order.len() <= 16 + 1);
    }

    #[test]
    fn a_reinserted_key_keeps_its_new_time() {
        let t0 = Instant::now();
        let mut map = ExpiringMap::new(Duration::from_secs(10), 2);
        map.insert("a", 1, t0);
        map.insert("a", 2, t0 + Duration::from_secs(5));
        // The stale queue item of the first insert must not expire the second.
        map.expire(t0 + Duration::from_secs(11));
        assert_eq!(map.get("a", t0 + Duration::from_secs(11)), Some(&2));
    }
}
