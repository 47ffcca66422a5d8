//! Other servers' signing keys: fetched from their `/_matrix/key/v2/server`
//! through a [`KeyFetcher`], checked, and cached until they expire.
//!
//! The cache lives in memory only: after a restart keys are fetched again
//! on first use, which costs one request per peer. A response is accepted
//! only when its `server_name` is the server asked and it is signed by that
//! server with a key it lists in `verify_keys` (ruma-signatures checks the
//! signature). Keys are kept until their `valid_until_ts`, but never longer
//! than a week (the spec's cap for keys used in requests). A key ID we do
//! not know triggers a refetch, at most once per
//! [`KeyCacheConfig::refetch_interval`] per server, so a peer sending made-up
//! key IDs cannot make us fetch in a loop. Concurrent lookups for one
//! server share one fetch.
//!
//! Anyone can name any origin in an unauthenticated request, so what such
//! requests can make us do is bounded: a failed look-up is remembered
//! (the negative cache: the server is not asked again for
//! [`KeyCacheConfig::failure_backoff`], doubling with each further failure
//! up to [`KeyCacheConfig::max_failure_backoff`]); at most
//! [`KeyCacheConfig::max_concurrent_fetches`] fetches run at once and at
//! most [`KeyCacheConfig::max_waiting_per_server`] lookups wait for one
//! server's fetch, each fetch within [`KeyCacheConfig::fetch_timeout`]; a
//! lookup past a bound fails at once ([`KeyError::Busy`]) instead of
//! queueing; and at most [`KeyCacheConfig::max_servers`] servers are
//! remembered.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presenced_engine::Timestamp;
use ruma_common::serde::Base64;
use ruma_common::{CanonicalJsonValue, OwnedServerName, ServerName};
use ruma_signatures::PublicKeyMap;

use super::signing::to_canonical_object;

/// A boxed, sendable future (the `futures` crate's `BoxFuture`, spelled out
/// to avoid the dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Reaches other servers for their keys. The federation client implements
/// it; tests inject their own. This is the edge of the key cache.
pub trait KeyFetcher: Send + Sync {
    /// `GET https://<resolved server>/_matrix/key/v2/server`: the response
    /// body, unchecked.
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>>;
}

/// Why a server's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached or answered with an error.
    #[error("key request to {server} failed: {message}")]
    Unreachable {
        /// The server asked.
        server: OwnedServerName,
        /// What went wrong.
        message: String,
    },
    /// No way to reach other servers is configured.
    #[error("no federation client is configured")]
    NoClient,
}

/// A [`KeyFetcher`] that reaches nobody, for servers without a federation
/// client: every remote key is unknown, so every signed request is refused.
#[derive(Debug, Default)]
pub struct NoKeyFetcher;

impl KeyFetcher for NoKeyFetcher {
    fn fetch_server_keys<'a>(
        &'a self,
        _server: &'a ServerName,
    ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>> {
        Box::pin(async { Err(FetchError::NoClient) })
    }
}

/// Why a key could not be found.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Fetching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The server answered, but not with a valid self-signed key response.
    #[error("invalid key response from {server}: {message}")]
    InvalidResponse {
        /// The server asked.
        server: OwnedServerName,
        /// What is wrong with the response.
        message: String,
    },
    /// The server's keys are known but do not include this one.
    #[error("{server} has no current key {key_id}")]
    UnknownKey {
        /// The server.
        server: OwnedServerName,
        /// The key asked for.
        key_id: String,
    },
    /// The key is unknown and the server was asked too recently to ask
    /// again (after a failed look-up: the negative cache).
    #[error("key {key_id} of {server} is unknown; refetch is rate-limited")]
    RateLimited {
        /// The server.
        server: OwnedServerName,
        /// The key asked for.
        key_id: String,
    },
    /// Too many look-ups are running (in all, or waiting for this server).
    #[error("too many key look-ups in progress; {server} not asked")]
    Busy {
        /// The server.
        server: OwnedServerName,
    },
}

/// Tunables of the cache.
#[derive(Clone, Debug)]
pub struct KeyCacheConfig {
    /// Least time between two fetches from one server.
    pub refetch_interval: Duration,
    /// Longest time a key is trusted without fetching it again.
    pub max_validity: Duration,
    /// Servers remembered at most; past it, servers with no valid key are
    /// forgotten first, then the ones fetched longest ago.
    pub max_servers: usize,
    /// How long a server whose look-up failed is not asked again; doubled
    /// for each further failure in a row.
    pub failure_backoff: Duration,
    /// Longest such wait.
    pub max_failure_backoff: Duration,
    /// Fetches running at once, all servers together.
    pub max_concurrent_fetches: usize,
    /// Lookups waiting for one server's fetch at once.
    pub max_waiting_per_server: usize,
    /// Longest time one fetch (discovery included) may take.
    pub fetch_timeout: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            refetch_interval: Duration::from_secs(60),
            max_validity: Duration::from_secs(7 * 24 * 3600),
            max_servers: 10_000,
            failure_backoff: Duration::from_secs(60),
            max_failure_backoff: Duration::from_secs(600),
            max_concurrent_fetches: 32,
            max_waiting_per_server: 8,
            fetch_timeout: Duration::from_secs(20),
        }
    }
}

impl KeyCacheConfig {
    /// The wait after `failures` failed look-ups in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.failure_backoff
            .saturating_mul(factor)
            .min(self.max_failure_backoff)
    }
}

/// One server's keys and when we last asked for them.
#[derive(Debug, Default)]
struct ServerKeys {
    /// key ID → (public key, valid until).
    keys: HashMap<String, (Base64, Timestamp)>,
    /// When we last started a fetch.
    last_fetch: Option<Timestamp>,
    /// Failed fetches in a row (0 after a success).
    failures: u32,
    /// Lookups waiting for (or running) this server's fetch.
    waiting: usize,
    /// Held while a fetch is in flight, so concurrent lookups share it.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl ServerKeys {
    fn valid(&self, key_id: &str, now: Timestamp) -> Option<Base64> {
        self.keys
            .get(key_id)
            .filter(|(_, until)| *until >= now)
            .map(|(key, _)| key.clone())
    }
}

/// Verified keys of other servers.
pub struct RemoteKeyCache {
    fetcher: Arc<dyn KeyFetcher>,
    config: KeyCacheConfig,
    servers: Mutex<HashMap<OwnedServerName, ServerKeys>>,
    /// One permit per fetch allowed to run.
    fetch_slots: Arc<tokio::sync::Semaphore>,
}

/// Counts a lookup among its server's waiters while it lives.
struct Waiting<'a> {
    cache: &'a RemoteKeyCache,
    server: &'a ServerName,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // The entry may have been trimmed meanwhile; then there is nothing
        // to count down.
        if let Some(entry) = self.cache.lock().get_mut(self.server) {
            entry.waiting = entry.waiting.saturating_sub(1);
        }
    }
}

impl RemoteKeyCache {
    /// A cache that fetches through `fetcher`.
    pub fn new(fetcher: Arc<dyn KeyFetcher>, config: KeyCacheConfig) -> Self {
        Self {
            fetcher,
            fetch_slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_fetches.max(1),
            )),
            config,
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// How many servers are remembered (keys or a failed look-up).
    pub fn servers_remembered(&self) -> usize {
        self.lock().len()
    }

    /// The public key `key_id` of `server`, valid at `now`: from the
    /// cache, else fetched (unless `server` was asked too recently).
    pub async fn key(
        &self,
        server: &ServerName,
        key_id: &str,
        now: Timestamp,
    ) -> Result<Base64, KeyError> {
        let busy = || KeyError::Busy {
            server: server.to_owned(),
        };
        let fetching = {
            let mut servers = self.lock();
            if !servers.contains_key(server) {
                self.trim(&mut servers, now);
            }
            let entry = servers.entry(server.to_owned()).or_default();
            if let Some(key) = entry.valid(key_id, now) {
                return Ok(key);
            }
            // A fetch in flight may bring the key: wait for it. Otherwise
            // a server asked too recently is refused without waiting.
            if entry.fetching.try_lock().is_ok() {
                self.too_soon(server, key_id, entry, now)?;
            }
            if entry.waiting >= self.config.max_waiting_per_server {
                return Err(busy());
            }
            entry.waiting += 1;
            entry.fetching.clone()
        };
        let _waiting = Waiting {
            cache: self,
            server,
        };
        let _guard = fetching.lock().await;
        // Another lookup may have fetched while this one waited.
        let _slot = {
            let mut servers = self.lock();
            let entry = servers.entry(server.to_owned()).or_default();
            if let Some(key) = entry.valid(key_id, now) {
                return Ok(key);
            }
            self.too_soon(server, key_id, entry, now)?;
            let slot = self
                .fetch_slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| busy())?;
            entry.last_fetch = Some(now);
            slot
        };
        let fetched = tokio::time::timeout(
            self.config.fetch_timeout,
            self.fetcher.fetch_server_keys(server),
        )
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::Unreachable {
                server: server.to_owned(),
                message: format!("no answer within {:?}", self.config.fetch_timeout),
            })
        });
        let keys = fetched
            .map_err(KeyError::from)
            .and_then(|body| self.check_response(server, body, now));
        let mut servers = self.lock();
        let entry = servers.entry(server.to_owned()).or_default();
        let keys = keys.inspect_err(|e| {
            entry.failures = entry.failures.saturating_add(1);
            tracing::debug!(%server, failures = entry.failures, "fetching server keys: {e}");
        })?;
        entry.failures = 0;
        entry.keys = keys;
        entry
            .valid(key_id, now)
            .ok_or_else(|| KeyError::UnknownKey {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
            })
    }

    /// Refuses a fetch from `server` made too soon after the last one: within
    /// the refetch interval, or within the failure backoff after a failed
    /// look-up.
    fn too_soon(
        &self,
        server: &ServerName,
        key_id: &str,
        entry: &ServerKeys,
        now: Timestamp,
    ) -> Result<(), KeyError> {
        let Some(at) = entry.last_fetch else {
            return Ok(());
        };
        let wait = if entry.failures > 0 {
            self.config.backoff(entry.failures)
        } else {
            self.config.refetch_interval
        };
        if now.saturating_since(at) >= wait {
            return Ok(());
        }
        Err(if entry.keys.is_empty() {
            KeyError::RateLimited {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
            }
        } else {
            KeyError::UnknownKey {
                server: server.to_owned(),
                key_id: key_id.to_owned(),
            }
        })
    }

    /// Checks a `/_matrix/key/v2/server` response and returns its keys with
    /// the time each may be used until.
    fn check_response(
        &self,
        server: &ServerName,
        body: serde_json::Value,
        now: Timestamp,
    ) -> Result<HashMap<String, (Base64, Timestamp)>, KeyError> {
        let invalid = |message: String| KeyError::InvalidResponse {
            server: server.to_owned(),
            message,
        };
        let mut object = to_canonical_object(body).map_err(|e| invalid(e.to_string()))?;
        match object.get("server_name") {
            Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
            other => return Err(invalid(format!("server_name is {other:?}"))),
        }
        let valid_until = match object.get("valid_until_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => {
                Timestamp(u64::try_from(i64::from(*ts)).unwrap_or(0))
            }
            _ => return Err(invalid("valid_until_ts is missing".to_owned())),
        };
        let Some(CanonicalJsonValue::Object(verify_keys)) = object.get("verify_keys") else {
            return Err(invalid("verify_keys is missing".to_owned()));
        };
        let mut keys = BTreeMap::new();
        for (key_id, entry) in verify_keys {
            let key = match entry {
                CanonicalJsonValue::Object(entry) => match entry.get("key") {
                    Some(CanonicalJsonValue::String(key)) => Base64::parse(key).ok(),
                    _ => None,
                },
                _ => None,
            };
            let key = key.ok_or_else(|| invalid(format!("verify_keys.{key_id} has no key")))?;
            keys.insert(key_id.clone(), key);
        }
        // Only the server's own signatures with keys it lists count (a
        // notary's or an old key's signature is neither needed nor trusted).
        let own_signatures = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(all)) => match all.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(sigs)) => sigs
                    .iter()
                    .filter(|(id, _)| keys.contains_key(*id))
                    .map(|(id, sig)| (id.clone(), sig.clone()))
                    .collect(),
                _ => BTreeMap::new(),
            },
            _ => BTreeMap::new(),
        };
        if own_signatures.is_empty() {
            return Err(invalid(
                "not signed by the server with a key it lists".to_owned(),
            ));
        }
        object.insert(
            "signatures".to_owned(),
            CanonicalJsonValue::Object(BTreeMap::from([(
                server.as_str().to_owned(),
                CanonicalJsonValue::Object(own_signatures),
            )])),
        );
        let public_keys: PublicKeyMap =
            BTreeMap::from([(server.as_str().to_owned(), keys.clone())]);
        ruma_signatures::verify_json(&public_keys, &object)
            .map_err(|e| invalid(format!("bad signature: {e}")))?;
        let cap = now + self.config.max_validity;
        let until = valid_until.min(cap);
        Ok(keys
            .into_iter()
            .map(|(id, key)| (id, (key, until)))
            .collect())
    }

    /// Makes room for one more entry within `max_servers`. An entry whose
    /// fetch is in flight may go too; its lookup then re-creates it. A
    /// tenth of the entries go at once, so a flood of new names pays for
    /// the sort once per thousand names, not once per name.
    fn trim(&self, servers: &mut HashMap<OwnedServerName, ServerKeys>, now: Timestamp) {
        let excess = (servers.len() + 1).saturating_sub(self.config.max_servers);
        if excess == 0 {
            return;
        }
        let excess = excess.max(self.config.max_servers / 10);
        let mut order: Vec<(bool, Timestamp, OwnedServerName)> = servers
            .iter()
            .map(|(name, keys)| {
                let has_valid = keys.keys.values().any(|(_, until)| *until >= now);
                (
                    has_valid,
                    keys.last_fetch.unwrap_or(Timestamp::ZERO),
                    name.clone(),
                )
            })
            .collect();
        order.sort();
        for (_, _, name) in order.into_iter().take(excess) {
            servers.remove(&name);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedServerName, ServerKeys>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::federation::ServerSigningKey;

    const HOUR: u64 = 3_600_000;

    /// Answers with whatever `response` holds and counts the calls.
    struct FakeFetcher {
        response: Mutex<serde_json::Value>,
        calls: AtomicUsize,
    }

    impl FakeFetcher {
        fn new(response: serde_json::Value) -> Arc<Self> {
            Arc::new(Self {
                response: Mutex::new(response),
                calls: AtomicUsize::new(0),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl KeyFetcher for FakeFetcher {
        fn fetch_server_keys<'a>(
            &'a self,
            _server: &'a ServerName,
        ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let response = self.response.lock().unwrap().clone();
            Box::pin(async move { Ok(response) })
        }
    }

    fn name(s: &str) -> &ServerName {
        <&ServerName>::try_from(s).unwrap()
    }

    fn key_response(server: &str, key: &ServerSigningKey, valid_until: u64) -> serde_json::Value {
        let mut body = json!({
            "server_name": server,
            "valid_until_ts": valid_until,
            "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
            "old_verify_keys": {},
        });
        key.sign_json(name(server), &mut body).unwrap();
        body
    }

    fn cache(fetcher: Arc<FakeFetcher>) -> RemoteKeyCache {
        RemoteKeyCache::new(fetcher, KeyCacheConfig::default())
    }

    #[tokio::test]
    async fn fetches_once_then_serves_from_the_cache() {
        let key = ServerSigningKey::generate();
        let fetcher = FakeFetcher::new(key_response("a.test", &key, 10 * HOUR));
        let cache = cache(fetcher.clone());
        for _ in 0..3 {
            let got = cache
                .key(name("a.test"), key.key_id(), Timestamp(HOUR))
                .await
                .unwrap();
            assert_eq!(got.encode(), key.public_key_base64());
        }
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn response_for_another_server_is_refused() {
        let key = ServerSigningKey::generate();
        let fetcher = FakeFetcher::new(key_response("evil.test", &key, 10 * HOUR));
        let err = cache(fetcher)
            .key(name("a.test"), key.key_id(), Timestamp(HOUR))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::InvalidResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn response_not_signed_by_the_listed_key_is_refused() {
        let listed = ServerSigningKey::generate();
        let other =
            ServerSigningKey::from_seed(listed.key_id().trim_start_matches("ed25519:"), [9; 32])
                .unwrap();
        // Lists `listed`'s public key but is signed by another key with the
        // same key ID.
        let mut body = json!({
            "server_name": "a.test",
            "valid_until_ts": 10 * HOUR,
            "verify_keys": { listed.key_id(): { "key": listed.public_key_base64() } },
        });
        other.sign_json(name("a.test"), &mut body).unwrap();
        let err = cache(FakeFetcher::new(body))
            .key(name("a.test"), listed.key_id(), Timestamp(HOUR))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::InvalidResponse { .. }), "{err}");

        // And an unsigned response is refused too.
        let unsigned = json!({
            "server_name": "a.test",
            "valid_until_ts": 10 * HOUR,
            "verify_keys": { listed.key_id(): { "key": listed.public_key_base64() } },
        });
        let err = cache(FakeFetcher::new(unsigned))
            .key(name("a.test"), listed.key_id(), Timestamp(HOUR))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::InvalidResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn unknown_key_refetches_at_most_once_per_interval() {
        let key = ServerSigningKey::generate();
        let fetcher = FakeFetcher::new(key_response("a.test", &key, 100 * HOUR));
        let cache = cache(fetcher.clone());
        cache
            .key(name("a.test"), key.key_id(), Timestamp(HOUR))
            .await
            .unwrap();
        // Right after a fetch, an unknown key ID is refused without fetching.
        let err = cache
            .key(name("a.test"), "ed25519:made_up", Timestamp(HOUR + 1_000))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnknownKey { .. }), "{err}");
        assert_eq!(fetcher.calls(), 1);
        // Later, a made-up key ID: one refetch, then refused without fetching.
        for _ in 0..5 {
            let err = cache
                .key(name("a.test"), "ed25519:made_up", Timestamp(HOUR + 61_000))
                .await
                .unwrap_err();
            assert!(matches!(err, KeyError::UnknownKey { .. }), "{err}");
        }
        assert_eq!(fetcher.calls(), 2);
        // Past the interval the server may be asked again (a rotated key).
        let rotated = ServerSigningKey::generate();
        *fetcher.response.lock().unwrap() = key_response("a.test", &rotated, 100 * HOUR);
        let got = cache
            .key(name("a.test"), rotated.key_id(), Timestamp(HOUR + 122_000))
            .await
            .unwrap();
        assert_eq!(got.encode(), rotated.public_key_base64());
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test]
    async fn expired_keys_are_fetched_again() {
        let key = ServerSigningKey::generate();
        let fetcher = FakeFetcher::new(key_response("a.test", &key, 2 * HOUR));
        let cache = cache(fetcher.clone());
        cache
            .key(name("a.test"), key.key_id(), Timestamp(HOUR))
            .await
            .unwrap();
        *fetcher.response.lock().unwrap() = key_response("a.test", &key, 10 * HOUR);
        cache
            .key(name("a.test"), key.key_id(), Timestamp(3 * HOUR))
            .await
            .unwrap();
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test]
    async fn a_key_already_expired_is_not_accepted() {
        let key = ServerSigningKey::generate();
        let fetcher = FakeFetcher::new(key_response("a.test", &key, HOUR - 1));
        let err = cache(fetcher)
            .key(name("a.test"), key.key_id(), Timestamp(HOUR))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::UnknownKey { .. }), "{err}");
    }

    #[tokio::test]
    async fn failed_fetches_are_rate_limited_too() {
        let cache = RemoteKeyCache::new(Arc::new(NoKeyFetcher), KeyCacheConfig::default());
        let first = cache
            .key(name("a.test"), "ed25519:x", Timestamp(HOUR))
            .await
            .unwrap_err();
        assert!(
            matches!(first, KeyError::Fetch(FetchError::NoClient)),
            "{first}"
        );
        let second = cache
            .key(name("a.test"), "ed25519:x", Timestamp(HOUR + 1))
            .await
            .unwrap_err();
        assert!(matches!(second, KeyError::RateLimited { .. }), "{second}");
    }

    #[tokio::test]
    async fn the_number_of_servers_remembered_is_capped() {
        let cache = RemoteKeyCache::new(
            Arc::new(NoKeyFetcher),
            KeyCacheConfig {
                max_servers: 3,
                ..KeyCacheConfig::default()
            },
        );
        let key = ServerSigningKey::generate();
        for i in 0..10 {
            let server = format!("s{i}.test");
            let _ = cache
                .key(name(&server), key.key_id(), Timestamp(HOUR + i))
                .await;
        }
        assert!(cache.lock().len() <= 3, "{}", cache.lock().len());
    }

    /// Never answers until `open` is notified; counts calls.
    struct GatedFetcher {
        open: tokio::sync::Semaphore,
        calls: AtomicUsize,
    }

    impl KeyFetcher for GatedFetcher {
        fn fetch_server_keys<'a>(
            &'a self,
            server: &'a ServerName,
        ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _ = self.open.acquire().await;
                Err(FetchError::Unreachable {
                    server: server.to_owned(),
                    message: "gate".to_owned(),
                })
            })
        }
    }

    #[tokio::test]
    async fn failed_lookups_back_off_doubling_up_to_the_cap() {
        let cache = RemoteKeyCache::new(
            Arc::new(NoKeyFetcher),
            KeyCacheConfig {
                failure_backoff: Duration::from_secs(60),
                max_failure_backoff: Duration::from_secs(150),
                ..KeyCacheConfig::default()
            },
        );
        let at = |t: u64| cache.key(name("a.test"), "ed25519:x", Timestamp(HOUR + t));
        let fetched = |r: Result<Base64, KeyError>| matches!(r, Err(KeyError::Fetch(_)));
        assert!(fetched(at(0).await));
        assert!(!fetched(at(59_000).await));
        assert!(fetched(at(60_000).await)); // second failure: 120 s
        assert!(!fetched(at(179_000).await));
        assert!(fetched(at(180_000).await)); // third: 240 s, capped at 150 s
        assert!(!fetched(at(329_000).await));
        assert!(fetched(at(330_000).await));
    }

    #[tokio::test]
    async fn lookups_past_the_bounds_fail_at_once() {
        let fetcher = Arc::new(GatedFetcher {
            open: tokio::sync::Semaphore::new(0),
            calls: AtomicUsize::new(0),
        });
        let cache = Arc::new(RemoteKeyCache::new(
            fetcher.clone(),
            KeyCacheConfig {
                max_concurrent_fetches: 2,
                max_waiting_per_server: 2,
                ..KeyCacheConfig::default()
            },
        ));
        let spawn = |server: &'static str| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.key(name(server), "ed25519:x", Timestamp(HOUR)).await })
        };
        // Two fetches run (a, b); a second lookup waits for a's.
        let running = [spawn("a.test"), spawn("b.test"), spawn("a.test")];
        while fetcher.calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // A third server finds no free fetch slot; a third lookup of a
        // finds its waiting room full. Both fail without waiting.
        let third = cache
            .key(name("c.test"), "ed25519:x", Timestamp(HOUR))
            .await;
        assert!(matches!(third, Err(KeyError::Busy { .. })), "{third:?}");
        let crowd = cache
            .key(name("a.test"), "ed25519:x", Timestamp(HOUR))
            .await;
        assert!(matches!(crowd, Err(KeyError::Busy { .. })), "{crowd:?}");
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
        fetcher.open.add_permits(10);
        for task in running {
            assert!(task.await.unwrap().is_err());
        }
        // The slots and the waiting room are free again (c was never
        // asked, so it may be now).
        fetcher.open.add_permits(10);
        let c = cache
            .key(name("c.test"), "ed25519:x", Timestamp(HOUR))
            .await;
        assert!(matches!(c, Err(KeyError::Fetch(_))), "{c:?}");
    }

    #[tokio::test]
    async fn a_fetch_that_never_answers_times_out_and_is_remembered() {
        let fetcher = Arc::new(GatedFetcher {
            open: tokio::sync::Semaphore::new(0),
            calls: AtomicUsize::new(0),
        });
        let cache = RemoteKeyCache::new(
            fetcher.clone(),
            KeyCacheConfig {
                fetch_timeout: Duration::from_millis(50),
                ..KeyCacheConfig::default()
            },
        );
        let first = cache
            .key(name("slow.test"), "ed25519:x", Timestamp(HOUR))
            .await;
        assert!(matches!(first, Err(KeyError::Fetch(_))), "{first:?}");
        let again = cache
            .key(name("slow.test"), "ed25519:x", Timestamp(HOUR + 1))
            .await;
        assert!(
            matches!(again, Err(KeyError::RateLimited { .. })),
            "{again:?}"
        );
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
    }
}
