//! `AppState`: what every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruma_common::{OwnedServerName, OwnedUserId, UserId};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::activity::ActivityEvent;
use crate::api::error::ApiError;
use crate::config::{Config, Secret};
use crate::expiring_map::ExpiringMap;
use crate::federation::sender::OutboundPresence;
use crate::federation::transactions::SeenTransactions;
use crate::federation::{RemoteKeyCache, ServerSigningKey};
use crate::limiters::{AuthLimiters, HeldState};
use crate::membership::MembershipChange;
use crate::metrics::Metrics;
use crate::presence::rate_limit::RateLimiter;
use crate::presence::PresenceService;
use crate::room_members::RoomMembers;
use crate::room_stream::{Committed, RoomStream};
use crate::room_writer::RoomWriter;
use crate::store::{Store, StoreError};
use crate::token_cache::TokenCache;
use crate::uia::UiaSessions;

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
    /// Storage. Call it through [`AppState::db`].
    pub store: Arc<dyn Store>,
    /// Every stored membership change (invite, join, leave), in commit order.
    pub membership_tx: UnboundedSender<MembershipChange>,
    /// User activity: sends, typing, receipts, read markers.
    pub activity_tx: UnboundedSender<ActivityEvent>,
    /// The effective shared secret (configured, or generated at first start).
    pub registration_shared_secret: Option<Secret>,
    /// Nonces handed out by `GET /_synapse/admin/v1/register`.
    pub(crate) nonces: NonceCache,
    /// The presence engine driver.
    pub presence: PresenceService,
    /// `rc_presence` for `PUT /presence`.
    pub(crate) presence_put_limiter: RateLimiter,
    /// `rc_presence` for presence-affecting syncs (its own bucket).
    pub(crate) presence_sync_limiter: RateLimiter,
    /// `rc_login` and `rc_registration`.
    pub(crate) auth_limiters: AuthLimiters,
    /// Handler counters for `GET /metrics`.
    pub metrics: Metrics,
    /// Open user-interactive auth sessions.
    pub(crate) uia_sessions: UiaSessions,
    /// Our federation signing key.
    pub signing_key: Arc<ServerSigningKey>,
    /// Other servers' verified keys.
    pub remote_keys: Arc<RemoteKeyCache>,
    /// Federation transactions already processed.
    pub(crate) seen_transactions: SeenTransactions,
    /// Outgoing federation presence (outbox and senders).
    pub outbound: OutboundPresence,
    /// Event stream position, each user's latest room change, and the
    /// rooms' members.
    pub room_stream: RoomStream,
    /// The thread that runs room writes ([`AppState::room_write`]).
    room_writer: RoomWriter,
    /// Live access tokens by hash.
    pub tokens: TokenCache,
    /// Stored filters (they never change once created).
    filters: Mutex<HashMap<(OwnedUserId, String), Arc<Value>>>,
    /// Open connections of all listeners and their caps (`connections:`).
    pub connections: Arc<crate::listeners::ConnectionTracker>,
    /// Open `/sync` long-polls per device, for their bound.
    pub(crate) long_polls: crate::long_polls::LongPolls,
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

/// What room writes need in [`AppState`]: the members of the stored
/// rooms, and the thread that runs the writes.
pub struct RoomParts {
    /// Every room's invites, joins and join rule, as stored.
    pub members: RoomMembers,
    /// The room writer thread.
    pub writer: RoomWriter,
}

/// The receiving ends of [`AppState`]'s channels. Whoever builds the state
/// must consume them (the engine driver, a test, or a drain task), or the
/// unbounded queues grow forever.
pub struct StateReceivers {
    /// Membership changes.
    pub membership_rx: UnboundedReceiver<MembershipChange>,
    /// Activity notices.
    pub activity_rx: UnboundedReceiver<ActivityEvent>,
}

impl AppState {
    /// Builds the shared state around a config, an open store and its
    /// rooms (members read once at start-up, and the writer thread).
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        rooms: RoomParts,
        registration_shared_secret: Option<Secret>,
        presence: PresenceService,
        federation: FederationParts,
    ) -> (Arc<Self>, StateReceivers) {
        let (membership_tx, membership_rx) = unbounded_channel();
        let (activity_tx, activity_rx) = unbounded_channel();
        // The one start-up read of the event stream; after it, room writes
        // keep the position in memory.
        let stored_max = store.max_stream().unwrap_or_else(|e| {
            tracing::error!("could not read the event stream position: {e}");
            0
        });
        let rc = &config.rc_presence.per_user;
        let (per_second, burst) = (rc.per_second, rc.burst_count);
        let limits = &config.request_limits;
        let cap = limits.max_rate_limit_keys;
        let conn_limits = config.connections.resolve(crate::fd_limit::raise_and_get());
        let limits_per_device = config.connections.max_long_polls_per_device;
        let connections = Arc::new(crate::listeners::ConnectionTracker::new(conn_limits));
        let state = Self {
            presence,
            presence_put_limiter: RateLimiter::with_max_keys(per_second, burst, cap),
            presence_sync_limiter: RateLimiter::with_max_keys(per_second, burst, cap),
            auth_limiters: AuthLimiters::new(&config),
            nonces: NonceCache::new(limits.max_registration_nonces),
            uia_sessions: UiaSessions::new(limits.max_uia_sessions),
            server_name: config.server_name.clone(),
            config: Arc::new(config),
            store,
            membership_tx,
            activity_tx,
            registration_shared_secret,
            metrics: Metrics::default(),
            signing_key: federation.signing_key,
            remote_keys: federation.remote_keys,
            seen_transactions: SeenTransactions::default(),
            outbound: federation.outbound,
            room_stream: RoomStream::new(stored_max, rooms.members),
            room_writer: rooms.writer,
            tokens: TokenCache::default(),
            filters: Mutex::default(),
            connections,
            long_polls: crate::long_polls::LongPolls::new(limits_per_device),
        };
        (
            Arc::new(state),
            StateReceivers {
                membership_rx,
                activity_rx,
            },
        )
    }

    /// `presence.enabled: false`: no presence at all.
    pub fn presence_disabled(&self) -> bool {
        self.config.presence_enabled() == crate::config::presence::PresenceEnabled::Disabled
    }

    /// Runs a store call on the blocking pool (SQLite calls block).
    /// The closure may fail with any error that maps to an [`ApiError`]
    /// (usually [`StoreError`]).
    pub async fn db<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError> + Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(ApiError::internal)?
            .map_err(Into::into)
    }

    /// A room write: runs `write` on the room writer thread under the room
    /// stream's write lock, with the rooms' current members to check
    /// against; then records what it committed (members, and the stream
    /// position for the room's joined members plus the targets of its
    /// membership changes, who may have just left) and wakes those users'
    /// waiting syncs. `write` returns its result and what it committed
    /// (`None`: nothing stored).
    pub(crate) async fn room_write<T, F>(self: &Arc<Self>, write: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store, &RoomMembers) -> Result<(T, Option<Committed>), StoreError>
            + Send
            + 'static,
    {
        let this = Arc::clone(self);
        let (result, woken) = self
            .room_writer
            .run(move || {
                this.room_stream
                    .write(|members| write(&*this.store, members))
            })
            .await
            .map_err(ApiError::internal)??;
        self.presence.wake_syncs(woken.iter().map(|u| &**u));
        Ok(result)
    }

    /// A stored filter, from memory after its first use.
    pub(crate) async fn filter(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<Arc<Value>>, ApiError> {
        let key = (user.to_owned(), id.to_owned());
        if let Some(found) = self.lock_filters().get(&key) {
            return Ok(Some(Arc::clone(found)));
        }
        let (u, i) = key.clone();
        let Some(value) = self.db(move |s| s.filter(&u, &i)).await? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        let mut filters = self.lock_filters();
        // Users may store any number of filters; the cache stays bounded
        // (a cleared cache only costs a re-read per filter in use).
        if filters.len() >= MAX_CACHED_FILTERS {
            filters.clear();
        }
        filters.insert(key, Arc::clone(&value));
        Ok(Some(value))
    }

    fn lock_filters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(OwnedUserId, String), Arc<Value>>> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How much each piece of request-grown state holds now.
    pub fn held_state(&self) -> HeldState {
        let l = &self.auth_limiters;
        HeldState {
            uia_sessions: self.uia_sessions.len(),
            registration_nonces: self.nonces.len(),
            rate_limit_buckets: self.presence_put_limiter.tracked_keys()
                + self.presence_sync_limiter.tracked_keys()
                + l.login_address.tracked_keys()
                + l.login_account.tracked_keys()
                + l.login_failed.tracked_keys()
                + l.registration.tracked_keys(),
            cached_filters: self.lock_filters().len(),
        }
    }

    /// Reports a stored membership change. A closed channel means nobody
    /// listens any more (shutdown), which is not the request's problem.
    pub(crate) fn emit_membership(&self, change: MembershipChange) {
        let _ = self.membership_tx.send(change);
    }

    /// Reports user activity; see [`AppState::emit_membership`].
    pub(crate) fn emit_activity(&self, event: ActivityEvent) {
        let _ = self.activity_tx.send(event);
    }
}

/// Stored filters kept in memory at most.
const MAX_CACHED_FILTERS: usize = 10_000;

/// Single-use registration nonces, each valid for a minute (as in Synapse).
/// Anyone may ask for one, so at most `max_registration_nonces` are kept:
/// a flood of requests drops the oldest unused nonces, never grows memory.
pub(crate) struct NonceCache {
    issued: Mutex<ExpiringMap<String, ()>>,
}

impl NonceCache {
    const LIFETIME: Duration = Duration::from_secs(60);

    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            issued: Mutex::new(ExpiringMap::new(Self::LIFETIME, capacity)),
        }
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
