//! Membership changes and the presence they release (spec §10.4, §12).
//!
//! A join or an invite introduces users to each other: each side's next
//! sync shows the other's current presence once, when the audience says the
//! meeting reveals it (see `Audience::meeting_reveals`). A remote server
//! newly sharing a room with local users gets their presence, and servers
//! that already share another eligible room with a user are not sent it
//! again.

use std::collections::BTreeMap;

use ruma_common::{OwnedServerName, RoomId, UserId};

use crate::users::{RoomIdx, UserIdx};
use crate::{Engine, Presence, Timestamp, Tracking};

/// A membership change that introduces users to each other, as the
/// meeting log records it for syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meeting {
    /// `user` joined `room`: they meet its members.
    Join { room: RoomIdx, user: UserIdx },
    /// `inviter` invited `invitee` to `room`: the invitee meets the inviter,
    /// and the room's members meet the invitee.
    Invite {
        room: RoomIdx,
        invitee: UserIdx,
        inviter: UserIdx,
    },
}

/// A membership change that changes who shares a room. Invites are
/// [`Engine::handle_invite`]; knocks and bans other than leaving do not
/// count.
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
        // Grown one at a time: users have about ten rooms, and doubling
        // would leave a third of every list unused.
        slot.rooms.reserve_exact(1);
        slot.rooms.insert(at, r);
        let waiting = self.users.is_waiting(u);
        self.rooms.get_mut(r).members.push(u);
        if waiting {
            self.rooms.add_waiting(r, true);
        }
        self.rooms.resized(r, self.config.max_room_size);
        let new_server = !is_local && self.rooms.add_server(r, user.server_name());
        self.track_remote(u);
        // Recorded in every room: whether the meeting reveals anything is
        // the audience's call at sync time (a router may let members of an
        // excluded room see each other).
        let at = self.meet(Meeting::Join { room: r, user: u });
        if !self.audience().eligible(r) {
            return;
        }
        if self.rooms.grow_log(r, at) {
            // Members already waiting move to the new waiter list.
            let waiting: Vec<_> = (self.rooms.get(r).members.iter())
                .filter(|&&m| self.users.is_waiting(m))
                .map(|&m| (m, self.users.get(m).wait_gen))
                .collect();
            if let Some(list) = self.rooms.get_mut(r).waiters_mut() {
                list.extend(waiting);
            }
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

    /// `inviter` invited `invitee` to `room`. Nobody newly shares a room,
    /// but the invitee's next sync shows the inviter's current presence
    /// (while the inviter is still joined) and the room members' next syncs
    /// show the invitee's (spec §10.4), when the audience says the invite
    /// reveals them.
    pub fn handle_invite(
        &mut self,
        _now: Timestamp,
        room: &RoomId,
        invitee: &UserId,
        inviter: &UserId,
    ) {
        // Remote invitees are left out: nothing here keeps their slot (a
        // room-less remote user may be forgotten and the slot reused), and
        // their presence reaches us only through shared rooms anyway.
        if !self.is_local(invitee) {
            return;
        }
        let i = self.users.intern(invitee, true);
        let inviter_local = self.is_local(inviter);
        let v = self.users.intern(inviter, inviter_local);
        self.track_remote(v);
        let r = self
            .rooms
            .intern(room, &self.config.exclude_rooms_from_presence);
        self.meet(Meeting::Invite {
            room: r,
            invitee: i,
            inviter: v,
        });
    }

    /// Records a meeting for syncs: the marker moves tokens past it, and
    /// the syncs that may show it (the room's, and the newcomer's) are
    /// woken.
    fn meet(&mut self, meeting: Meeting) -> crate::StreamPos {
        let at = self.log.mark();
        self.meetings.push(at, meeting);
        let (room, newcomer) = match meeting {
            Meeting::Join { room, user } => (room, user),
            Meeting::Invite { room, invitee, .. } => (room, invitee),
        };
        let mut woken = Vec::new();
        self.wake(newcomer, &mut woken);
        self.wake_room(room, &mut woken);
        self.push_wakes(woken);
        at
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
        if self.users.is_waiting(u) {
            self.rooms.add_waiting(r, false);
        }
        let room_entry = self.rooms.get_mut(r);
        if let Some(pos) = room_entry.members.iter().position(|&m| m == u) {
            room_entry.members.remove(pos);
        }
        if let Some(log) = room_entry.log_mut() {
            log.forget(u);
        }
        if !is_local {
            self.rooms.remove_server(r, user.server_name());
        }
        self.rooms.resized(r, self.config.max_room_size);
        self.track_remote(u);
    }
}
