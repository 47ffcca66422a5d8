//! Leaky-bucket rate limiters with Synapse's `rc_*` semantics (spec §9.4):
//! `per_second` actions a second in the long run, at most `burst_count` at
//! once. `rc_presence` keys them by user; the login and registration limits
//! (`api/client/login.rs`, `register.rs`) by client address or by the user
//! a login names.
//!
//! Keys may come from unauthenticated requests (addresses, names typed
//! into a login form), so the number of buckets is capped: buckets that
//! have drained carry no information and are dropped first; if the map is
//! still full, the buckets closest to draining make room.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma_common::OwnedUserId;

/// Default bucket cap: about 100 bytes a bucket, so about 10 MB at most.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Drained buckets are swept, even when the map is not full, as often as a
/// full bucket takes to drain, but at most once a second and at least once
/// a minute.
const SWEEP_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Per-key leaky buckets.
pub struct RateLimiter<K = OwnedUserId> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    inner: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    /// Level after the last action, and when it was taken.
    levels: HashMap<K, (f64, Instant)>,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` actions per second, at most `burst_count` at once
    /// (truncated to an integer, as Synapse does). A zero rate never limits.
    pub fn new(per_second: f64, burst_count: f64) -> Self {
        Self::with_max_keys(per_second, burst_count, DEFAULT_MAX_KEYS)
    }

    /// As [`RateLimiter::new`], keeping at most `max_keys` buckets.
    pub fn with_max_keys(per_second: f64, burst_count: f64, max_keys: usize) -> Self {
        Self {
            per_second,
            burst: burst_count.trunc().max(1.0),
            max_keys: max_keys.max(1),
            inner: Mutex::new(Buckets {
                levels: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes one action for `key`; `Err(retry_after_ms)` when over the limit.
    pub fn take<Q>(&self, key: &Q, now: Instant) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.act(key, now, true)
    }

    /// Whether `key` could act now, without counting an action (Synapse's
    /// `update=False`: for limits that count only failures).
    pub fn check<Q>(&self, key: &Q, now: Instant) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.act(key, now, false)
    }

    /// Gives back an action taken with [`RateLimiter::take`]: for limits
    /// that count failures, the attempt is counted before the slow check
    /// (so concurrent attempts cannot all pass) and refunded on success.
    pub fn refund<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((level, _)) = self.lock().levels.get_mut(key) {
            *level = (*level - 1.0).max(0.0);
        }
    }

    /// Takes one action for `key` that is given back unless
    /// [`Reservation::keep`] is called: for limits that count only
    /// successes (registrations), so that concurrent attempts still cannot
    /// overshoot the bucket.
    pub fn reserve(&self, key: K, now: Instant) -> Result<Reservation<'_, K>, u64> {
        self.take(&key, now)?;
        Ok(Reservation {
            limiter: self,
            key: Some(key),
        })
    }

    /// Buckets held (for metrics and the boundedness tests).
    pub fn tracked_keys(&self) -> usize {
        self.lock().levels.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets<K>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drained(&self, level: f64, at: Instant, now: Instant) -> f64 {
        (level - now.saturating_duration_since(at).as_secs_f64() * self.per_second).max(0.0)
    }

    fn act<Q>(&self, key: &Q, now: Instant, update: bool) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.lock();
        let level = buckets
            .levels
            .get(key)
            .map_or(0.0, |&(level, at)| self.drained(level, at, now));
        if level + 1.0 > self.burst {
            let wait = (level + 1.0 - self.burst) / self.per_second;
            return Err((wait * 1000.0).ceil() as u64);
        }
        if update {
            if !buckets.levels.contains_key(key) {
                self.make_room(&mut buckets, now);
            }
            buckets.levels.insert(key.to_owned(), (level + 1.0, now));
        }
        Ok(())
    }

    /// Before a new bucket: sweep drained ones once a minute or when full;
    /// if still full, drop the tenth of buckets nearest to draining.
    fn make_room(&self, buckets: &mut Buckets<K>, now: Instant) {
        let drain_time = Duration::try_from_secs_f64(self.burst / self.per_second)
            .unwrap_or(SWEEP_BOUNDS.1)
            .clamp(SWEEP_BOUNDS.0, SWEEP_BOUNDS.1);
        let due = buckets
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= drain_time);
        if !due && buckets.levels.len() < self.max_keys {
            return;
        }
        buckets.last_sweep = Some(now);
        buckets
            .levels
            .retain(|_, &mut (level, at)| self.drained(level, at, now) > 0.0);
        if buckets.levels.len() < self.max_keys {
            return;
        }
        let mut by_level: Vec<(f64, K)> = buckets
            .levels
            .iter()
            .map(|(k, &(level, at))| (self.drained(level, at, now), k.clone()))
            .collect();
        let evict = (self.max_keys / 10).max(1).min(by_level.len());
        by_level.select_nth_unstable_by(evict - 1, |a, b| a.0.total_cmp(&b.0));
        for (_, key) in by_level.into_iter().take(evict) {
            buckets.levels.remove(&key);
        }
    }
}

/// An action taken by [`RateLimiter::reserve`], refunded when dropped
/// unless kept.
pub struct Reservation<'a, K: Hash + Eq + Clone> {
    limiter: &'a RateLimiter<K>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Reservation<'_, K> {
    /// The action happened: it stays counted.
    pub fn keep(mut self) {
        self.key = None;
    }
}

impl<K: Hash + Eq + Clone> Drop for Reservation<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.refund(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ruma_common::UserId;

    use super::*;

    #[test]
    fn synapse_defaults_allow_one_then_ten_seconds() {
        let limiter = RateLimiter::new(0.1, 1.0);
        let user = UserId::parse("@u:test").unwrap();
        let t0 = Instant::now();
        assert!(limiter.take(&*user, t0).is_ok());
        let retry = limiter.take(&*user, t0).unwrap_err();
        assert_eq!(retry, 10_000);
        assert!(limiter.take(&*user, t0 + Duration::from_secs(10)).is_ok());
        let other = UserId::parse("@v:test").unwrap();
        assert!(limiter.take(&*other, t0).is_ok(), "buckets are per user");
    }

    #[test]
    fn check_does_not_count() {
        let limiter: RateLimiter<String> = RateLimiter::new(1.0, 2.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check("a", t0).is_ok());
        }
        assert!(limiter.take("a", t0).is_ok());
        assert!(limiter.take("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(1000));
    }

    #[test]
    fn a_refund_gives_the_action_back() {
        let limiter: RateLimiter<String> = RateLimiter::new(1.0, 1.0);
        let t0 = Instant::now();
        assert!(limiter.take("a", t0).is_ok());
        assert!(limiter.take("a", t0).is_err());
        limiter.refund("a");
        assert!(limiter.take("a", t0).is_ok());
    }

    #[test]
    fn a_reservation_counts_only_if_kept() {
        let limiter: RateLimiter<String> = RateLimiter::new(1.0, 1.0);
        let t0 = Instant::now();
        drop(limiter.reserve("a".to_owned(), t0).unwrap());
        let held = limiter.reserve("a".to_owned(), t0).unwrap();
        assert!(limiter.take("a", t0).is_err(), "held while pending");
        held.keep();
        assert!(limiter.take("a", t0).is_err(), "kept");
    }

    #[test]
    fn the_number_of_buckets_is_capped() {
        let limiter: RateLimiter<IpAddr> = RateLimiter::with_max_keys(0.001, 5.0, 1000);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(limiter.take(&ip, t0).is_ok());
        }
        assert!(limiter.tracked_keys() <= 1000);
    }

    #[test]
    fn drained_buckets_are_swept() {
        let limiter: RateLimiter<u32> = RateLimiter::new(1.0, 3.0);
        let t0 = Instant::now();
        for i in 0..100 {
            limiter.take(&i, t0).unwrap();
        }
        // A minute later every bucket has drained; the next new key sweeps.
        limiter.take(&1000, t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(limiter.tracked_keys(), 1);
    }
}
