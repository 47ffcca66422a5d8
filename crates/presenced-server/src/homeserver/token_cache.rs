//! Access tokens in memory: hash → owner.
//!
//! Every authenticated request needs its token's owner; looking it up in
//! SQLite each time was about a tenth of the server's CPU under load. The
//! cache holds live tokens only: the handlers that kill tokens (logout,
//! logout/all, deactivation, a new login on the same device) drop them here
//! right after the database commit, so a dead token is refused at once.
//!
//! A lookup that missed reads the database and then fills the cache; if a
//! token died in between, the fill is skipped (a generation counter moves
//! on every removal), so the cache never resurrects a dead token.
//! Another process that deletes tokens (none does today: `presenced
//! register-user` only adds) would not be seen until restart.
//!
//! A cluster node keeps a cache too ([`TokenCache::trusting_while`]): a
//! token that dies on another node is dropped here before that node's
//! logout answers (it tells every live node and waits for each,
//! `presence/cluster/tokens.rs`), and the cache is used only while this
//! node hears the cluster's bus: a node cut off long enough that a
//! revocation could have missed it empties its cache and reads PostgreSQL
//! until it hears the bus again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use ruma_common::{DeviceId, OwnedUserId, UserId};

use crate::store::TokenOwner;

/// The cache; see the module docs.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
    /// A cluster node's "may the cache be used now" (it hears the bus);
    /// none on a single node.
    trusted: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, TokenOwner>,
    /// Token hashes per user, for removal.
    by_user: HashMap<OwnedUserId, Vec<String>>,
    /// Moves on every removal.
    generation: u64,
}

impl TokenCache {
    /// A cache used only while `trusted` says so (cluster mode); when it
    /// does not, the cache empties itself and every lookup misses.
    pub fn trusting_while(trusted: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            inner: Mutex::default(),
            trusted: Some(Box::new(trusted)),
        }
    }

    fn usable(&self) -> bool {
        self.trusted.as_ref().is_none_or(|trusted| trusted())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The owner of a cached token, and the generation to hand to
    /// [`TokenCache::fill`] after a database lookup.
    pub fn get(&self, token_hash: &str) -> Result<TokenOwner, u64> {
        let mut inner = self.inner();
        if !self.usable() {
            inner.drop_all();
            return Err(inner.generation);
        }
        inner
            .by_hash
            .get(token_hash)
            .cloned()
            .ok_or(inner.generation)
    }

    /// Remembers a token found in the database, unless a token died since
    /// the lookup began (`generation` from [`TokenCache::get`]).
    pub fn fill(&self, token_hash: String, owner: TokenOwner, generation: u64) {
        let mut inner = self.inner();
        if inner.generation != generation || !self.usable() {
            return;
        }
        inner
            .by_user
            .entry(owner.user_id.clone())
            .or_default()
            .push(token_hash.clone());
        inner.by_hash.insert(token_hash, owner);
    }

    /// Drops every token (a cluster node that may have missed a revocation).
    pub fn forget_all(&self) {
        self.inner().drop_all();
    }

    /// Drops the tokens of one device (`Some`) or of every device of a user.
    pub fn forget(&self, user: &UserId, device: Option<&DeviceId>) {
        let mut inner = self.inner();
        inner.generation += 1;
        let Some(mut hashes) = inner.by_user.remove(user) else {
            return;
        };
        hashes.retain(|hash| {
            let dies = inner
                .by_hash
                .get(hash)
                .is_none_or(|o| device.is_none_or(|d| o.device_id == d));
            if dies {
                inner.by_hash.remove(hash);
            }
            !dies
        });
        if !hashes.is_empty() {
            inner.by_user.insert(user.to_owned(), hashes);
        }
    }
}

impl Inner {
    fn drop_all(&mut self) {
        self.generation += 1;
        self.by_hash.clear();
        self.by_user.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::OwnedDeviceId;

    fn owner(user: &str, device: &str) -> TokenOwner {
        TokenOwner {
            user_id: format!("@{user}:example.org").try_into().unwrap(),
            device_id: OwnedDeviceId::from(device),
            admin: false,
        }
    }

    #[test]
    fn forget_drops_one_device_or_all() {
        let cache = TokenCache::default();
        let g = cache.get("a1").unwrap_err();
        cache.fill("a1".into(), owner("alice", "D1"), g);
        cache.fill("a2".into(), owner("alice", "D2"), g);
        cache.fill("b1".into(), owner("bob", "D1"), g);
        let alice = owner("alice", "D1").user_id;
        cache.forget(&alice, Some("D1".into()));
        assert!(cache.get("a1").is_err());
        assert!(cache.get("a2").is_ok());
        cache.forget(&alice, None);
        assert!(cache.get("a2").is_err());
        assert!(cache.get("b1").is_ok());
    }

    #[test]
    fn an_untrusted_cache_empties_itself_and_misses() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let trusted = Arc::new(AtomicBool::new(true));
        let flag = trusted.clone();
        let cache = TokenCache::trusting_while(move || flag.load(Ordering::SeqCst));
        let g = cache.get("a1").unwrap_err();
        cache.fill("a1".into(), owner("alice", "D1"), g);
        assert!(cache.get("a1").is_ok());
        trusted.store(false, Ordering::SeqCst);
        let g = cache.get("a1").unwrap_err();
        cache.fill("a1".into(), owner("alice", "D1"), g);
        assert!(cache.get("a1").is_err(), "filled while untrusted");
        // Trusted again: what was held before is gone for good.
        trusted.store(true, Ordering::SeqCst);
        assert!(cache.get("a1").is_err());
    }

    #[test]
    fn a_fill_racing_a_removal_is_skipped() {
        let cache = TokenCache::default();
        let g = cache.get("a1").unwrap_err();
        cache.forget(&owner("alice", "D1").user_id, None);
        cache.fill("a1".into(), owner("alice", "D1"), g);
        assert!(cache.get("a1").is_err());
    }
}
