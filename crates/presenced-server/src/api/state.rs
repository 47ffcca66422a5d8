//! `AppState`: what every handler shares.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruma_common::OwnedServerName;

use crate::api::error::ApiError;
use crate::api::metrics::Metrics;
use crate::companion::Companion;
use crate::config::{Config, Secret};
use crate::federation::sender::OutboundPresence;
use crate::federation::transactions::SeenTransactions;
use crate::federation::{RemoteKeyCache, ServerSigningKey};
use crate::homeserver::identity::Identity;
pub use crate::homeserver::{Homeserver, RoomParts, StateReceivers};
use crate::presence::PresenceService;
use crate::store::Store;
use crate::sync::SyncService;
use crate::util::expiring_map::ExpiringMap;
use crate::util::rate_limit::RateLimiter;

/// Shared state, handed to handlers as `State<Arc<AppState>>`.
///
/// The presence wiring adds its own field (the engine driver's handle)
/// here; the room and activity code already reports through the two
/// channels below.
pub struct AppState {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// `config.server_name`, the domain of local IDs.
    pub server_name: OwnedServerName,
    /// Accounts, tokens, rooms and storage.
    pub homeserver: Arc<Homeserver>,
    /// The effective shared secret (configured, or generated at first start).
    pub registration_shared_secret: Option<Secret>,
    /// Nonces handed out by `GET /_synapse/admin/v1/register`.
    pub(crate) nonces: NonceCache,
    /// The presence engine driver.
    pub presence: PresenceService,
    /// `rc_presence` for `PUT /presence`.
    pub(crate) presence_put_limiter: RateLimiter,
    /// `/sync`: the long-poll, its presence limit and its answer.
    pub sync: SyncService,
    /// Handler counters for `GET /metrics`.
    pub metrics: Metrics,
    /// Our federation signing key.
    pub signing_key: Arc<ServerSigningKey>,
    /// Other servers' verified keys.
    pub remote_keys: Arc<RemoteKeyCache>,
    /// Federation transactions already processed.
    pub(crate) seen_transactions: SeenTransactions,
    /// Room for federation request bodies being read.
    pub(crate) federation_bodies: crate::api::federation::BodyBudget,
    /// Outgoing federation presence (outbox and senders).
    pub outbound: OutboundPresence,
    /// Open connections of all listeners and their caps (`connections:`).
    pub connections: Arc<crate::net::ConnectionTracker>,
    /// Companion mode's parts (Synapse, its tokens, the forwarding client);
    /// `None` in standalone mode. Set once here: the router and the
    /// homeserver's identity are chosen from it at start-up, and nothing
    /// asks again at run time.
    pub companion: Option<Arc<Companion>>,
    /// Companion mode's `/sync`: Synapse's answer plus presence.
    pub(crate) spliced_sync: Option<crate::companion::splice::SyncSplice>,
}

/// What federation needs in [`AppState`]: our key, the cache of theirs,
/// and the outgoing presence.
pub struct FederationParts {
    /// Our signing key.
    pub signing_key: Arc<ServerSigningKey>,
    /// Other servers' keys.
    pub remote_keys: Arc<RemoteKeyCache>,
    /// Outgoing presence.
    pub outbound: OutboundPresence,
}

impl AppState {
    /// Builds the shared state around a config, an open store and its
    /// rooms (members read once at start-up, and the writer thread), and
    /// companion mode's parts when the config has `synapse:`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        rooms: RoomParts,
        registration_shared_secret: Option<Secret>,
        presence: PresenceService,
        federation: FederationParts,
        companion: Option<Arc<Companion>>,
    ) -> (Arc<Self>, StateReceivers) {
        let (mut homeserver, receivers) = Homeserver::new(&config, store, rooms, presence.clone());
        if let Some(companion) = &companion {
            // Synapse owns the accounts: tokens are its to answer for.
            homeserver.identity = Identity::Synapse(Arc::clone(companion));
        }
        // Several processes answer this server's clients (cluster nodes):
        // what one hands out another must accept, so UIA sessions and
        // registration nonces are signed instead of kept in memory.
        let shared_by_processes = config.cluster.is_some();
        if shared_by_processes {
            (homeserver.uia_sessions)
                .sign_with(federation.signing_key.derive_secret("presenced uia"));
        }
        let rc = &config.rc_presence.per_user;
        let (per_second, burst) = (rc.per_second, rc.burst_count);
        let limits = &config.request_limits;
        let cap = limits.max_rate_limit_keys;
        let conn_limits = config
            .connections
            .resolve(crate::net::fd_limit::raise_and_get());
        let connections = Arc::new(crate::net::ConnectionTracker::new(conn_limits));
        let homeserver = Arc::new(homeserver);
        let sync = SyncService::new(&config, Arc::clone(&homeserver), presence.clone());
        let spliced_sync = companion.as_ref().map(|companion| {
            crate::companion::splice::SyncSplice::new(
                companion.upstream.clone(),
                presence.clone(),
                config.presence.include_offline_users_on_sync,
                RateLimiter::with_max_keys(per_second, burst, cap),
            )
        });
        let state = Self {
            presence,
            presence_put_limiter: RateLimiter::with_max_keys(per_second, burst, cap),
            sync,
            nonces: NonceCache::new(limits.max_registration_nonces, shared_by_processes),
            server_name: config.server_name.clone(),
            homeserver,
            config: Arc::new(config),
            registration_shared_secret,
            metrics: Metrics::default(),
            signing_key: federation.signing_key,
            remote_keys: federation.remote_keys,
            seen_transactions: SeenTransactions::default(),
            federation_bodies: Default::default(),
            outbound: federation.outbound,
            connections,
            spliced_sync,
            companion,
        };
        (Arc::new(state), receivers)
    }

    /// `presence.enabled: false`: no presence at all.
    pub fn presence_disabled(&self) -> bool {
        self.config.presence_enabled() == crate::config::presence::PresenceEnabled::Disabled
    }

    /// Runs a store call on the blocking pool (SQLite calls block).
    /// The closure may fail with any error that maps to an [`ApiError`]
    /// (usually [`StoreError`](crate::store::StoreError)).
    pub async fn db<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError> + Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    {
        crate::store::blocking(&self.homeserver.store, f)
            .await
            .map_err(ApiError::internal)?
            .map_err(Into::into)
    }

    /// How much each piece of request-grown state holds now.
    pub fn held_state(&self) -> HeldState {
        let l = &self.homeserver.auth_limiters;
        HeldState {
            uia_sessions: self.homeserver.uia_sessions.len(),
            registration_nonces: self.nonces.len(),
            rate_limit_buckets: self.presence_put_limiter.tracked_keys()
                + self.sync.rate_limit_buckets()
                + l.login_address.tracked_keys()
                + l.login_account.tracked_keys()
                + l.login_failed.tracked_keys()
                + l.registration.tracked_keys(),
            cached_filters: self.homeserver.cached_filters(),
        }
    }
}

/// Single-use registration nonces, each valid for a minute (as in Synapse).
/// Anyone may ask for one, so at most `max_registration_nonces` are kept:
/// a flood of requests drops the oldest unused nonces, never grows memory.
pub(crate) struct NonceCache {
    issued: Mutex<ExpiringMap<String, ()>>,
    /// Nonces are signed instead of kept: another process of the same
    /// server (a cluster node) must accept what this one handed out.
    signed: bool,
}

impl NonceCache {
    const LIFETIME: Duration = Duration::from_secs(60);

    pub(crate) fn new(capacity: usize, signed: bool) -> Self {
        Self {
            issued: Mutex::new(ExpiringMap::new(Self::LIFETIME, capacity)),
            signed,
        }
    }

    /// Whether nonces are signed (and checked by signature) rather than
    /// kept here.
    pub(crate) fn signed(&self) -> bool {
        self.signed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiringMap<String, ()>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a fresh nonce.
    pub(crate) fn insert(&self, nonce: String, now: Instant) {
        self.lock().insert(nonce, (), now);
    }

    /// Consumes a nonce; false if unknown, used or expired.
    pub(crate) fn take(&self, nonce: &str, now: Instant) -> bool {
        self.lock().remove(nonce, now).is_some()
    }

    /// Nonces held, after dropping the expired ones.
    pub(crate) fn len(&self) -> usize {
        let mut issued = self.lock();
        issued.expire(Instant::now());
        issued.len()
    }
}

/// How many entries each piece of request-grown state holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldState {
    /// Open user-interactive-auth sessions.
    pub uia_sessions: usize,
    /// Unused shared-secret registration nonces.
    pub registration_nonces: usize,
    /// Buckets of all rate limiters together.
    pub rate_limit_buckets: usize,
    /// Stored filters cached in memory.
    pub cached_filters: usize,
}
