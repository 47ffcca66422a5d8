//! Membership changes and the presence they release (spec §12).
//!
//! When a join makes users newly share an eligible room, each side is shown
//! the other's current presence once; a remote server newly sharing a room
//! with local users gets their presence, and servers that already share
//! another eligible room with a user are not sent it again.

use std::collections::BTreeMap;

use ruma_common::{OwnedServerName, RoomId, UserId};

use crate::users::UserIdx;
use crate::{Engine, Presence, Timestamp, Tracking};

/// A membership change that matters to presence. Invites, knocks and bans
/// other than leaving do not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// The user is now joined.
    Join,
    /// The user is no longer joined (left, kicked or banned).
    Leave,
}

impl Engine {
    /// A user's membership in a room changed.
    pub fn handle_membership(
        &mut self,
        now: Timestamp,
        room: &RoomId,
        user: &UserId,
        membership: Membership,
    ) {
        match membership {
            Membership::Join => self.join(now, room, user),
            Membership::Leave => self.leave(room, user),
        }
    }

    fn join(&mut self, now: Timestamp, room: &RoomId, user: &UserId) {
        let is_local = self.is_local(user);
        let u = self.users.intern(user, is_local);
        let r = self
            .rooms
            .intern(room, &self.config.exclude_rooms_from_presence);
        let slot = self.users.get_mut(u);
        let Err(at) = slot.rooms.binary_search(&r) else {
            return; // already joined
        };
        slot.rooms.insert(at, r);
        let room_entry = self.rooms.get_mut(r);
        room_entry.members.push(u);
        let new_server = !is_local && room_entry.add_server(user.server_name());
        if !self.audience().eligible(r) {
            return;
        }

        // Local users who newly share a room with the joiner, both ways.
        let mut pairs = Vec::new();
        {
            let audience = self.audience();
            for &m in &self.rooms.get(r).members {
                if m == u || !(is_local || self.users.get(m).is_local) {
                    continue;
                }
                if !audience.shared_rooms(u, m).any(|shared| shared != r) {
                    pairs.push(m);
                }
            }
        }
        if !pairs.is_empty() {
            let at = self.log.mark();
            let mut woken = Vec::new();
            for &m in &pairs {
                if self.users.get(m).is_local {
                    self.users.get_mut(m).catch_up.push((at, u));
                    self.wake(m, &mut woken);
                }
                if is_local {
                    self.users.get_mut(u).catch_up.push((at, m));
                }
            }
            if is_local {
                self.wake(u, &mut woken);
            }
            self.prune_catch_up(&pairs, u);
            self.push_wakes(woken);
        }

        if self.config.tracking != Tracking::Enabled {
            return;
        }
        let mut sends: BTreeMap<OwnedServerName, Vec<UserIdx>> = BTreeMap::new();
        let audience = self.audience();
        if is_local {
            // The joiner's presence goes to servers that did not have it.
            for server in self.rooms.get(r).servers() {
                if !audience.server_shares_room(u, server, r) {
                    sends.entry(server.to_owned()).or_default().push(u);
                }
            }
        } else if new_server {
            // A server new to the room gets its local members' presence,
            // minus long-inactive offline users with nothing to show.
            let server = user.server_name();
            for &m in &self.rooms.get(r).members {
                let slot = self.users.get(m);
                if !slot.is_local || audience.server_shares_room(m, server, r) {
                    continue;
                }
                let state = &slot.state;
                let stale = state.presence == Presence::Offline
                    && now.saturating_since(state.last_active_ts) > self.config.join_staleness
                    && state.status_msg.is_none();
                if !stale {
                    sends.entry(server.to_owned()).or_default().push(m);
                }
            }
        }
        for (destination, users) in sends {
            let states = users
                .iter()
                .map(|&m| self.users.get(m).state.clone())
                .collect();
            self.counters.federation_states_sent += users.len() as u64;
            self.outputs.push_back(crate::Output::Send {
                destination,
                states,
            });
        }
    }

    fn leave(&mut self, room: &RoomId, user: &UserId) {
        let (Some(u), Some(r)) = (self.users.find(user), self.rooms.find(room)) else {
            return;
        };
        let slot = self.users.get_mut(u);
        let Ok(at) = slot.rooms.binary_search(&r) else {
            return;
        };
        slot.rooms.remove(at);
        let is_local = slot.is_local;
        let room_entry = self.rooms.get_mut(r);
        if let Some(pos) = room_entry.members.iter().position(|&m| m == u) {
            room_entry.members.remove(pos);
        }
        if !is_local {
            room_entry.remove_server(user.server_name());
        }
    }

    /// Drops catch-up entries too old for any sync token still in use (the
    /// change log's horizon), so the lists stay bounded.
    fn prune_catch_up(&mut self, pairs: &[UserIdx], joiner: UserIdx) {
        let horizon = self
            .log
            .current()
            .saturating_sub(self.config.change_log_capacity as u64);
        for &m in pairs.iter().chain(std::iter::once(&joiner)) {
            let list = &mut self.users.get_mut(m).catch_up;
            if list.first().is_some_and(|&(p, _)| p < horizon) {
                list.retain(|&(p, _)| p >= horizon);
            }
        }
    }
}
