//! The presence driver: the engine behind a lock, the router, wake-ups of
//! waiting syncs, the timer task, and the back end that keeps presence.
//!
//! Architecture invariant: only this folder calls the engine
//! (`presenced_engine::Engine`); it stores presence only through
//! `store::presence` and knows no HTTP.
//!
//! Handlers call [`PresenceService`] methods; each takes the lock, feeds one
//! input to the engine with the current time, drains the engine's outputs
//! and carries them out after releasing the lock (wake syncs, persist,
//! ask the router, queue federation sends). No presence rule lives here.
//!
//! - **The back end** ([`backend`], chosen once at start-up) is where
//!   presence lives and where a client's input goes: the single node's
//!   engine and database ([`single`]), or a cluster's partition owners
//!   and logs ([`cluster`]). Nothing outside this folder asks which.
//! - **The lock** is a plain mutex, never held across an `.await`.
//! - **Persist** outputs go to the back end: on a single node, to the
//!   presence writer thread, which groups commits (concurrent PUTs share
//!   one); [`PresenceService::set_presence`] (a `PUT /presence`) returns
//!   only after its commit.
//! - **Wake** outputs notify the per-user `Notify` that waiting syncs
//!   sleep on; room writes use the same path ([`PresenceService::wake_syncs`]).
//! - **Route** outputs spawn the router call and hand its answer back as
//!   an input, once per batch of updates (never once per reader).
//! - **Send** outputs go to the caller of [`PresenceService::start`]
//!   (`federation::sender` queues them in the durable outbox).
//! - **Timers:** one task sleeps until `poll_timeout()` and re-reads the
//!   clock when it wakes; an input that moves the next deadline pokes it.
//! - **Syncing devices:** `/sync` holds a [`SyncingDevice`] guard for its
//!   whole life, whatever its filter lets through: the one place that makes
//!   a device count as syncing. Dropping it (also when the client goes
//!   away) ends the sync and restarts the device's sync timeout.
//! - **Stream positions** of a new process start past the clock's epoch
//!   (`stream_epoch`, 1,024 per ms), so a token handed out before a
//!   restart, whose unstored join markers may be ahead of the stored
//!   positions, never hides a change made after it.

mod backend;
pub mod cluster;
pub mod directory;
pub mod filter;
pub mod python;
mod single;
pub mod startup;
pub mod token;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presenced_engine::{
    Engine, EngineConfig, EngineStats, Interest, Membership, Output, Presence, PresenceState,
    StreamPos, Timestamp, Visibility,
};
use presenced_router::{ModuleCommand, ModuleReason, PresenceRouter};
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId,
};
use tokio::sync::{mpsc, Notify};

use self::backend::Backend;
pub use self::backend::{BackendHealth, FederationShards, ForgetTokens, ShardNews};
use crate::store::presence::PresenceStore;

pub use crate::util::clock::now;

/// Where a stream started at `now` begins.
///
/// A restarted stream must begin past every position the previous process
/// handed out in sync tokens, stored or not (join and invite markers are
/// not stored): otherwise a token from before the restart sits at or ahead
/// of the new positions and its sync misses the changes made after the
/// restart. The clock gives that without a write per marker: 1,024
/// positions per millisecond since the Unix epoch, as no process hands out
/// a million positions a second on average over its life. Stays below
/// 2^53 (exact in an f64 metric) until the 23rd century. A clock set back
/// by more than the previous process's lifetime defeats it; the stored
/// positions still bound it from below.
fn stream_epoch(now: Timestamp) -> StreamPos {
    now.0.saturating_mul(1 << 10)
}

/// Local presence for remote servers, as the engine hands it out.
pub type OutboundReceiver = mpsc::UnboundedReceiver<(OwnedServerName, Vec<PresenceState>)>;

/// An engine over `stored` presence and full-presence `marks`.
///
/// The stream restarts past every stored position and every mark, so new
/// tokens never fall at or before a mark (one snapshot per token), and
/// past the clock's epoch (see `stream_epoch`).
fn new_engine(
    config: EngineConfig,
    server_name: OwnedServerName,
    routing: bool,
    stored: Vec<(StreamPos, PresenceState)>,
    marks: Vec<(OwnedUserId, StreamPos)>,
) -> Engine {
    let position = stored
        .iter()
        .map(|(p, _)| *p)
        .chain(marks.iter().map(|(_, at)| at + 1))
        .chain([stream_epoch(now())])
        .max()
        .unwrap_or(0);
    let mut engine = Engine::new(EngineConfig { routing, ..config }, server_name, position);
    engine.restore(stored);
    for (user, at) in &marks {
        engine.restore_full_presence(user, *at);
    }
    engine
}

/// Applies the joined memberships read at start-up; returns the outputs.
fn join_rooms(
    engine: &mut Engine,
    joined: &[(ruma_common::OwnedRoomId, OwnedUserId)],
) -> Vec<Output> {
    let now = now();
    for (room, user) in joined {
        engine.handle_membership(now, room, user, Membership::Join);
    }
    std::iter::from_fn(|| engine.poll_output()).collect()
}

/// Presence for the whole server; cheap to clone.
#[derive(Clone)]
pub struct PresenceService {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Mutex<Engine>,
    router: PresenceRouter,
    /// One notifier per user with a waiting sync (all their devices).
    waiters: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
    /// Poked when the next timer may have moved earlier.
    timers_moved: Notify,
    /// Set at shutdown: waiting syncs answer at once instead of holding
    /// the graceful shutdown for their whole timeout.
    stopping: std::sync::atomic::AtomicBool,
    outbound_tx: mpsc::UnboundedSender<(OwnedServerName, Vec<PresenceState>)>,
    /// Counters of the Python module host, when one runs.
    python: std::sync::OnceLock<Arc<python::stats::HostStats>>,
    /// Where presence lives: this node's database, or a cluster's logs.
    backend: Backend,
}

/// Why a presence change was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PresenceWriteError {
    /// Storing it failed (single node).
    #[error(transparent)]
    Store(#[from] crate::store::presence::StoreFailure),
    /// Cluster mode: no partition owner acknowledged it in time (the bus
    /// is unreachable, or an owner is being replaced). Retry shortly.
    #[error("presence is briefly unavailable: {0}")]
    Unavailable(String),
}

/// The presence section of a sync, as the sync service gets it.
pub struct SyncPresence {
    /// States to return.
    pub states: Vec<PresenceState>,
    /// The presence part of `next_batch`.
    pub next: token::PresenceToken,
}

/// What a `/sync` request does to its device's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEffect {
    /// `set_presence=offline` (or presence off): the request does not
    /// touch presence at all (Synapse's rule).
    None,
    /// The device counts as syncing, but its `set_presence` is not applied
    /// (`rc_presence` limited it).
    KeepAlive,
    /// The device counts as syncing and takes this presence.
    Set(Presence),
}

/// A device counted as syncing, for as long as this lives: the whole
/// `/sync` request, whatever its filter lets through. Dropping it ends the
/// sync (its device's sync timeout restarts then), also when the request
/// is cancelled because the client went away.
pub struct SyncingDevice {
    /// The counted device; `None` when the sync does not count.
    counted: Option<(PresenceService, OwnedUserId, Option<OwnedDeviceId>)>,
}

impl Drop for SyncingDevice {
    fn drop(&mut self) {
        // Dispatching outputs may spawn tasks; without a runtime (the
        // process is going away) there is nothing left to keep alive.
        if let Some((service, user, device)) = &self.counted {
            if tokio::runtime::Handle::try_current().is_ok() {
                service.end_sync(user, device.as_deref());
            }
        }
    }
}

/// A sync's presence request.
pub struct SyncRequest<'a> {
    /// The syncing user.
    pub user: &'a UserId,
    /// Presence part of the `since` token (`None`: initial/full state).
    pub since: Option<token::PresenceToken>,
    /// Room stream position of the `since` token: cluster mode shows the
    /// users met (joins, invites) after it.
    pub room_since: Option<i64>,
    /// Include offline users.
    pub include_offline: bool,
    /// How long to wait for presence if there is none yet.
    pub timeout: Duration,
    /// Ends the wait early when it turns true (checked at each wake-up of
    /// the user's syncs, see [`PresenceService::wake_syncs`]): the
    /// sync service's "the user's rooms moved".
    pub stop_waiting: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl PresenceService {
    /// A single node: builds the engine from stored presence and current
    /// joined memberships, and starts the timer task and the presence
    /// writer. Returns the service and the queue of outgoing federation
    /// presence.
    pub fn start(
        config: EngineConfig,
        server_name: OwnedServerName,
        router: PresenceRouter,
        store: Arc<dyn PresenceStore>,
        joined: Vec<(ruma_common::OwnedRoomId, OwnedUserId)>,
    ) -> (Self, OutboundReceiver) {
        let stored = store.load().unwrap_or_else(|e| {
            tracing::error!("could not load stored presence: {e}");
            Vec::new()
        });
        let marks = store.load_marks().unwrap_or_else(|e| {
            tracing::error!("could not load stored full-presence marks: {e}");
            Vec::new()
        });
        let mut engine = new_engine(config, server_name, router.has_modules(), stored, marks);
        // Start-up joins produce nothing anyone is waiting for; only the
        // remote users a smaller cap forgot must leave storage too.
        for output in join_rooms(&mut engine, &joined) {
            if let Output::Forget(users) = output {
                if let Err(e) = store.forget(&users) {
                    tracing::error!("forgetting remote presence failed: {e}");
                }
            }
        }
        let backend = Backend::Single(single::SingleNode::start(store));
        let (service, outbound) = Self::with_backend(engine, router, backend);
        tokio::spawn(service.clone().timer_task());
        (service, outbound)
    }

    /// A cluster node: the engine starts empty (presence is learnt from
    /// the cluster's logs), then the node `joined` starts under it.
    pub fn start_cluster(
        config: EngineConfig,
        server_name: OwnedServerName,
        router: PresenceRouter,
        joined_rooms: Vec<(ruma_common::OwnedRoomId, OwnedUserId)>,
        joined: cluster::join::Joined,
    ) -> (Self, OutboundReceiver) {
        let mut engine = new_engine(
            config,
            server_name,
            router.has_modules(),
            Vec::new(),
            Vec::new(),
        );
        // Node-local positions and remote users: nothing to store.
        join_rooms(&mut engine, &joined_rooms);
        // Meetings before this were not recorded (start-up joins meet nobody).
        let backend = Backend::Cluster(cluster::ClusterBackend::new(engine.position()));
        let (service, outbound) = Self::with_backend(engine, router, backend);
        if let Backend::Cluster(cluster) = &service.inner.backend {
            cluster.start_node(&service, joined);
        }
        tokio::spawn(service.clone().timer_task());
        (service, outbound)
    }

    fn with_backend(
        engine: Engine,
        router: PresenceRouter,
        backend: Backend,
    ) -> (Self, OutboundReceiver) {
        let (outbound_tx, outbound_rx) = mpsc::unbounded_channel();
        let service = Self {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                router,
                waiters: Mutex::new(HashMap::new()),
                timers_moved: Notify::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                outbound_tx,
                python: std::sync::OnceLock::new(),
                backend,
            }),
        };
        (service, outbound_rx)
    }

    /// The engine, locked (never across an `.await`).
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.inner.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one engine input and carries out what it asks for.
    fn drive<R>(&self, input: impl FnOnce(&mut Engine, Timestamp) -> R) -> R {
        self.drive_durable(input).0
    }

    /// [`Self::drive`], also returning a receiver per persistence job the
    /// input caused, answered once the states are committed (or failed).
    fn drive_durable<R>(
        &self,
        input: impl FnOnce(&mut Engine, Timestamp) -> R,
    ) -> (R, Vec<tokio::sync::oneshot::Receiver<bool>>) {
        let (result, outputs) = {
            let mut engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
            let result = input(&mut engine, now());
            let mut outputs = Vec::new();
            while let Some(output) = engine.poll_output() {
                outputs.push(output);
            }
            (result, outputs)
        };
        let stored = self.dispatch(outputs);
        self.inner.timers_moved.notify_one();
        (result, stored)
    }

    fn dispatch(&self, outputs: Vec<Output>) -> Vec<tokio::sync::oneshot::Receiver<bool>> {
        let mut stored = Vec::new();
        for output in outputs {
            match output {
                Output::Persist(states) => stored.extend(self.inner.backend.persist(states)),
                Output::PersistFullPresence { users, at } => {
                    self.inner.backend.persist_marks(users, at);
                }
                Output::Forget(forget) => self.inner.backend.forget(forget),
                Output::Wake(users) => {
                    let waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
                    for user in users {
                        if let Some(notify) = waiters.get(&user) {
                            notify.notify_waiters();
                        }
                    }
                }
                Output::Route { batch, states } => {
                    // Router answers arrive later; presence keeps flowing.
                    let service = self.clone();
                    tokio::spawn(async move {
                        let answer = service.inner.router.get_users_for_states(&states).await;
                        service.drive(|engine, now| {
                            engine.handle_route_answer(now, batch, answer);
                        });
                    });
                }
                Output::Send {
                    destination,
                    states,
                } => {
                    let _ = self.inner.outbound_tx.send((destination, states));
                }
            }
        }
        stored
    }

    /// Cluster mode, on the partition owner: runs one engine input for
    /// `user` and returns the state to write for them (the owner loop
    /// writes it and answers the command); every other output is carried
    /// out as usual (other users' states go to their logs).
    fn apply_owned(
        &self,
        user: &UserId,
        input: impl FnOnce(&mut Engine, Timestamp),
    ) -> Option<PresenceState> {
        let mut mine = None;
        let outputs = {
            let mut engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
            input(&mut engine, now());
            let mut outputs = Vec::new();
            while let Some(output) = engine.poll_output() {
                match output {
                    Output::Persist(states) => {
                        let (own, others): (Vec<_>, Vec<_>) =
                            states.into_iter().partition(|(_, s)| s.user_id == user);
                        if let Some((_, state)) = own.into_iter().last() {
                            mine = Some(state);
                        }
                        if !others.is_empty() {
                            outputs.push(Output::Persist(others));
                        }
                    }
                    other => outputs.push(other),
                }
            }
            outputs
        };
        self.dispatch(outputs);
        self.inner.timers_moved.notify_one();
        mine
    }

    /// Cluster mode: the running node (`None` on a single node), for the
    /// cluster's own driver.
    fn cluster_link(&self) -> Option<&Arc<cluster::link::ClusterLink>> {
        match &self.inner.backend {
            Backend::Cluster(cluster) => cluster.link(),
            Backend::Single(_) => None,
        }
    }

    /// A counted sync ended (its [`SyncingDevice`] was dropped).
    fn end_sync(&self, user: &UserId, device: Option<&DeviceId>) {
        self.inner.backend.end_sync(self, user, device);
    }

    /// Tokens that died here (logout, deactivation, a device's token
    /// replaced): on a cluster node, returns once every other node has
    /// dropped them from its cache; a single node has nobody to tell.
    pub async fn tokens_revoked(&self, user: &UserId, device: Option<&DeviceId>) {
        self.inner.backend.tokens_revoked(user, device).await;
    }

    /// What to call when another process reports tokens dead (cluster
    /// mode; a single node never calls it).
    pub fn on_tokens_revoked(&self, forget: ForgetTokens) {
        self.inner.backend.on_tokens_revoked(forget);
    }

    /// Whether a process-local token cache may be used now.
    pub fn token_cache_trusted(&self) -> bool {
        self.inner.backend.token_cache_trusted()
    }

    /// Which destinations this process sends federation presence to.
    pub fn federation_shards(&self) -> FederationShards {
        self.inner.backend.federation_shards()
    }

    /// How the presence back end is doing (health check).
    pub fn backend_health(&self) -> BackendHealth {
        self.inner.backend.health()
    }

    async fn timer_task(self) {
        loop {
            let next = self
                .inner
                .engine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .poll_timeout();
            let sleep = match next {
                Some(at) => at.saturating_since(now()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {
                    // Read the clock again rather than trusting the sleep.
                    self.drive(|engine, now| engine.handle_timeout(now));
                }
                () = self.inner.timers_moved.notified() => {}
            }
        }
    }

    /// Shutdown has begun: every waiting sync answers now with what it
    /// has, and new ones do not wait.
    pub fn shut_down(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for notify in waiters.values() {
            notify.notify_waiters();
        }
    }

    /// Whether [`Self::shut_down`] was called.
    pub fn is_stopping(&self) -> bool {
        self.inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The presence router.
    pub fn router(&self) -> &PresenceRouter {
        &self.inner.router
    }

    /// The Python module host's counters, when Python modules are loaded.
    pub fn python_stats(&self) -> Option<&Arc<python::stats::HostStats>> {
        self.inner.python.get()
    }

    /// Records the Python module host's counters (once, at start-up).
    pub fn set_python_stats(&self, stats: Arc<python::stats::HostStats>) {
        let _ = self.inner.python.set(stats);
    }

    /// `PUT /presence/{userId}/status`. Returns once the change is stored
    /// (commits are grouped), so an acknowledged change survives a crash;
    /// `Err` if storing it failed.
    pub async fn set_presence(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        presence: Presence,
        status_msg: Option<&str>,
    ) -> Result<(), PresenceWriteError> {
        (self.inner.backend)
            .set_presence(self, user, device, presence, status_msg)
            .await
    }

    /// A user did something that counts as activity.
    pub fn activity(&self, user: &UserId, device: Option<&DeviceId>) {
        self.inner.backend.activity(self, user, device);
    }

    /// A joined/left membership change.
    pub fn membership(&self, room: &RoomId, user: &UserId, membership: Membership) {
        self.drive(|e, now| e.handle_membership(now, room, user, membership));
    }

    /// A room write of this process, as its feed delivers it (the back
    /// end knows whether it still has to reach the engine).
    pub fn membership_written(&self, change: &crate::store::membership::MembershipChange) {
        if self.inner.backend.applies_written_memberships() {
            self.apply_membership(change);
        }
    }

    /// A stored membership change (invite, join, leave), in stream order.
    pub fn apply_membership(&self, change: &crate::store::membership::MembershipChange) {
        use crate::store::membership::Membership as Stored;
        let (room, user) = (&change.room_id, &change.user_id);
        match change.membership {
            Stored::Join => self.membership(room, user, Membership::Join),
            Stored::Leave => self.membership(room, user, Membership::Leave),
            // No shared room, but the two meet (spec §10.4).
            Stored::Invite => self.invite(room, user, &change.sender),
        }
        self.note_room_position(change.stream);
    }

    /// `inviter` invited `invitee` to `room`.
    pub fn invite(&self, room: &RoomId, invitee: &UserId, inviter: &UserId) {
        self.drive(|e, now| e.handle_invite(now, room, invitee, inviter));
    }

    /// The account was deactivated.
    pub fn deactivate(&self, user: &UserId) {
        self.inner.backend.deactivate(self, user);
    }

    /// A module API call.
    pub fn module_command(&self, command: ModuleCommand) {
        let command = match command {
            ModuleCommand::SetPresenceForUsers(users) => {
                ModuleCommand::SetPresenceForUsers(without_nul_status_msgs(users))
            }
            other => other,
        };
        match command {
            ModuleCommand::SendLocalOnlinePresenceTo(users) => {
                self.drive(|e, now| e.send_local_online_presence_to(now, &users));
            }
            ModuleCommand::SetPresenceForUsers(users) => {
                self.inner.backend.module_set(self, users);
            }
        }
    }

    /// Presence learnt from a remote server.
    pub fn remote_presence(
        &self,
        origin: &ServerName,
        entries: Vec<presenced_engine::RemotePresence>,
    ) -> usize {
        self.inner.backend.remote_presence(self, origin, entries)
    }

    /// The router's interest for a local user (empty when no module).
    pub async fn interest(&self, user: &UserId) -> Interest {
        if self.inner.router.has_modules() {
            self.inner.router.get_interested_users(user).await
        } else {
            Interest::None
        }
    }

    /// `GET /presence/{userId}/status`: the target's state if the observer
    /// may see it (routing counts, W4).
    pub async fn get_presence(&self, observer: &UserId, target: &UserId) -> Option<PresenceState> {
        let interest = if observer == target {
            Interest::None
        } else {
            self.interest(observer).await
        };
        let engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
        engine
            .can_see(observer, target, &interest)
            .then(|| engine.presence(target))
    }

    /// Room reasons `observer` may see `target` (admin explanation).
    pub fn explain_rooms(&self, observer: &UserId, target: &UserId) -> Visibility {
        self.inner
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .explain(observer, target)
    }

    /// Module reasons (admin explanation).
    pub async fn explain_modules(&self, observer: &UserId, target: &UserId) -> Vec<ModuleReason> {
        self.inner.router.explain(observer, target).await
    }

    /// The full engine state of a user (admin).
    pub fn state_of(
        &self,
        user: &UserId,
    ) -> (PresenceState, Vec<presenced_engine::machine::DeviceState>) {
        let engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
        (engine.presence(user), engine.devices_of(user).to_vec())
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        self.inner
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats()
    }

    /// The current presence stream position.
    pub fn position(&self) -> StreamPos {
        self.inner
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .position()
    }

    /// A `/sync` request starts: its device counts as syncing until the
    /// returned guard is dropped (unless `effect` is [`SyncEffect::None`]).
    /// Every sync request holds one for its whole life, whether or not it
    /// asks for presence, so "is this device syncing" is decided here only.
    pub async fn start_syncing(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        effect: SyncEffect,
    ) -> SyncingDevice {
        let counted = (self.inner.backend)
            .start_syncing(self, user, device, effect)
            .await;
        SyncingDevice {
            counted: counted
                .then(|| (self.clone(), user.to_owned(), device.map(ToOwned::to_owned))),
        }
    }

    /// The presence section of a sync: returns what the user may see, and
    /// waits up to `timeout` for something if there is nothing yet. Whether
    /// the device counts as syncing is [`Self::start_syncing`]'s business.
    pub async fn sync(&self, request: SyncRequest<'_>) -> SyncPresence {
        self.inner.backend.sync(self, request).await
    }

    /// The notifier `user`'s waiting syncs sleep on.
    fn waiter_of(&self, user: &UserId) -> Arc<Notify> {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.entry(user.to_owned()).or_default().clone()
    }

    /// The presence part of a token for "now" (a sync that asks for no
    /// presence keeps the client's, or gets this).
    pub fn token(&self) -> token::PresenceToken {
        self.inner.backend.token(self)
    }

    /// A membership change at room stream position `stream` reached the
    /// engine (see [`Backend::note_room_position`]).
    fn note_room_position(&self, stream: i64) {
        let position = self.position();
        self.inner.backend.note_room_position(stream, position);
    }

    /// Wakes the waiting syncs of these users (room events for them); only
    /// theirs, and nothing happens for users with no waiting sync.
    pub fn wake_syncs<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let mut users = users.into_iter().peekable();
        if users.peek().is_none() {
            return;
        }
        let waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for user in users {
            if let Some(notify) = waiters.get(user) {
                notify.notify_waiters();
            }
        }
    }

    /// Waits, without looking at presence, until `stop` turns true (checked
    /// at each [`PresenceService::wake_syncs`] of the user), the deadline,
    /// or shutdown: the long-poll of a sync whose filter wants no presence.
    pub async fn wait_without_presence(
        &self,
        user: &UserId,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let notify = {
            let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            waiters.entry(user.to_owned()).or_default().clone()
        };
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if stop() || self.is_stopping() || tokio::time::Instant::now() >= deadline {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Shutdown, after the last request: a single node writes every state
    /// to its database ([`Self::flush`]); a cluster node stops and leaves
    /// its partitions to the other nodes.
    pub fn flush_to_own_store(&self) {
        self.inner.backend.shut_down(self);
    }

    /// Writes every state (timestamps that changed without a notification
    /// included) before shutdown.
    pub fn flush(&self, store: &dyn PresenceStore) {
        let engine = self.inner.engine.lock().unwrap_or_else(|p| p.into_inner());
        let states: Vec<_> = engine.states().cloned().collect();
        drop(engine);
        if let Err(e) = store.save_quiet(&states) {
            tracing::error!("flushing presence at shutdown failed: {e}");
        }
    }
}

/// A module's `set_presence_for_users` entries, less those whose status
/// message holds U+0000: the rule clients and federation meet at the
/// edge (`api::nul`), for the one writer that does not come through it
/// (PostgreSQL could not store such a message).
fn without_nul_status_msgs(
    users: Vec<(OwnedUserId, Presence, Option<String>)>,
) -> Vec<(OwnedUserId, Presence, Option<String>)> {
    users
        .into_iter()
        .filter(|(user, _, msg)| {
            let nul = msg.as_deref().is_some_and(|m| m.contains('\0'));
            if nul {
                tracing::warn!(%user, "module set_presence_for_users: status_msg with U+0000 ignored");
            }
            !nul
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_cannot_set_a_nul_status_msg() {
        let user = |id: &str| OwnedUserId::try_from(id).unwrap();
        let kept = without_nul_status_msgs(vec![
            (user("@a:x.org"), Presence::Online, Some("fine".to_owned())),
            (user("@b:x.org"), Presence::Online, Some("x\0y".to_owned())),
            (user("@c:x.org"), Presence::Offline, None),
        ]);
        let users: Vec<&str> = kept.iter().map(|(u, _, _)| u.as_str()).collect();
        assert_eq!(users, ["@a:x.org", "@c:x.org"]);
    }
}
