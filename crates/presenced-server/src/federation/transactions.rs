//! Transaction IDs already processed, per origin, so a retried
//! transaction is acknowledged without being applied twice.
//!
//! Kept in memory and bounded: the last [`SeenTransactions::PER_ORIGIN`]
//! IDs of each origin, and at most [`SeenTransactions::MAX_ORIGINS`]
//! origins (the least recently heard from is forgotten first). After a
//! restart, or for a transaction older than the last few hundred from its
//! origin, a retry is applied again; for presence that is harmless, since
//! re-applying the same states changes nothing worth notifying.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use ruma_common::{OwnedServerName, ServerName};

/// Recently processed transaction IDs by origin.
#[derive(Debug, Default)]
pub struct SeenTransactions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    origins: HashMap<OwnedServerName, Recent>,
    /// Bumped on every call, to find the least recently used origin.
    clock: u64,
}

#[derive(Debug, Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
    last_used: u64,
}

impl SeenTransactions {
    /// Transaction IDs remembered per origin (Synapse sends one
    /// transaction at a time per destination, so a retry is always recent).
    pub const PER_ORIGIN: usize = 512;
    /// Origins remembered.
    pub const MAX_ORIGINS: usize = 10_000;

    /// Records `txn_id` from `origin`; false if it was already recorded.
    pub fn first_time(&self, origin: &ServerName, txn_id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.clock += 1;
        let clock = inner.clock;
        if !inner.origins.contains_key(origin) && inner.origins.len() >= Self::MAX_ORIGINS {
            let oldest = inner
                .origins
                .iter()
                .min_by_key(|(_, r)| r.last_used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                inner.origins.remove(&oldest);
            }
        }
        let recent = inner.origins.entry(origin.to_owned()).or_default();
        recent.last_used = clock;
        if recent.ids.contains(txn_id) {
            return false;
        }
        if recent.order.len() >= Self::PER_ORIGIN {
            if let Some(old) = recent.order.pop_front() {
                recent.ids.remove(&old);
            }
        }
        recent.ids.insert(txn_id.to_owned());
        recent.order.push_back(txn_id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &ServerName {
        <&ServerName>::try_from(s).unwrap()
    }

    #[test]
    fn a_repeat_from_the_same_origin_is_seen() {
        let seen = SeenTransactions::default();
        assert!(seen.first_time(name("a.test"), "1"));
        assert!(!seen.first_time(name("a.test"), "1"));
        // The same ID from another origin is another transaction.
        assert!(seen.first_time(name("b.test"), "1"));
        assert!(seen.first_time(name("a.test"), "2"));
    }

    #[test]
    fn only_recent_ids_are_remembered() {
        let seen = SeenTransactions::default();
        for i in 0..=SeenTransactions::PER_ORIGIN {
            assert!(seen.first_time(name("a.test"), &i.to_string()));
        }
        // "0" fell out; the most recent ones are still known.
        assert!(seen.first_time(name("a.test"), "0"));
        let last = SeenTransactions::PER_ORIGIN.to_string();
        assert!(!seen.first_time(name("a.test"), &last));
    }
}
