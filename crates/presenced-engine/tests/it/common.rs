//! Shared helpers: identifiers, the default timer values and a thin wrapper
//! around the simulator that steps it after every input.

#![allow(dead_code)]

use std::time::Duration;

use presenced_engine::machine::DeviceState;
use presenced_engine::sim::Sim;
use presenced_engine::{
    Engine, EngineConfig, Interest, Membership, Presence, PresenceState, StreamPos, Timestamp,
};
use ruma_common::{DeviceId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};

/// Last-active granularity (default).
pub(crate) const G: Duration = Duration::from_secs(60);
/// Sync online timeout (default).
pub(crate) const S: Duration = Duration::from_secs(30);
/// Idle timeout (default).
pub(crate) const I: Duration = Duration::from_secs(300);
/// Busy timeout.
pub(crate) const B: Duration = Duration::from_secs(3600);
/// Federation ping interval.
pub(crate) const P: Duration = Duration::from_secs(25 * 60);
/// Federation timeout.
pub(crate) const F: Duration = Duration::from_secs(30 * 60);
/// One millisecond: every timeout rule is strict, so deadlines sit 1 ms past
/// their threshold.
pub(crate) const MS: Duration = Duration::from_millis(1);

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub(crate) fn user(s: &str) -> OwnedUserId {
    UserId::parse(s).expect("valid user id")
}

pub(crate) fn room(s: &str) -> OwnedRoomId {
    RoomId::parse(s).expect("valid room id")
}

pub(crate) fn server(s: &str) -> OwnedServerName {
    s.try_into().expect("valid server name")
}

pub(crate) fn device(s: &str) -> &DeviceId {
    s.into()
}

/// Sorted user ids of some states.
pub(crate) fn ids(states: &[PresenceState]) -> Vec<String> {
    let mut v: Vec<String> = states.iter().map(|s| s.user_id.to_string()).collect();
    v.sort();
    v
}

/// Sorted user ids from string literals.
pub(crate) fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Device `dev-1` of a user, for the machine's pure functions.
pub(crate) fn dev(
    presence: Presence,
    last_active: Timestamp,
    last_sync: Timestamp,
    syncing: u32,
) -> DeviceState {
    DeviceState {
        device_id: Some("dev-1".into()),
        presence,
        last_active_ts: last_active,
        last_sync_ts: last_sync,
        syncing,
    }
}

/// A config with a tweak applied.
pub(crate) fn config(f: impl FnOnce(&mut EngineConfig)) -> EngineConfig {
    let mut c = EngineConfig::default();
    f(&mut c);
    c
}

/// A simulator whose first server is the one under test. Every input is
/// followed by [`Sim::step`], so outputs are acted on at once.
pub(crate) struct T {
    pub(crate) sim: Sim,
}

impl T {
    /// One server named `test`, starting at t = 1 000 000 ms.
    pub(crate) fn new(config: EngineConfig) -> Self {
        Self {
            sim: Sim::single(config),
        }
    }

    /// One server with the given name, starting at `now`.
    pub(crate) fn named(name: &str, config: EngineConfig, now: Timestamp) -> Self {
        Self {
            sim: Sim::new(now, &[(name, config)]),
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.sim.now
    }

    pub(crate) fn engine(&mut self) -> &mut Engine {
        self.sim.engine(0)
    }

    pub(crate) fn eng(&self) -> &Engine {
        &self.sim.servers[0].engine
    }

    /// Installs a router answering `get_users_for_states`.
    pub(crate) fn set_router(
        &mut self,
        router: impl FnMut(&[PresenceState]) -> presenced_engine::UsersForStates + 'static,
    ) {
        self.sim.servers[0].router = Some(Box::new(router));
    }

    /// An explicit set (`PUT /presence/{u}/status`).
    pub(crate) fn put(&mut self, u: &str, dev: Option<&str>, p: Presence, msg: Option<&str>) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .handle_set_presence(now, &user(u), dev.map(device), p, msg);
        self.sim.step();
    }

    /// A presence-affecting sync starts; returns whether it counts.
    pub(crate) fn sync_start(&mut self, u: &str, dev: &str, p: Presence) -> bool {
        let now = self.sim.now;
        let counts = self
            .sim
            .engine(0)
            .handle_sync_start(now, &user(u), Some(device(dev)), p);
        self.sim.step();
        counts
    }

    pub(crate) fn sync_end(&mut self, u: &str, dev: &str) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .handle_sync_end(now, &user(u), Some(device(dev)));
        self.sim.step();
    }

    pub(crate) fn activity(&mut self, u: &str, dev: &str) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .handle_activity(now, &user(u), Some(device(dev)));
        self.sim.step();
    }

    pub(crate) fn join(&mut self, r: &str, u: &str) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .handle_membership(now, &room(r), &user(u), Membership::Join);
        self.sim.step();
    }

    pub(crate) fn leave(&mut self, r: &str, u: &str) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .handle_membership(now, &room(r), &user(u), Membership::Leave);
        self.sim.step();
    }

    /// Module API `set_presence_for_users` for one user.
    pub(crate) fn module_set(&mut self, u: &str, p: Presence, msg: Option<&str>) {
        let now = self.sim.now;
        self.sim
            .engine(0)
            .set_presence_for_users(now, [(user(u), p, msg.map(ToOwned::to_owned))]);
        self.sim.step();
    }

    /// Module API `send_local_online_presence_to`.
    pub(crate) fn send_online_to(&mut self, targets: &[&str]) {
        let now = self.sim.now;
        let targets: Vec<OwnedUserId> = targets.iter().map(|t| user(t)).collect();
        self.sim
            .engine(0)
            .send_local_online_presence_to(now, &targets);
        self.sim.step();
    }

    /// Presence pushed by `origin` over federation for one remote user.
    pub(crate) fn remote(
        &mut self,
        origin: &str,
        u: &str,
        p: Presence,
        msg: Option<&str>,
    ) -> usize {
        let now = self.sim.now;
        let entry = presenced_engine::RemotePresence {
            user_id: user(u),
            presence: p,
            last_active_ago: Some(0),
            currently_active: Some(p == Presence::Online),
            status_msg: msg.map(ToOwned::to_owned),
        };
        let n = self
            .sim
            .engine(0)
            .handle_remote_presence(now, &server(origin), [entry]);
        self.sim.step();
        n
    }

    pub(crate) fn wait(&mut self, u: &str) {
        self.sim.engine(0).wait_for_presence(&user(u));
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.sim.advance(by);
    }

    pub(crate) fn state(&self, u: &str) -> PresenceState {
        self.eng().presence(&user(u))
    }

    pub(crate) fn presence(&self, u: &str) -> Presence {
        self.state(u).presence
    }

    pub(crate) fn status(&self, u: &str) -> Option<String> {
        self.state(u).status_msg.map(|m| m.to_string())
    }

    pub(crate) fn position(&self) -> StreamPos {
        self.eng().position()
    }

    /// A sync's presence section: initial when `since` is `None` (offline
    /// users left out), incremental otherwise (offline users included), as
    /// the sync handler calls it (spec §10.2).
    pub(crate) fn sync(
        &self,
        u: &str,
        since: Option<StreamPos>,
        interest: &Interest,
    ) -> (Vec<PresenceState>, StreamPos) {
        let view = self
            .eng()
            .sync_view(&user(u), since, since.is_some(), interest);
        (view.states.into_iter().cloned().collect(), view.next)
    }

    /// Sorted user ids a sync returns (no router interest).
    pub(crate) fn sync_ids(&self, u: &str, since: Option<StreamPos>) -> Vec<String> {
        ids(&self.sync(u, since, &Interest::None).0)
    }

    pub(crate) fn can_see(&self, observer: &str, target: &str) -> bool {
        self.eng()
            .can_see(&user(observer), &user(target), &Interest::None)
    }

    /// Every user woken so far, in order.
    pub(crate) fn woken(&self) -> Vec<String> {
        self.sim.servers[0]
            .woken
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Every federation send so far, as (destination, sorted user ids).
    pub(crate) fn sends(&self) -> Vec<(String, Vec<String>)> {
        self.sim.servers[0]
            .sent
            .iter()
            .map(|(d, states)| (d.to_string(), ids(states)))
            .collect()
    }

    pub(crate) fn sent_states(&self) -> &[(OwnedServerName, Vec<PresenceState>)] {
        &self.sim.servers[0].sent
    }

    pub(crate) fn persisted(&self) -> &[(StreamPos, PresenceState)] {
        &self.sim.servers[0].persisted
    }

    pub(crate) fn clear(&mut self) {
        self.sim.clear_records();
    }
}
