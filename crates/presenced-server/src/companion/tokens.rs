//! Access tokens in companion mode: Synapse answers for each one
//! (`GET /_matrix/client/v3/account/whoami`); the answers are cached
//! briefly.
//!
//! Why a cache at all: every presence PUT and every `/sync` carries a
//! token, and asking Synapse each time would put a round trip (and a load
//! on Synapse) in front of each of them. Why a short one: a token can die
//! in ways presenced never sees (a logout through another path to Synapse,
//! an admin deleting a device, a cluster sibling forwarding the logout).
//!
//! The rules:
//! - A positive answer is kept for [`POSITIVE_TTL`] (60 s): the longest a
//!   token killed behind presenced's back keeps working for presence.
//! - At most [`MAX_ENTRIES`] answers are kept; when full, expired ones go
//!   first, then arbitrary ones (a miss only costs one more `whoami`).
//! - Failures are never cached. A 401 from Synapse is definite, but a
//!   negative cache is what a flood of made-up tokens would fill, pushing
//!   out the live ones; Synapse answers a bad token cheaply itself.
//! - Logout, logout/all and deactivation that pass through presenced drop
//!   their entries at once ([`TokenCheck::forget_token`],
//!   [`TokenCheck::forget_user`]); a `whoami` in flight at that moment
//!   does not put the dead token back (a generation counter moves on every
//!   removal, as in the homeserver's own token cache).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ruma_common::{OwnedDeviceId, OwnedUserId, UserId};
use serde::Deserialize;

use super::upstream::{Upstream, UpstreamError};
use crate::util::ids;

/// How long Synapse's positive answer for a token is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);

/// Most answers held at once.
pub const MAX_ENTRIES: usize = 100_000;

/// Synapse's whoami path (v3; Synapse 1.163 serves it).
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// Who a token belongs to, as Synapse said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    /// The user.
    pub user_id: OwnedUserId,
    /// The token's device. An application service's own token has none;
    /// presenced then uses [`NO_DEVICE`], so presence still has a device
    /// to attribute the state to.
    pub device_id: OwnedDeviceId,
    /// A guest account.
    pub is_guest: bool,
}

/// The device name used for a token Synapse reports without a device.
pub const NO_DEVICE: &str = "PRESENCED_NO_DEVICE";

/// Synapse's whoami answer.
#[derive(Deserialize)]
struct WhoAmI {
    user_id: OwnedUserId,
    #[serde(default)]
    device_id: Option<OwnedDeviceId>,
    #[serde(default)]
    is_guest: bool,
}

/// The token check; see the module docs.
pub struct TokenCheck {
    upstream: Upstream,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_hash: HashMap<String, (TokenOwner, Instant)>,
    /// Moves on every removal, so a lookup that began before it does not
    /// fill the cache.
    generation: u64,
    /// When expired entries were last swept (a sweep reads every entry, so
    /// a full cache sweeps at most once per TTL).
    last_sweep: Option<Instant>,
}

impl TokenCheck {
    /// A check that asks `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The owner of `token`: from the cache while fresh, else from
    /// Synapse. Synapse's refusal comes back as
    /// [`UpstreamError::Status`] with its body, to pass on verbatim.
    pub async fn owner(&self, token: &str) -> Result<TokenOwner, UpstreamError> {
        let hash = ids::hash_token(token);
        let generation = {
            let cache = self.cache();
            if let Some((owner, until)) = cache.by_hash.get(&hash) {
                if *until > Instant::now() {
                    return Ok(owner.clone());
                }
            }
            cache.generation
        };
        let answer: WhoAmI = self.upstream.get_json(WHOAMI, token).await?;
        let owner = TokenOwner {
            user_id: answer.user_id,
            device_id: answer
                .device_id
                .unwrap_or_else(|| OwnedDeviceId::from(NO_DEVICE)),
            is_guest: answer.is_guest,
        };
        self.fill(hash, owner.clone(), generation, Instant::now());
        Ok(owner)
    }

    /// The cached owner of a token, without asking Synapse.
    pub fn cached_owner(&self, token: &str) -> Option<TokenOwner> {
        let hash = ids::hash_token(token);
        let cache = self.cache();
        let (owner, until) = cache.by_hash.get(&hash)?;
        (*until > Instant::now()).then(|| owner.clone())
    }

    fn fill(&self, hash: String, owner: TokenOwner, generation: u64, now: Instant) {
        let mut cache = self.cache();
        if cache.generation != generation {
            return;
        }
        if cache.by_hash.len() >= MAX_ENTRIES && !cache.by_hash.contains_key(&hash) {
            let due = cache
                .last_sweep
                .is_none_or(|at| now.duration_since(at) >= POSITIVE_TTL);
            if due {
                cache.by_hash.retain(|_, (_, until)| *until > now);
                cache.last_sweep = Some(now);
            }
            if cache.by_hash.len() >= MAX_ENTRIES {
                if let Some(victim) = cache.by_hash.keys().next().cloned() {
                    cache.by_hash.remove(&victim);
                }
            }
        }
        cache.by_hash.insert(hash, (owner, now + POSITIVE_TTL));
    }

    /// Drops one token (a logout passed through).
    pub fn forget_token(&self, token: &str) {
        let hash = ids::hash_token(token);
        let mut cache = self.cache();
        cache.generation += 1;
        cache.by_hash.remove(&hash);
    }

    /// Drops every token of a user (logout/all, deactivation, a deleted
    /// device).
    pub fn forget_user(&self, user_id: &UserId) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache
            .by_hash
            .retain(|_, (owner, _)| owner.user_id != user_id);
    }

    /// Answers held now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.cache().by_hash.len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::companion::CompanionConfig;

    fn check() -> TokenCheck {
        let config = CompanionConfig {
            url: "http://127.0.0.1:9".to_owned(),
            appservice_registration: "as.yaml".into(),
            admin_token: None,
            admin_token_path: None,
        };
        TokenCheck::new(Upstream::new(&config).unwrap())
    }

    fn owner(user: &str) -> TokenOwner {
        TokenOwner {
            user_id: user.try_into().unwrap(),
            device_id: "D".into(),
            is_guest: false,
        }
    }

    #[test]
    fn answers_expire_and_a_removal_stops_a_late_fill() {
        let check = check();
        let now = Instant::now();
        check.fill(ids::hash_token("t1"), owner("@a:x"), 0, now);
        assert_eq!(check.cached_owner("t1"), Some(owner("@a:x")));
        check.forget_token("t1");
        assert_eq!(check.cached_owner("t1"), None);
        // A lookup that began before the removal (generation 0) is dropped.
        check.fill(ids::hash_token("t1"), owner("@a:x"), 0, now);
        assert_eq!(check.cached_owner("t1"), None);
        // An expired answer is not served.
        let long_ago = now - POSITIVE_TTL - Duration::from_secs(1);
        check.fill(ids::hash_token("t2"), owner("@a:x"), 1, long_ago);
        assert_eq!(check.cached_owner("t2"), None);
    }

    #[test]
    fn forgetting_a_user_drops_all_of_their_tokens_only() {
        let check = check();
        let now = Instant::now();
        check.fill(ids::hash_token("a1"), owner("@a:x"), 0, now);
        check.fill(ids::hash_token("a2"), owner("@a:x"), 0, now);
        check.fill(ids::hash_token("b1"), owner("@b:x"), 0, now);
        check.forget_user(&owner("@a:x").user_id);
        assert_eq!(check.cached_owner("a1"), None);
        assert_eq!(check.cached_owner("a2"), None);
        assert_eq!(check.cached_owner("b1"), Some(owner("@b:x")));
    }
}
