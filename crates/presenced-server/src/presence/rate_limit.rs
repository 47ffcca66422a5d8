//! `rc_presence`: a leaky bucket per user (spec §9.4). PUT and sync each
//! own one limiter with the same settings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use ruma_common::{OwnedUserId, UserId};

/// Per-user leaky buckets.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<OwnedUserId, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` actions per second, at most `burst_count` at once
    /// (truncated to an integer, as Synapse does). A zero rate never limits.
    pub fn new(per_second: f64, burst_count: f64) -> Self {
        Self {
            per_second,
            burst: burst_count.trunc().max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one action for `user`; `Err(retry_after_ms)` when over the limit.
    pub fn take(&self, user: &UserId, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (level, at)| {
                *level - now.duration_since(*at).as_secs_f64() * rate > 0.0 && *level <= burst
            });
        }
        let (level, at) = buckets.entry(user.to_owned()).or_insert((0.0, now));
        let drained = (*level - now.duration_since(*at).as_secs_f64() * self.per_second).max(0.0);
        if drained + 1.0 > self.burst {
            let wait = (drained + 1.0 - self.burst) / self.per_second;
            return Err((wait * 1000.0).ceil() as u64);
        }
        *level = drained + 1.0;
        *at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn synapse_defaults_allow_one_then_ten_seconds() {
        let limiter = RateLimiter::new(0.1, 1.0);
        let user = UserId::parse("@u:test").unwrap();
        let t0 = Instant::now();
        assert!(limiter.take(&user, t0).is_ok());
        let retry = limiter.take(&user, t0).unwrap_err();
        assert_eq!(retry, 10_000);
        assert!(limiter.take(&user, t0 + Duration::from_secs(10)).is_ok());
        let other = UserId::parse("@v:test").unwrap();
        assert!(limiter.take(&other, t0).is_ok(), "buckets are per user");
    }
}
