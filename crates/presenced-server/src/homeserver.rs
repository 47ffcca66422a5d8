//! The small homeserver presence needs around it: accounts, login, UIA,
//! access tokens, rooms and membership, the room stream, and the rooms part
//! of `/sync`.
//!
//! The request path keeps its hot facts in memory, so a sync or PUT with
//! nothing new does not touch SQLite: `Homeserver::room_write` checks,
//! commits and, under one lock, records in [`room_stream::RoomStream`] the
//! event stream position and each concerned user's latest room change,
//! then wakes only those users' waiting syncs; every room's members live
//! in [`room_members::RoomMembers`] (loaded at start-up, changed only by
//! room writes after their commit), so membership checks never read
//! SQLite; the writes run back to back on one thread
//! ([`room_writer::RoomWriter`]). Access tokens are cached by hash
//! ([`token_cache::TokenCache`], dropped right after the commit of logout,
//! deactivation or a re-login on the same device), and stored filters,
//! which never change, are cached too.
//!
//! Architecture invariant: no HTTP here. Functions take the [`Homeserver`]
//! handle and fail with [`Error`], which `api/` maps to Matrix errors; SQL
//! stays in `store/`, and presence changes only leave as reports
//! (membership, activity) and sync wake-ups through the presence driver.

pub mod accounts;
pub mod activity;
pub(crate) mod auth_limits;
pub mod client_event;
mod error;
pub mod identity;
pub mod room_filter;
pub mod room_members;
pub mod room_stream;
pub mod room_writer;
pub mod rooms;
pub mod sync_rooms;
pub mod token_cache;
pub mod uia;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma_common::{DeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use self::activity::ActivityEvent;
use self::auth_limits::AuthLimiters;
pub use self::error::Error;
use self::room_members::RoomMembers;
use self::room_stream::{Committed, RoomStream};
use self::room_writer::RoomWriter;
use self::token_cache::TokenCache;
use self::uia::UiaSessions;
use crate::config::Config;
use crate::presence::PresenceService;
use crate::store::membership::MembershipChange;
use crate::store::{Store, StoreError};

/// The homeserver's shared state: storage, the in-memory room facts, live
/// tokens, open UIA sessions and the login limits. Handlers reach it as
/// `AppState::homeserver`.
pub struct Homeserver {
    /// `config.server_name`, the domain of local IDs.
    pub server_name: OwnedServerName,
    /// Storage. Call it through [`Homeserver::db`].
    pub store: Arc<dyn Store>,
    /// Event stream position, each user's latest room change, and the
    /// rooms' members.
    pub room_stream: RoomStream,
    /// The thread that runs room writes ([`Homeserver::room_write`]).
    room_writer: RoomWriter,
    /// Live access tokens by hash. Drop dead ones with
    /// [`Homeserver::tokens_died`], which also tells a cluster's other
    /// nodes.
    pub tokens: Arc<TokenCache>,
    /// Where accounts and tokens come from (presenced's own, or Synapse's
    /// in companion mode); chosen once at start-up.
    pub identity: identity::Identity,
    /// Stored filters (they never change once created).
    filters: Mutex<HashMap<(OwnedUserId, String), Arc<Value>>>,
    /// Open user-interactive auth sessions.
    pub(crate) uia_sessions: UiaSessions,
    /// `rc_login` and `rc_registration`.
    pub(crate) auth_limiters: AuthLimiters,
    /// What the presence driver hears of: membership changes, activity.
    reports: Reports,
    /// The presence driver, whose waiting syncs room writes wake.
    presence: PresenceService,
}

/// What room writes need: the members of the stored rooms, and the thread
/// that runs the writes.
pub struct RoomParts {
    /// Every room's invites, joins and join rule, as stored.
    pub members: RoomMembers,
    /// The room writer thread.
    pub writer: RoomWriter,
    /// Cluster mode: the event stream position read before `members`;
    /// room facts then follow the database's event stream from there.
    pub following_from: Option<i64>,
}

/// The sending ends of the homeserver's reports.
struct Reports {
    membership_tx: UnboundedSender<MembershipChange>,
    activity_tx: UnboundedSender<ActivityEvent>,
}

/// The receiving ends of the homeserver's reports. Whoever builds the
/// state must consume them (the presence feeds, a test, or a drain task),
/// or the unbounded queues grow forever.
pub struct StateReceivers {
    /// Every stored membership change (invite, join, leave), in commit order.
    pub membership_rx: UnboundedReceiver<MembershipChange>,
    /// User activity: sends, typing, receipts, read markers.
    pub activity_rx: UnboundedReceiver<ActivityEvent>,
}

impl Homeserver {
    /// Builds the homeserver around a config, an open store and its rooms
    /// (members read once at start-up, and the writer thread).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        rooms: RoomParts,
        presence: PresenceService,
    ) -> (Self, StateReceivers) {
        let (membership_tx, membership_rx) = unbounded_channel();
        let (activity_tx, activity_rx) = unbounded_channel();
        // The one start-up read of the event stream; after it, room writes
        // keep the position in memory.
        let following = rooms.following_from.is_some();
        let stored_max = rooms.following_from.unwrap_or_else(|| {
            store.max_stream().unwrap_or_else(|e| {
                tracing::error!("could not read the event stream position: {e}");
                0
            })
        });
        let homeserver = Self {
            server_name: config.server_name.clone(),
            store,
            room_stream: RoomStream::with_following(stored_max, rooms.members, following),
            room_writer: rooms.writer,
            tokens: if following {
                // A cluster node: see token_cache.rs.
                let asked = presence.clone();
                let cache = Arc::new(TokenCache::trusting_while(move || {
                    asked.token_cache_trusted()
                }));
                let forget = Arc::clone(&cache);
                presence.on_tokens_revoked(Arc::new(move |which| match which {
                    Some((user, device)) => forget.forget(user, device),
                    None => forget.forget_all(),
                }));
                cache
            } else {
                Arc::default()
            },
            identity: identity::Identity::Own,
            filters: Mutex::default(),
            uia_sessions: UiaSessions::new(config.request_limits.max_uia_sessions),
            auth_limiters: AuthLimiters::new(config),
            reports: Reports {
                membership_tx,
                activity_tx,
            },
            presence,
        };
        let receivers = StateReceivers {
            membership_rx,
            activity_rx,
        };
        (homeserver, receivers)
    }

    /// Runs a store call on the blocking pool (SQLite calls block).
    pub async fn db<T, E, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        E: Into<Error> + Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    {
        crate::store::blocking(&self.store, f)
            .await
            .map_err(Error::internal)?
            .map_err(Into::into)
    }

    /// A room write: runs `write` on the room writer thread under the room
    /// stream's write lock, with the rooms' current members to check
    /// against; then records what it committed (members, and the stream
    /// position for the room's joined members plus the targets of its
    /// membership changes, who may have just left) and wakes those users'
    /// waiting syncs. `write` returns its result and what it committed
    /// (`None`: nothing stored).
    pub(crate) async fn room_write<T, F>(self: &Arc<Self>, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store, &RoomMembers) -> Result<(T, Option<Committed>), StoreError>
            + Send
            + 'static,
    {
        let this = Arc::clone(self);
        if self.room_stream.is_following() {
            // Presence runs on the writer thread here: it may spawn tasks.
            let runtime = tokio::runtime::Handle::current();
            let (result, followed) = self
                .room_writer
                .run(move || {
                    let _runtime = runtime.enter();
                    let store = &*this.store;
                    this.room_stream.write_following(
                        |after, limit| store.room_events_after(after, limit),
                        |change| this.presence.apply_membership(change),
                        |members| write(store, members),
                    )
                })
                .await
                .map_err(Error::internal)??;
            self.report_followed(followed);
            return Ok(result);
        }
        let (result, woken) = self
            .room_writer
            .run(move || {
                this.room_stream
                    .write(|members| write(&*this.store, members))
            })
            .await
            .map_err(Error::internal)??;
        self.presence.wake_syncs(woken.iter().map(|u| &**u));
        Ok(result)
    }

    /// Drops tokens that died (one device's, or every device's of `user`)
    /// after the store deleted them: from this process's cache, and on a
    /// cluster node from every other node's before this returns, so the
    /// dead token is refused everywhere once the caller answers.
    pub async fn tokens_died(&self, user: &UserId, device: Option<&DeviceId>) {
        self.tokens.forget(user, device);
        self.presence.tokens_revoked(user, device).await;
    }

    /// Cluster mode: applies the room writes of every node (this one's
    /// included) a few times a second, between this node's own writes,
    /// for as long as the homeserver lives.
    pub fn spawn_room_follower(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ROOM_FOLLOW_INTERVAL).await;
                let Some(this) = weak.upgrade() else {
                    return;
                };
                let follower = Arc::clone(&this);
                let runtime = tokio::runtime::Handle::current();
                let followed = this
                    .room_writer
                    .run(move || {
                        let _runtime = runtime.enter();
                        let store = &*follower.store;
                        follower.room_stream.follow(
                            |after, limit| store.room_events_after(after, limit),
                            |change| follower.presence.apply_membership(change),
                        )
                    })
                    .await;
                match followed {
                    Ok(Ok(followed)) => this.report_followed(followed),
                    Ok(Err(e)) => tracing::warn!("following other nodes' room writes: {e}"),
                    Err(e) => tracing::warn!("following other nodes' room writes: {e:?}"),
                }
            }
        });
    }

    /// Wakes the syncs a catch-up concerns and passes its membership
    /// changes (presence has them already) to the observers' channel.
    fn report_followed(&self, followed: room_stream::Followed) {
        self.presence
            .wake_syncs(followed.woken.iter().map(|u| &**u));
        for change in followed.memberships {
            let _ = self.reports.membership_tx.send(change);
        }
    }

    /// A stored filter, from memory after its first use.
    pub(crate) async fn filter(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<Arc<Value>>, Error> {
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

    /// Stored filters held in memory now.
    pub(crate) fn cached_filters(&self) -> usize {
        self.lock_filters().len()
    }

    fn lock_filters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(OwnedUserId, String), Arc<Value>>> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a stored membership change. A closed channel means nobody
    /// listens any more (shutdown), which is not the request's problem.
    pub(crate) fn emit_membership(&self, change: MembershipChange) {
        // A cluster node reports what it follows from the database,
        // its own writes included (`report_followed`), exactly once.
        if self.room_stream.is_following() {
            return;
        }
        let _ = self.reports.membership_tx.send(change);
    }

    /// Reports user activity; see [`Homeserver::emit_membership`].
    pub(crate) fn emit_activity(&self, event: ActivityEvent) {
        let _ = self.reports.activity_tx.send(event);
    }
}

/// How often a cluster node looks for other nodes' room writes.
const ROOM_FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Stored filters kept in memory at most.
const MAX_CACHED_FILTERS: usize = 10_000;
