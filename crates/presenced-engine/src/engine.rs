//! The [`Engine`]: presence state for a whole homeserver, driven by inputs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ruma_common::{DeviceId, OwnedServerName, OwnedUserId, ServerName, UserId};

use crate::audience::Audience;
use crate::machine::{self, DeviceState};
use crate::output::{BatchId, Output};
use crate::remote_cap::RemoteIndex;
use crate::rooms::RoomTable;
use crate::stats::EngineStats;
use crate::stream::{ChangeLog, RecentLog, StreamPos};
use crate::timers::TimerQueue;
use crate::users::{Pending, UserIdx, UserTable};
use crate::{EngineConfig, Presence, PresenceState, Timestamp, Tracking};

/// Presence for one homeserver: every user's state, the membership index,
/// timers and the presence stream.
///
/// # How to drive it
/// The API follows quinn-proto's four groups:
/// - getters (`&self`): [`Engine::presence`], [`Engine::sync_view`],
///   [`Engine::can_see`], [`Engine::stats`], ...;
/// - `handle_*` inputs from clients, federation, the router and the clock,
///   each taking `now`;
/// - commands from the module API ([`Engine::send_local_online_presence_to`],
///   [`Engine::set_presence_for_users`]);
/// - `poll_*` outputs: after every input, call [`Engine::poll_output`] until
///   it returns `None` and act on each [`Output`] (persist, route, wake,
///   send); then sleep until [`Engine::poll_timeout`] and call
///   [`Engine::handle_timeout`]. Calling `handle_timeout` early or twice is
///   harmless.
///
/// Timestamps passed in should not go backwards; the engine never reads a
/// clock itself.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) server_name: OwnedServerName,
    pub(crate) users: UserTable,
    pub(crate) rooms: RoomTable,
    pub(crate) timers: TimerQueue,
    pub(crate) log: ChangeLog,
    /// Users collected for the next fan-out, in arrival order.
    pub(crate) batch: Vec<UserIdx>,
    /// Notifiable changes not yet handed out for persistence.
    pub(crate) persist: Vec<(StreamPos, PresenceState)>,
    pub(crate) outputs: VecDeque<Output>,
    /// Batches waiting for the router's answer.
    pub(crate) in_flight: HashMap<BatchId, crate::fanout::InFlight>,
    pub(crate) next_batch: u64,
    /// Recent joins and invites, so syncs can add the current presence of
    /// the users they introduce (spec §10.4).
    pub(crate) meetings: RecentLog<crate::joins::Meeting>,
    /// Room-less remote users per server, for the per-server cap.
    pub(crate) remote: RemoteIndex,
    /// Users forgotten by the cap, with their last stream position, for
    /// the next [`Output::Forget`].
    pub(crate) forgotten: Vec<(OwnedUserId, StreamPos)>,
    pub(crate) counters: EngineStats,
}

/// Joins and invites remembered for incremental syncs; older tokens get
/// every co-member.
const MEETING_LOG_CAPACITY: usize = 65_536;

/// What an explicit set does to the status message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StatusChange {
    Keep,
    Set(Option<Arc<str>>),
}

impl Engine {
    /// A new engine for `server_name`, whose stream continues from `position`
    /// (0 for a fresh server).
    pub fn new(config: EngineConfig, server_name: OwnedServerName, position: StreamPos) -> Self {
        let log = ChangeLog::new(position, config.change_log_capacity);
        Self {
            config,
            server_name,
            users: UserTable::default(),
            rooms: RoomTable::default(),
            timers: TimerQueue::default(),
            log,
            batch: Vec::new(),
            persist: Vec::new(),
            outputs: VecDeque::new(),
            in_flight: HashMap::new(),
            next_batch: 0,
            meetings: RecentLog::new(MEETING_LOG_CAPACITY, position),
            remote: RemoteIndex::default(),
            forgotten: Vec::new(),
            counters: EngineStats::default(),
        }
    }

    // ---- getters -------------------------------------------------------

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether a user belongs to this server.
    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    /// The current presence stream position.
    pub fn position(&self) -> StreamPos {
        self.log.current()
    }

    /// A user's presence if the engine has any record of them. Unknown users
    /// have the default (offline) state, which is not stored (W10).
    pub fn presence_of(&self, user: &UserId) -> Option<&PresenceState> {
        self.users.find(user).map(|u| &self.users.get(u).state)
    }

    /// A user's presence, the default state for unknown users.
    pub fn presence(&self, user: &UserId) -> PresenceState {
        self.presence_of(user)
            .cloned()
            .unwrap_or_else(|| PresenceState::new(user.to_owned()))
    }

    /// A user's device records (local users), for operators and tests.
    pub fn devices_of(&self, user: &UserId) -> &[DeviceState] {
        self.users
            .find(user)
            .map_or(&[], |u| self.users.get(u).devices.as_slice())
    }

    /// Every state the engine holds, for a shutdown flush of timestamps
    /// that changed without a notification.
    pub fn states(&self) -> impl Iterator<Item = &PresenceState> {
        self.users.iter().map(|(_, s)| &s.state)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.counters.clone();
        stats.users_tracked = self.users.len();
        stats.local_users = self.users.iter().filter(|(_, s)| s.is_local).count();
        stats.users_not_offline = self
            .users
            .iter()
            .filter(|(_, s)| s.state.presence != Presence::Offline)
            .count();
        stats.rooms = self.rooms.len();
        stats.timers = self.timers.len();
        stats.stream_position = self.log.current();
        stats.batches_in_flight = self.in_flight.len();
        stats
    }

    /// Approximate bytes of memory held by the engine's tables.
    pub fn memory_bytes(&self) -> usize {
        self.users.heap_bytes()
            + self.rooms.heap_bytes()
            + self.timers.len() * 48
            + self.log_bytes()
            + self.meetings.capacity_bytes()
            + self.remote.heap_bytes()
    }

    fn log_bytes(&self) -> usize {
        self.config
            .change_log_capacity
            .min(self.log.distance(0) as usize)
            * 16
    }

    pub(crate) fn audience(&self) -> Audience<'_> {
        Audience {
            users: &self.users,
            rooms: &self.rooms,
        }
    }

    // ---- outputs -------------------------------------------------------

    /// The next thing the driver must do, or `None` when there is nothing.
    pub fn poll_output(&mut self) -> Option<Output> {
        if !self.persist.is_empty() {
            return Some(Output::Persist(std::mem::take(&mut self.persist)));
        }
        if !self.forgotten.is_empty() {
            return Some(Output::Forget(std::mem::take(&mut self.forgotten)));
        }
        if self.outputs.is_empty() && !self.batch.is_empty() {
            self.flush_batch();
        }
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    // ---- inputs: clock -------------------------------------------------

    /// Applies every timeout due at `now` (idle, sync timeout, busy timeout,
    /// currently-active expiry, federation keepalive and remote timeout).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for user in self.timers.pop_due(now) {
            self.users.get_mut(user).deadline = None;
            self.expire(now, user);
        }
    }

    fn expire(&mut self, now: Timestamp, user: UserIdx) {
        let slot = self.users.get_mut(user);
        let mut proposed = slot.state.clone();
        if slot.is_local {
            if machine::expire_devices(&mut slot.devices, now, &self.config) {
                proposed.presence = machine::combine(&slot.devices);
            }
        } else if now.saturating_since(proposed.last_federation_update_ts)
            > self.config.federation_timeout
        {
            proposed.presence = Presence::Offline;
        }
        self.propose(now, user, proposed, false);
    }

    // ---- inputs: clients -----------------------------------------------

    /// An explicit set (`PUT /presence/{userId}/status`) from one device.
    /// `status_msg: None` clears the message, as an absent key does.
    pub fn handle_set_presence(
        &mut self,
        now: Timestamp,
        user: &UserId,
        device: Option<&DeviceId>,
        presence: Presence,
        status_msg: Option<&str>,
    ) {
        let Some(u) = self.tracked_local(user) else {
            return;
        };
        let status = StatusChange::Set(crate::presence::status_msg(status_msg));
        self.set_device_state(now, u, device, presence, status, false);
    }

    /// A presence-affecting sync starts (`/sync?set_presence=...`). Returns
    /// whether it counts: when it does, the driver must call
    /// [`Engine::handle_sync_end`] when the request finishes. `offline`
    /// (or tracking off) means the request does not touch presence.
    pub fn handle_sync_start(
        &mut self,
        now: Timestamp,
        user: &UserId,
        device: Option<&DeviceId>,
        set_presence: Presence,
    ) -> bool {
        if set_presence == Presence::Offline {
            return false;
        }
        let Some(u) = self.tracked_local(user) else {
            return false;
        };
        let slot = self.users.get_mut(u);
        let requested = if slot.state.presence == Presence::Busy {
            // Busy is sticky against syncs (spec §2.1 step 4).
            Presence::Busy
        } else {
            set_presence
        };
        device_mut(&mut slot.devices, device).syncing += 1;
        self.set_device_state(now, u, device, requested, StatusChange::Keep, true);
        true
    }

    /// A sync starts that keeps the device alive without applying its
    /// `set_presence` (the driver rate-limited it). The device counts as
    /// syncing exactly as with [`Engine::handle_sync_start`], so an open
    /// long-poll never lets its user time out; its presence and the
    /// user's state are left as they are. Same contract: when this returns
    /// true, call [`Engine::handle_sync_end`] when the request finishes.
    pub fn handle_sync_keepalive_start(
        &mut self,
        now: Timestamp,
        user: &UserId,
        device: Option<&DeviceId>,
    ) -> bool {
        let Some(u) = self.tracked_local(user) else {
            return false;
        };
        let dev = device_mut(&mut self.users.get_mut(u).devices, device);
        dev.syncing += 1;
        dev.last_sync_ts = now;
        self.reschedule(u);
        true
    }

    /// A presence-affecting sync ends. The device's keepalive counts from
    /// now, the end of the request (W13).
    pub fn handle_sync_end(&mut self, now: Timestamp, user: &UserId, device: Option<&DeviceId>) {
        let Some(u) = self.tracked_local(user) else {
            return;
        };
        let slot = self.users.get_mut(u);
        let Some(dev) = slot
            .devices
            .iter_mut()
            .find(|d| d.device_id.as_deref() == device)
        else {
            return;
        };
        dev.syncing = dev.syncing.saturating_sub(1);
        dev.last_sync_ts = now;
        slot.devices.retain(|d| !d.is_inert());
        let mut proposed = slot.state.clone();
        proposed.presence = machine::combine(&slot.devices);
        proposed.last_user_sync_ts = now;
        self.propose(now, u, proposed, false);
    }

    /// The user did something that counts as activity (sent an event,
    /// typed, sent a receipt or read marker).
    pub fn handle_activity(&mut self, now: Timestamp, user: &UserId, device: Option<&DeviceId>) {
        let Some(u) = self.tracked_local(user) else {
            return;
        };
        let slot = self.users.get_mut(u);
        let dev = device_mut(&mut slot.devices, device);
        dev.last_active_ts = now;
        if dev.presence == Presence::Unavailable {
            dev.presence = Presence::Online;
        }
        slot.devices.retain(|d| !d.is_inert());
        let mut proposed = slot.state.clone();
        proposed.last_active_ts = now;
        proposed.presence = machine::combine(&slot.devices);
        self.propose(now, u, proposed, false);
    }

    /// The account is gone: offline, no message, no devices (W23).
    pub fn handle_deactivate(&mut self, now: Timestamp, user: &UserId) {
        let Some(u) = self.users.find(user) else {
            return;
        };
        let slot = self.users.get_mut(u);
        slot.devices.clear();
        let mut proposed = slot.state.clone();
        proposed.presence = Presence::Offline;
        proposed.status_msg = None;
        proposed.currently_active = false;
        self.propose(now, u, proposed, false);
    }

    /// Restores stored states at start-up. Local users who were not offline
    /// get a pseudo-device that times out like any other unless they sync
    /// again (spec §8.2).
    pub fn restore(&mut self, states: impl IntoIterator<Item = (StreamPos, PresenceState)>) {
        for (pos, state) in states {
            let is_local = self.is_local(&state.user_id);
            let u = self.users.intern(&state.user_id, is_local);
            let slot = self.users.get_mut(u);
            if is_local && state.presence != Presence::Offline {
                slot.devices = vec![DeviceState {
                    device_id: None,
                    presence: state.presence,
                    last_active_ts: state.last_active_ts,
                    last_sync_ts: state.last_user_sync_ts,
                    syncing: 0,
                }];
            }
            slot.state = state;
            self.users.set_last_change(u, pos);
            self.reschedule(u);
            self.track_remote(u);
        }
        self.enforce_remote_cap();
    }

    /// Restores a stored full-presence mark (see
    /// [`Output::PersistFullPresence`]). Create the engine at a position
    /// past every restored `at`, so tokens handed out after the restart do
    /// not fall at or before a mark and get the snapshot again and again.
    pub fn restore_full_presence(&mut self, user: &UserId, at: StreamPos) {
        if !self.is_local(user) {
            return;
        }
        let u = self.users.intern(user, true);
        let slot = self.users.get_mut(u);
        slot.full_presence_at = slot.full_presence_at.max(Some(at));
    }

    // ---- inputs: cluster roles -----------------------------------------

    /// Cluster mode: a state another node computed for a user it owns,
    /// applied as it is (no state machine, no timers, no persistence, no
    /// federation send: all of that happened on the owner). A change
    /// enters the stream and wakes this node's watchers. Marks the user
    /// replicated if it was not.
    pub fn handle_replicated_state(&mut self, state: PresenceState) {
        let is_local = self.is_local(&state.user_id);
        let u = self.users.intern(&state.user_id, is_local);
        self.mark_replicated(u);
        let slot = self.users.get_mut(u);
        if slot.state == state {
            return;
        }
        slot.state = state;
        let pos = self.log.push(u);
        self.users.set_last_change(u, pos);
        self.record_in_room_logs(u, pos);
        self.counters.replicated_changes += 1;
        self.enqueue(u, Pending::Notify);
        self.track_remote(u);
    }

    /// Cluster mode: this node now owns these users (their partition was
    /// taken over). Like [`Engine::restore`], but for users the engine
    /// may already hold as replicas: their current state is kept, local
    /// users who are not offline get the pseudo-device, and timers are
    /// re-armed from the stored timestamps (late, never early).
    pub fn handle_own(&mut self, users: impl IntoIterator<Item = OwnedUserId>) {
        for user in users {
            let Some(u) = self.users.find(&user) else {
                continue;
            };
            let slot = self.users.get_mut(u);
            if !slot.replicated {
                continue;
            }
            slot.replicated = false;
            if slot.is_local && slot.state.presence != Presence::Offline {
                slot.devices = vec![DeviceState {
                    device_id: None,
                    presence: slot.state.presence,
                    last_active_ts: slot.state.last_active_ts,
                    last_sync_ts: slot.state.last_user_sync_ts,
                    syncing: 0,
                }];
            }
            self.reschedule(u);
        }
    }

    /// Cluster mode: another node owns these users now. Their devices and
    /// timers are dropped; their state stays as the replica's.
    pub fn handle_disown(&mut self, users: impl IntoIterator<Item = OwnedUserId>) {
        for user in users {
            if let Some(u) = self.users.find(&user) {
                self.mark_replicated(u);
            }
        }
    }

    /// Whether this node runs the user's state machine (always, outside
    /// cluster mode).
    pub fn is_owned(&self, user: &UserId) -> bool {
        self.users
            .find(user)
            .is_none_or(|u| !self.users.get(u).replicated)
    }

    fn mark_replicated(&mut self, u: UserIdx) {
        let slot = self.users.get_mut(u);
        if slot.replicated {
            return;
        }
        slot.replicated = true;
        slot.devices.clear();
        let filed = slot.deadline.take();
        self.timers.refile(u, filed, None);
    }

    // ---- inputs: federation --------------------------------------------

    /// Presence pushed by `origin` in an `m.presence` EDU, already parsed
    /// and validated entry by entry. Entries for users of other servers are
    /// dropped. A user new to the engine may push out another of the
    /// origin's users (per-server cap, see `remote_cap`). Returns how many
    /// entries were accepted.
    pub fn handle_remote_presence(
        &mut self,
        now: Timestamp,
        origin: &ServerName,
        entries: impl IntoIterator<Item = RemotePresence>,
    ) -> usize {
        if self.config.tracking != Tracking::Enabled {
            return 0;
        }
        let mut accepted = 0;
        for entry in entries {
            if entry.user_id.server_name() != origin || origin == self.server_name {
                self.counters.remote_dropped += 1;
                continue;
            }
            if self.users.find(&entry.user_id).is_none() && !self.make_room_for(origin) {
                self.counters.remote_dropped += 1;
                continue;
            }
            let u = self.users.intern(&entry.user_id, false);
            let mut proposed = self.users.get(u).state.clone();
            proposed.presence = entry.presence;
            proposed.last_federation_update_ts = now;
            if let Some(ago) = entry.last_active_ago {
                proposed.last_active_ts = Timestamp(now.0.saturating_sub(ago));
            }
            proposed.status_msg = crate::presence::status_msg(entry.status_msg.as_deref());
            proposed.currently_active = entry.currently_active.unwrap_or(false);
            self.propose(now, u, proposed, false);
            accepted += 1;
        }
        self.counters.remote_accepted += accepted as u64;
        accepted
    }

    // ---- commands: module API ------------------------------------------

    /// Module API `set_presence_for_users`: sets state and message as given
    /// and always notifies. Works in untracked mode; ignored when presence
    /// is disabled. Remote users count as freshly heard of (W8).
    pub fn set_presence_for_users(
        &mut self,
        now: Timestamp,
        users: impl IntoIterator<Item = (OwnedUserId, Presence, Option<String>)>,
    ) {
        if self.config.tracking == Tracking::Disabled {
            return;
        }
        for (user, presence, status_msg) in users {
            let is_local = self.is_local(&user);
            let u = self.users.intern(&user, is_local);
            let mut proposed = self.users.get(u).state.clone();
            proposed.presence = presence;
            proposed.status_msg = crate::presence::status_msg(status_msg.as_deref());
            if !is_local {
                proposed.last_federation_update_ts = now;
            }
            self.propose(now, u, proposed, true);
        }
    }

    // ---- internals -----------------------------------------------------

    /// The slot of a local user whose presence clients may change here
    /// (not one another cluster node owns).
    fn tracked_local(&mut self, user: &UserId) -> Option<UserIdx> {
        if self.config.tracking != Tracking::Enabled || !self.is_local(user) {
            return None;
        }
        let u = self.users.intern(user, true);
        if self.users.get(u).replicated {
            self.counters.replicated_inputs_ignored += 1;
            return None;
        }
        Some(u)
    }

    /// Spec §2.1 steps 5–8: the device takes the requested state, the user
    /// takes the combination.
    fn set_device_state(
        &mut self,
        now: Timestamp,
        u: UserIdx,
        device: Option<&DeviceId>,
        requested: Presence,
        status: StatusChange,
        is_sync: bool,
    ) {
        let slot = self.users.get_mut(u);
        let dev = device_mut(&mut slot.devices, device);
        dev.presence = requested;
        dev.last_active_ts = now;
        if is_sync {
            dev.last_sync_ts = now;
        }
        slot.devices.retain(|d| !d.is_inert());
        let mut proposed = slot.state.clone();
        proposed.presence = machine::combine(&slot.devices);
        if matches!(proposed.presence, Presence::Online | Presence::Busy) {
            proposed.last_active_ts = now;
        }
        if is_sync {
            proposed.last_user_sync_ts = now;
        }
        if let StatusChange::Set(msg) = status {
            proposed.status_msg = msg;
        }
        self.propose(now, u, proposed, false);
    }

    /// Runs a proposed state through the update rules and stores it; a
    /// notifiable (or forced) change enters the stream and the next batch.
    pub(crate) fn propose(
        &mut self,
        now: Timestamp,
        u: UserIdx,
        proposed: PresenceState,
        force: bool,
    ) {
        let tracked = self.config.tracking == Tracking::Enabled;
        let slot = self.users.get_mut(u);
        let outcome = machine::apply_update(
            &slot.state,
            proposed,
            slot.is_local && tracked,
            now,
            &self.config,
        );
        slot.state = outcome.state;
        if outcome.notify || force {
            let pos = self.log.push(u);
            self.users.set_last_change(u, pos);
            self.record_in_room_logs(u, pos);
            self.persist.push((pos, self.users.get(u).state.clone()));
            self.counters.notified_changes += 1;
            self.enqueue(u, Pending::Notify);
        } else if outcome.federation_ping && slot.is_local {
            self.enqueue(u, Pending::Ping);
        }
        self.reschedule(u);
        self.track_remote(u);
    }

    fn enqueue(&mut self, u: UserIdx, how: Pending) {
        let slot = self.users.get_mut(u);
        if slot.pending == Pending::None {
            self.batch.push(u);
        }
        slot.pending = slot.pending.max(how);
    }

    /// Adds a change to the logs of the user's large rooms.
    fn record_in_room_logs(&mut self, u: UserIdx, pos: StreamPos) {
        for &r in &self.users.get(u).rooms {
            if self.rooms.is_large(r) {
                if let Some(log) = self.rooms.get_mut(r).log_mut() {
                    log.push(pos, u);
                }
            }
        }
    }

    /// Files the user under its earliest deadline (none when untracked).
    ///
    /// An entry that is already filed earlier than the new deadline stays:
    /// when it fires, the user is re-evaluated from current data (a no-op
    /// if nothing is due) and refiled. This keeps the timer queue out of
    /// the hot write path, where deadlines mostly move later.
    pub(crate) fn reschedule(&mut self, u: UserIdx) {
        let slot = self.users.get_mut(u);
        let next = match self.config.tracking {
            // The owner runs a replicated user's timers.
            _ if slot.replicated => None,
            Tracking::Enabled => {
                machine::next_deadline(&slot.state, &slot.devices, slot.is_local, &self.config)
            }
            Tracking::Untracked | Tracking::Disabled => None,
        };
        let filed_earlier = matches!((slot.deadline, next), (Some(filed), Some(next)) if filed <= next)
            || (slot.deadline.is_some() && next.is_none());
        if filed_earlier {
            return;
        }
        self.timers.refile(u, slot.deadline, next);
        slot.deadline = next;
    }
}

/// The record of `device`, created offline if missing.
fn device_mut<'a>(
    devices: &'a mut Vec<DeviceState>,
    device: Option<&DeviceId>,
) -> &'a mut DeviceState {
    let pos = match devices
        .iter()
        .position(|d| d.device_id.as_deref() == device)
    {
        Some(pos) => pos,
        None => {
            // Most users have one device: grow one record at a time.
            devices.reserve_exact(1);
            devices.push(DeviceState::new(device.map(ToOwned::to_owned)));
            devices.len() - 1
        }
    };
    &mut devices[pos]
}

/// One entry of an incoming `m.presence` EDU, validated at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePresence {
    /// The remote user (must belong to the origin server).
    pub user_id: OwnedUserId,
    /// Their presence.
    pub presence: Presence,
    /// Milliseconds since they were last active, if their server said.
    pub last_active_ago: Option<u64>,
    /// Whether their server says they are currently active.
    pub currently_active: Option<bool>,
    /// Their status message.
    pub status_msg: Option<String>,
}
