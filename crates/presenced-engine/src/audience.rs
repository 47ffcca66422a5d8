//! The audience function: the one place that decides who sees whose presence.
//!
//! A user sees another user's presence when they are the same user, when
//! they share an eligible room (joined, not excluded, not oversized), or when
//! the presence router says so. A join or an invite also reveals the current
//! presence of the users it introduces, once (`meeting_reveals`). Sync,
//! fan-out to waiting syncs, federation destinations, `GET /presence`
//! visibility and join handling all ask here; no other module repeats the
//! rule.

use ruma_common::{OwnedRoomId, ServerName};

use crate::rooms::RoomTable;
use crate::users::{RoomIdx, UserIdx, UserTable};
use crate::Interest;

/// A read-only view of the tables the rule needs.
#[derive(Clone, Copy)]
pub(crate) struct Audience<'a> {
    pub(crate) users: &'a UserTable,
    pub(crate) rooms: &'a RoomTable,
}

impl Audience<'_> {
    /// Whether a room, on its own, makes its members see each other.
    pub(crate) fn eligible(&self, room: RoomIdx) -> bool {
        self.rooms.eligible(room)
    }

    /// Eligible rooms both users are joined to (room lists are sorted).
    pub(crate) fn shared_rooms(
        &self,
        a: UserIdx,
        b: UserIdx,
    ) -> impl Iterator<Item = RoomIdx> + '_ {
        let (a, b) = (&self.users.get(a).rooms, &self.users.get(b).rooms);
        let (mut i, mut j) = (0, 0);
        std::iter::from_fn(move || {
            while i < a.len() && j < b.len() {
                match a[i].cmp(&b[j]) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => {
                        let room = a[i];
                        i += 1;
                        j += 1;
                        if self.eligible(room) {
                            return Some(room);
                        }
                    }
                }
            }
            None
        })
    }

    pub(crate) fn shares_room(&self, a: UserIdx, b: UserIdx) -> bool {
        self.shared_rooms(a, b).next().is_some()
    }

    /// Whether `observer` may see `target`'s presence, given the router's
    /// interest for the observer.
    pub(crate) fn sees(&self, observer: UserIdx, target: UserIdx, interest: &Interest) -> bool {
        observer == target
            || interest.includes(&self.users.get(target).state.user_id)
            || self.shares_room(observer, target)
    }

    /// Whether meeting `target` through `room` (a join or an invite that
    /// the observer's sync shows) reveals the target's current presence:
    /// the room is eligible, or the router lets the observer see the
    /// target anyway (a route makes a user of an excluded or oversized room
    /// newly visible at the join). Another shared room is not a reason:
    /// that target was visible already.
    pub(crate) fn meeting_reveals(
        &self,
        target: UserIdx,
        room: RoomIdx,
        interest: &Interest,
    ) -> bool {
        self.eligible(room) || interest.includes(&self.users.get(target).state.user_id)
    }

    /// Every member of every eligible room of `user` (with repeats; the user
    /// themself included).
    pub(crate) fn co_members(&self, user: UserIdx) -> impl Iterator<Item = UserIdx> + '_ {
        self.users
            .get(user)
            .rooms
            .iter()
            .filter(|&&r| self.eligible(r))
            .flat_map(|&r| self.rooms.get(r).members.iter().copied())
    }

    /// Whether `server` shares an eligible room other than `except` with `user`.
    pub(crate) fn server_shares_room(
        &self,
        user: UserIdx,
        server: &ServerName,
        except: RoomIdx,
    ) -> bool {
        self.users.get(user).rooms.iter().any(|&room| {
            room != except
                && self.eligible(room)
                && self.rooms.has_remote(room)
                && self.rooms.get(room).has_server(server)
        })
    }

    /// The eligible rooms that make `target` visible to `observer`.
    pub(crate) fn explain_rooms(&self, observer: UserIdx, target: UserIdx) -> Vec<OwnedRoomId> {
        self.shared_rooms(observer, target)
            .map(|r| self.rooms.id(r))
            .collect()
    }
}
