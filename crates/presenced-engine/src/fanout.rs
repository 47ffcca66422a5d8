//! Fan-out: turning a batch of changes into wake-ups and federation sends,
//! with the router's answer as an input. Also the waiting-sync registry.

use std::collections::BTreeMap;

use ruma_common::{OwnedServerName, OwnedUserId, UserId};

use crate::output::{BatchId, Output};
use crate::users::{Pending, UserIdx};
use crate::{Engine, Presence, Timestamp, Tracking, UsersForStates};

/// A batch handed to the router, waiting for its answer.
#[derive(Debug)]
pub(crate) enum InFlight {
    /// Changes (and keepalives) to fan out.
    Fanout(Vec<(UserIdx, Pending)>),
    /// `send_local_online_presence_to` for these remote users.
    OnlineTo(Vec<OwnedUserId>),
    /// Cluster mode: a change already fanned out when computed, now in
    /// its partition's log: wake its watchers again, send nothing.
    WakeOnly(Vec<(UserIdx, Pending)>),
}

impl Engine {
    /// Registers a sync of `user` waiting for presence. It is woken (once)
    /// by the next change it may see; re-register after each wake.
    pub fn wait_for_presence(&mut self, user: &UserId) {
        let is_local = self.is_local(user);
        let u = self.users.intern(user, is_local);
        self.set_waiting(u, true);
        let slot = self.users.get_mut(u);
        slot.wait_gen = slot.wait_gen.wrapping_add(1);
        let entry = (u, slot.wait_gen);
        for i in 0..self.users.get(u).rooms.len() {
            let r = self.users.get(u).rooms[i];
            if !self.rooms.is_large(r) {
                continue; // small rooms check their members' waiting bits
            }
            let room = self.rooms.get_mut(r);
            let members = room.members.len();
            let Some(waiters) = room.waiters_mut() else {
                continue; // small rooms check their members' waiting bits
            };
            waiters.push(entry);
            // Entries of earlier registrations pile up in quiet rooms; live
            // ones are at most one per member, so compacting at twice that
            // keeps the list bounded at amortised constant cost.
            if waiters.len() > 2 * members + 8 {
                let users = &self.users;
                waiters.retain(|&(w, g)| users.is_waiting(w) && users.get(w).wait_gen == g);
            }
        }
    }

    /// The waiting sync of `user` ended without being woken.
    pub fn cancel_wait(&mut self, user: &UserId) {
        if let Some(u) = self.users.find(user) {
            self.set_waiting(u, false);
        }
    }

    /// The router's answer for a batch from [`Output::Route`].
    pub fn handle_route_answer(&mut self, now: Timestamp, batch: BatchId, answer: UsersForStates) {
        match self.in_flight.remove(&batch) {
            Some(InFlight::Fanout(entries)) => self.fan_out(&entries, &answer),
            Some(InFlight::WakeOnly(entries)) => self.wake_audience(&entries, &answer),
            Some(InFlight::OnlineTo(targets)) => self.send_online_to(now, &targets, &answer),
            None => tracing::debug!(?batch, "router answer for an unknown batch"),
        }
    }

    /// Module API `send_local_online_presence_to`. Local users get a
    /// one-off snapshot at their next sync (W7: nobody's presence changes).
    /// Remote users get, over federation, the current presence of the
    /// online local users they may see: shared rooms plus router answers
    /// for them, never remote users' states (W5/W6).
    pub fn send_local_online_presence_to(&mut self, now: Timestamp, users: &[OwnedUserId]) {
        let (local, remote): (Vec<_>, Vec<_>) = users.iter().partition(|u| self.is_local(u));
        if !local.is_empty() {
            let at = self.log.current();
            let mut woken = Vec::new();
            for user in &local {
                let u = self.users.intern(user, true);
                self.users.get_mut(u).full_presence_at = Some(at);
                self.wake(u, &mut woken);
            }
            // Tokens handed out from now on are past `at`: one snapshot each.
            self.log.mark();
            self.outputs.push_back(Output::PersistFullPresence {
                users: local.into_iter().cloned().collect(),
                at,
            });
            self.push_wakes(woken);
        }
        if !remote.is_empty() && self.config.tracking == Tracking::Enabled {
            let remote: Vec<OwnedUserId> = remote.into_iter().cloned().collect();
            if self.config.routing {
                let states = self
                    .users
                    .iter()
                    .filter(|(_, s)| s.is_local && s.state.presence != Presence::Offline)
                    .map(|(_, s)| s.state.clone())
                    .collect();
                let batch = self.new_batch(InFlight::OnlineTo(remote));
                self.outputs.push_back(Output::Route { batch, states });
            } else {
                self.send_online_to(now, &remote, &UsersForStates::new());
            }
        }
    }

    fn new_batch(&mut self, what: InFlight) -> BatchId {
        self.next_batch += 1;
        let id = BatchId(self.next_batch);
        self.in_flight.insert(id, what);
        id
    }

    /// Hands the collected batch to the router, or fans it out directly
    /// when no router is loaded.
    pub(crate) fn flush_batch(&mut self) {
        let entries: Vec<(UserIdx, Pending)> = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|u| {
                let slot = self.users.get_mut(u);
                (u, std::mem::replace(&mut slot.pending, Pending::None))
            })
            .collect();
        // Replicated changes (cluster mode) are routed here too: module-
        // routed watchers may sync on any node, so each node asks its own
        // router (fan_out sends federation for owned users only).
        if entries.is_empty() {
            return;
        }
        if self.config.routing {
            let states = entries
                .iter()
                .map(|&(u, _)| self.users.get(u).state.clone())
                .collect();
            let batch = self.new_batch(InFlight::Fanout(entries));
            self.outputs.push_back(Output::Route { batch, states });
        } else {
            self.fan_out(&entries, &UsersForStates::new());
        }
    }

    /// Wakes the audience of each change and sends local users' states to
    /// the servers that must have them (spec §6 step 4, §11.1).
    fn fan_out(&mut self, entries: &[(UserIdx, Pending)], routes: &UsersForStates) {
        self.fan_out_with(entries, routes, self.config.tracking == Tracking::Enabled);
    }

    /// [`Self::fan_out`] without federation sends.
    fn wake_audience(&mut self, entries: &[(UserIdx, Pending)], routes: &UsersForStates) {
        self.fan_out_with(entries, routes, false);
    }

    // Inlined into both callers: `federate` is then a constant in each, as
    // it was when `fan_out` read it itself (callgrind: +55 instructions per
    // update without it).
    #[inline(always)]
    fn fan_out_with(
        &mut self,
        entries: &[(UserIdx, Pending)],
        routes: &UsersForStates,
        federate: bool,
    ) {
        let mut woken = Vec::new();
        let mut sends: BTreeMap<OwnedServerName, Vec<UserIdx>> = BTreeMap::new();
        let mut any_notify = false;
        for &(u, how) in entries {
            let notify = how == Pending::Notify;
            any_notify |= notify;
            if notify {
                self.wake(u, &mut woken);
            }
            // A replicated user's owner sends its state; this node only wakes.
            let slot = self.users.get(u);
            let is_local = slot.is_local && !slot.replicated;
            for i in 0..self.users.get(u).rooms.len() {
                let room = self.users.get(u).rooms[i];
                if !self.audience().eligible(room) {
                    continue;
                }
                if notify && self.rooms.waiting(room) > 0 {
                    self.wake_room(room, &mut woken);
                }
                if is_local && federate && self.rooms.has_remote(room) {
                    for server in self.rooms.get(room).servers() {
                        push_send(&mut sends, server, u);
                    }
                }
            }
        }
        for (target, states) in routes {
            if self.is_local(target) {
                if any_notify {
                    if let Some(t) = self.users.find(target) {
                        self.wake(t, &mut woken);
                    }
                }
            } else if federate {
                for state in states {
                    if let Some(s) = self.users.find(&state.user_id) {
                        // A replicated user's owner sends its state.
                        let slot = self.users.get(s);
                        if slot.is_local && !slot.replicated {
                            push_send(&mut sends, target.server_name(), s);
                        }
                    }
                }
            }
        }
        self.push_wakes(woken);
        self.push_sends(sends);
    }

    /// The federation half of `send_local_online_presence_to`.
    fn send_online_to(
        &mut self,
        _now: Timestamp,
        targets: &[OwnedUserId],
        routes: &UsersForStates,
    ) {
        let mut sends: BTreeMap<OwnedServerName, Vec<UserIdx>> = BTreeMap::new();
        for target in targets {
            let server = target.server_name();
            if let Some(t) = self.users.find(target) {
                let audience = self.audience();
                for m in audience.co_members(t) {
                    let slot = self.users.get(m);
                    if slot.is_local && slot.state.presence != Presence::Offline {
                        push_send(&mut sends, server, m);
                    }
                }
            }
            for state in routes.get(target).into_iter().flatten() {
                if let Some(s) = self.users.find(&state.user_id) {
                    let slot = self.users.get(s);
                    if slot.is_local && slot.state.presence != Presence::Offline {
                        push_send(&mut sends, server, s);
                    }
                }
            }
        }
        self.push_sends(sends);
    }

    fn push_sends(&mut self, sends: BTreeMap<OwnedServerName, Vec<UserIdx>>) {
        for (destination, mut users) in sends {
            if destination == self.server_name {
                continue;
            }
            users.sort_unstable();
            users.dedup();
            let states: Vec<_> = users
                .iter()
                .map(|&u| self.users.get(u).state.clone())
                .collect();
            self.counters.federation_states_sent += states.len() as u64;
            self.outputs.push_back(Output::Send {
                destination,
                states,
            });
        }
    }

    /// Cluster mode, on the owner: a state of `user` is now durable in its
    /// partition's log. Wakes the syncs waiting for their presence again:
    /// cluster syncs show only logged states, and the first wake-up came
    /// when the state was computed, before the log had it.
    pub fn wake_watchers(&mut self, user: &UserId) {
        let Some(u) = self.users.find(user) else {
            return;
        };
        let entries = vec![(u, Pending::Notify)];
        if self.config.routing {
            // Routed watchers too: the router is asked again (its answer
            // to the first fan-out came before the log had the state).
            let states = vec![self.users.get(u).state.clone()];
            let batch = self.new_batch(InFlight::WakeOnly(entries));
            self.outputs.push_back(Output::Route { batch, states });
        } else {
            self.wake_audience(&entries, &UsersForStates::new());
        }
    }

    /// Sets a user's waiting bit, keeping their rooms' waiting counts
    /// true. Returns whether the bit was set before.
    pub(crate) fn set_waiting(&mut self, u: UserIdx, waiting: bool) -> bool {
        let was = self.users.set_waiting(u, waiting);
        if was != waiting {
            for &r in &self.users.get(u).rooms {
                self.rooms.add_waiting(r, waiting);
            }
        }
        was
    }

    pub(crate) fn wake(&mut self, u: UserIdx, woken: &mut Vec<UserIdx>) {
        if self.set_waiting(u, false) {
            woken.push(u);
        }
    }

    /// Wakes the waiting syncs of a room's members.
    pub(crate) fn wake_room(&mut self, r: crate::users::RoomIdx, woken: &mut Vec<UserIdx>) {
        if self.rooms.waiting(r) == 0 {
            return;
        }
        let room = self.rooms.get_mut(r);
        let candidates: Vec<UserIdx> = match room.waiters_mut() {
            Some(waiters) => {
                let users = &self.users;
                waiters
                    .drain(..)
                    .filter(|&(u, generation)| users.get(u).wait_gen == generation)
                    .map(|(u, _)| u)
                    .collect()
            }
            None => room.members.iter().copied().collect(),
        };
        for u in candidates {
            self.wake(u, woken);
        }
    }

    pub(crate) fn push_wakes(&mut self, woken: Vec<UserIdx>) {
        if woken.is_empty() {
            return;
        }
        self.counters.wakes += woken.len() as u64;
        let users = woken.into_iter().map(|u| self.users.user_id(u)).collect();
        self.outputs.push_back(Output::Wake(users));
    }
}

fn push_send(
    sends: &mut BTreeMap<OwnedServerName, Vec<UserIdx>>,
    server: &ruma_common::ServerName,
    u: UserIdx,
) {
    match sends.get_mut(server) {
        Some(list) => list.push(u),
        None => {
            sends.insert(server.to_owned(), vec![u]);
        }
    }
}
