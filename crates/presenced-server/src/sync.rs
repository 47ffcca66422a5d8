//! The `/sync` service: one long-poll, from a parsed request to an answer.
//!
//! [`SyncService::serve`] holds the device as syncing for the whole
//! request, then loops: it asks the room stream whether the user's rooms
//! moved after the token (the database only for a token older than this
//! process), asks the presence driver for the presence section
//! ([`PresenceService::sync`]), and with nothing new waits on the user's
//! wake-up until the deadline. When something is there (or time is up) it
//! reads the rooms section from the homeserver (only the rooms the
//! filter's `room.rooms` / `room.not_rooms` allow) and merges both into a
//! [`SyncAnswer`] with its `next_batch` token.
//!
//! Architecture invariant: no HTTP here. The handler (`api/client/sync.rs`)
//! parses the query and the filter and caps the timeout; this layer sits
//! between `api` and `homeserver`/`presence`, takes only the parts it uses
//! (never `AppState`), and fails with [`SyncError`], which `api/` maps.
//!
//! What lives here, and why here:
//!
//! - `token`: the `s{events}_{presence}` token, read and written. It
//!   joins the rooms half and the presence half, which only the merge
//!   here sees together.
//! - `long_polls`: the bound on long-polls open per device. Only the loop
//!   asks it whether to stop waiting, so the service owns the table.
//! - `answer`: the answer and its JSON shape, kept apart from the loop so
//!   the loop hands over data and the handler writes the bytes.
//! - `error`: [`SyncError`].
//!
//! The `rc_presence` limit of syncs is applied here too: a limited sync is
//! still answered, the limit only decides whether its `set_presence`
//! counts, which is a presence rule, not a refusal the handler could make.

pub mod answer;
mod error;
mod long_polls;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_engine::Presence;
use ruma_common::{DeviceId, UserId};
use serde_json::{json, Value};

pub use self::answer::SyncAnswer;
pub use self::error::SyncError;
use self::long_polls::{LongPoll, LongPolls};
use self::token::{NextBatch, SinceToken};
use crate::config::presence::PresenceEnabled;
use crate::config::Config;
use crate::homeserver::room_filter::RoomFilter;
use crate::homeserver::room_stream::RoomsMoved;
use crate::homeserver::{sync_rooms, Homeserver};
use crate::presence::filter::PresenceFilter;
use crate::presence::{PresenceService, SyncEffect, SyncPresence};
use crate::util::clock::now;
use crate::util::rate_limit::RateLimiter;

/// What a sync needs, held once for every request.
pub struct SyncService {
    homeserver: Arc<Homeserver>,
    presence: PresenceService,
    /// Open long-polls per device, for their bound.
    long_polls: LongPolls,
    /// `rc_presence` for presence-affecting syncs (its own bucket, apart
    /// from `PUT /presence`'s).
    presence_limiter: RateLimiter,
    /// `presence.enabled: false`: no presence section at all.
    presence_disabled: bool,
    /// `presence.include_offline_users_on_sync`.
    include_offline_users: bool,
}

/// One sync, as the handler parsed it.
pub struct SyncRequest<'a> {
    /// Who syncs.
    pub user: &'a UserId,
    /// From which device.
    pub device: &'a DeviceId,
    /// The `since` token (`None`: an initial sync).
    pub since: Option<SinceToken>,
    /// `full_state=true`: answer as an initial sync would.
    pub full_state: bool,
    /// `set_presence`.
    pub set_presence: Presence,
    /// The filter's `presence` section.
    pub presence_filter: PresenceFilter,
    /// The filter's `room` section.
    pub room_filter: RoomFilter,
    /// How long to wait for something new (already capped).
    pub timeout: Duration,
}

impl SyncService {
    /// The service around the homeserver and the presence driver, with
    /// the config values a sync reads.
    pub fn new(config: &Config, homeserver: Arc<Homeserver>, presence: PresenceService) -> Self {
        let rc = &config.rc_presence.per_user;
        Self {
            homeserver,
            presence,
            long_polls: LongPolls::new(config.connections.max_long_polls_per_device),
            presence_limiter: RateLimiter::with_max_keys(
                rc.per_second,
                rc.burst_count,
                config.request_limits.max_rate_limit_keys,
            ),
            presence_disabled: config.presence_enabled() == PresenceEnabled::Disabled,
            include_offline_users: config.presence.include_offline_users_on_sync,
        }
    }

    /// Rate-limit buckets held now (for the admin API's held state).
    pub fn rate_limit_buckets(&self) -> usize {
        self.presence_limiter.tracked_keys()
    }

    /// Answers one sync: at once when something is new after the token,
    /// else when something arrives or the timeout ends.
    pub async fn serve(&self, request: SyncRequest<'_>) -> Result<SyncAnswer, SyncError> {
        let SyncRequest {
            user,
            device,
            since,
            full_state,
            set_presence,
            presence_filter,
            room_filter,
            timeout,
        } = request;
        let deadline = Instant::now() + timeout;
        // Past the device's bound of open long-polls, the oldest answers now.
        let long_poll = LongPoll::start(&self.long_polls, &self.presence, user, device, timeout);

        // The device counts as syncing for the whole request, whatever its
        // filter lets through: the guard ends the sync when the request ends
        // (or is dropped because the client went away).
        let effect = self.effect(user, set_presence);
        let _syncing = self
            .presence
            .start_syncing(user, Some(device), effect)
            .await;
        let presence_wanted = !presence_filter.blocks_all() && !self.presence_disabled;
        // A full-state sync answers as an initial one: no position at all.
        let (ev_since, mut presence_since) = match since {
            Some(SinceToken { events, presence }) if !full_state => (Some(events), presence),
            _ => (None, None),
        };
        let include_offline = presence_since.is_some() || self.include_offline_users;

        // Whether the user's rooms moved after the token, from memory; only a
        // token older than this process needs the database (each loop turn,
        // until a room change is recorded).
        let rooms_moved =
            |e: i64| self.homeserver.room_stream.moved_since(user, e).1 == RoomsMoved::Yes;
        loop {
            let (upto, rooms_ready) = self.rooms_position(user, ev_since).await?;
            let wait = if rooms_ready {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let stop_waiting = || long_poll.superseded() || ev_since.is_some_and(rooms_moved);
            let presence = if presence_wanted {
                self.presence
                    .sync(crate::presence::SyncRequest {
                        user,
                        since: presence_since.clone(),
                        room_since: ev_since,
                        include_offline,
                        timeout: wait,
                        stop_waiting: Some(&stop_waiting),
                    })
                    .await
            } else {
                if !wait.is_zero() {
                    self.presence
                        .wait_without_presence(user, wait, &stop_waiting)
                        .await;
                }
                SyncPresence {
                    states: Vec::new(),
                    next: presence_since
                        .clone()
                        .unwrap_or_else(|| self.presence.token()),
                }
            };
            let states = presence_filter.apply(presence.states);
            let done = rooms_ready
                || !states.is_empty()
                || Instant::now() >= deadline
                || self.presence.is_stopping()
                || long_poll.superseded();
            if !done {
                // Woken by a room change, or by presence the filter drops
                // (senders): look again from the top, past what was dropped,
                // so it does not end the next wait at once.
                if presence_since.is_some() {
                    presence_since = Some(presence.next);
                }
                continue;
            }
            let rooms = if rooms_ready {
                self.rooms_section(user, device, room_filter, ev_since, upto)
                    .await?
            } else {
                // Nothing moved in the user's rooms up to `upto`: the section
                // the database would build is empty.
                json!({"join": {}, "invite": {}, "leave": {}})
            };
            let next_batch = NextBatch {
                events: upto,
                presence: presence.next,
            };
            return Ok(SyncAnswer::new(next_batch, rooms, states, now()));
        }
    }

    /// What the sync does to the device's presence. A rate-limited sync
    /// is still served and keeps the device alive; only its
    /// `set_presence` is not applied, so a client's next long-poll right
    /// after a sync never lets it time out. The limit changes what the
    /// sync does, never whether it is answered, which is why it is
    /// applied here and not in the handler.
    fn effect(&self, user: &UserId, set_presence: Presence) -> SyncEffect {
        if set_presence == Presence::Offline {
            SyncEffect::None
        } else if self.presence_limiter.take(user, Instant::now()).is_ok() {
            SyncEffect::Set(set_presence)
        } else {
            SyncEffect::KeepAlive
        }
    }

    /// The event stream position to answer up to, and whether the user's
    /// rooms moved between `since` and it (always for an initial sync).
    async fn rooms_position(
        &self,
        user: &UserId,
        since: Option<i64>,
    ) -> Result<(i64, bool), SyncError> {
        let room_stream = &self.homeserver.room_stream;
        let Some(since) = since else {
            return Ok((room_stream.position(), true));
        };
        Ok(match room_stream.moved_since(user, since) {
            (upto, RoomsMoved::Yes) => (upto, true),
            (upto, RoomsMoved::No) => (upto, false),
            (upto, RoomsMoved::Unknown) => {
                let user = user.to_owned();
                let changed = self
                    .homeserver
                    .db(move |s| sync_rooms::rooms_changed(s, &user, since, upto))
                    .await?;
                (upto, changed)
            }
        })
    }

    /// The rooms section between the two positions, read from the database.
    async fn rooms_section(
        &self,
        user: &UserId,
        device: &DeviceId,
        wanted: RoomFilter,
        since: Option<i64>,
        upto: i64,
    ) -> Result<Value, SyncError> {
        let (user, device) = (user.to_owned(), device.to_owned());
        let rooms = self
            .homeserver
            .db(move |s| sync_rooms::rooms_section(s, &user, &device, &wanted, since, upto))
            .await?;
        Ok(rooms)
    }
}
