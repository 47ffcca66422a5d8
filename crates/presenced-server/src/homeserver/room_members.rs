//! Who is in each local room, kept in memory.
//!
//! Every room write needs the room's joined members (whose syncs to wake)
//! and every membership change needs the current memberships and the
//! join rule (may this user join?). Reading them from SQLite inside the
//! room write lock cost O(room size) per join, so filling a big room was
//! quadratic. [`RoomMembers`] answers both from memory: it is loaded once
//! at start-up from the store and changed only by room writes, after their
//! commit and under the same lock (`RoomStream::write`), so it is exactly
//! the committed state whenever that lock is free.
//!
//! Only invites and joins are kept: a user who left is the same as one who
//! was never there for every rule (`rooms::Current::allows`). The join
//! rule is fixed at creation (presenced has no state-event endpoint), so a
//! room's `public` flag never changes. User IDs are shared (`Arc`) across
//! rooms, so a membership costs a pointer, not a string.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma_common::{OwnedRoomId, RoomId, UserId};

use crate::store::membership::Membership;

/// The current invites and joins of every local room.
#[derive(Debug, Default)]
pub struct RoomMembers {
    /// Each user ID once, shared by the rooms' member maps.
    users: HashSet<Arc<UserId>>,
    rooms: HashMap<OwnedRoomId, Room>,
}

/// One room's join rule and members.
#[derive(Debug, Default)]
pub struct Room {
    /// The join rule is `public`: anyone may join without an invite.
    public: bool,
    /// Invited or joined users (never `Leave`).
    members: HashMap<Arc<UserId>, Membership>,
    /// How many of `members` are joined.
    joined: usize,
}

impl Room {
    /// Whether anyone may join without an invite.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// A user's membership (`None`: never there, or left).
    pub fn membership(&self, user: &UserId) -> Option<Membership> {
        self.members.get(user).copied()
    }

    /// Whether the user is joined.
    pub fn is_joined(&self, user: &UserId) -> bool {
        self.membership(user) == Some(Membership::Join)
    }

    /// The joined members, in no particular order.
    pub fn joined(&self) -> impl Iterator<Item = &Arc<UserId>> {
        self.members
            .iter()
            .filter(|(_, &m)| m == Membership::Join)
            .map(|(user, _)| user)
    }

    /// How many members are joined.
    pub fn joined_count(&self) -> usize {
        self.joined
    }
}

impl RoomMembers {
    /// Builds the map from the stored rooms (with whether each one's join
    /// rule is public) and their current memberships. A membership of a
    /// room not listed is kept (its room counts as existing, not public).
    pub fn load<U: Borrow<UserId>>(
        rooms: impl IntoIterator<Item = (OwnedRoomId, bool)>,
        memberships: impl IntoIterator<Item = (OwnedRoomId, U, Membership)>,
    ) -> Self {
        let mut members = Self::default();
        for (room, public) in rooms {
            members.add_room(room, public);
        }
        for (room, user, membership) in memberships {
            let user = members.intern(user.borrow());
            members.rooms.entry(room).or_default().set(user, membership);
        }
        members
    }

    /// The room, if it exists.
    pub fn room(&self, room: &RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }

    /// A user's membership of a room (`None` also for an unknown room).
    pub fn membership(&self, room: &RoomId, user: &UserId) -> Option<Membership> {
        self.room(room).and_then(|r| r.membership(user))
    }

    /// Whether the user is joined to the room.
    pub fn is_joined(&self, room: &RoomId, user: &UserId) -> bool {
        self.membership(room, user) == Some(Membership::Join)
    }

    /// Number of known rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A new room with no members yet (an existing one keeps its members).
    pub fn add_room(&mut self, room: OwnedRoomId, public: bool) {
        self.rooms.entry(room).or_default().public = public;
    }

    /// Records a committed membership change of an existing room (an
    /// unknown room is created, not public). Returns the shared user ID.
    pub fn set(&mut self, room: &RoomId, user: &UserId, membership: Membership) -> Arc<UserId> {
        let user = self.intern(user);
        match self.rooms.get_mut(room) {
            Some(r) => r.set(Arc::clone(&user), membership),
            None => self
                .rooms
                .entry(room.to_owned())
                .or_default()
                .set(Arc::clone(&user), membership),
        }
        user
    }

    /// The one shared copy of a user ID.
    fn intern(&mut self, user: &UserId) -> Arc<UserId> {
        if let Some(shared) = self.users.get(user) {
            return Arc::clone(shared);
        }
        let shared: Arc<UserId> = Arc::from(user);
        self.users.insert(Arc::clone(&shared));
        shared
    }
}

impl Room {
    fn set(&mut self, user: Arc<UserId>, membership: Membership) {
        let before = if membership == Membership::Leave {
            self.members.remove(&user)
        } else {
            self.members.insert(user, membership)
        };
        let was_joined = before == Some(Membership::Join);
        let is_joined = membership == Membership::Join;
        match (was_joined, is_joined) {
            (false, true) => self.joined += 1,
            (true, false) => self.joined -= 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: u32) -> OwnedRoomId {
        format!("!r{n}:example.org").try_into().unwrap()
    }

    fn user(name: &str) -> Arc<UserId> {
        let id: ruma_common::OwnedUserId = format!("@{name}:example.org").try_into().unwrap();
        Arc::from(&*id)
    }

    fn joined(members: &RoomMembers, r: &RoomId) -> Vec<String> {
        let mut names: Vec<String> = members
            .room(r)
            .unwrap()
            .joined()
            .map(|u| u.localpart().to_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn load_keeps_rooms_rules_and_memberships() {
        let members = RoomMembers::load(
            [(room(1), true), (room(2), false), (room(3), false)],
            [
                (room(1), user("alice"), Membership::Join),
                (room(1), user("bob"), Membership::Invite),
                (room(2), user("alice"), Membership::Join),
                (room(2), user("carol"), Membership::Join),
            ],
        );
        assert_eq!(members.room_count(), 3);
        assert!(members.room(&room(1)).unwrap().is_public());
        assert!(!members.room(&room(2)).unwrap().is_public());
        assert!(members.room(&room(4)).is_none());
        assert_eq!(joined(&members, &room(1)), ["alice"]);
        assert_eq!(joined(&members, &room(2)), ["alice", "carol"]);
        assert!(joined(&members, &room(3)).is_empty());
        assert_eq!(
            members.membership(&room(1), &user("bob")),
            Some(Membership::Invite)
        );
        assert!(members.is_joined(&room(2), &user("carol")));
        assert!(!members.is_joined(&room(1), &user("bob")));
        assert!(!members.is_joined(&room(4), &user("alice")));
    }

    #[test]
    fn changes_move_members_between_invited_joined_and_gone() {
        let mut members = RoomMembers::default();
        members.add_room(room(1), false);
        let (alice, bob) = (user("alice"), user("bob"));
        members.set(&room(1), &alice, Membership::Join);
        members.set(&room(1), &bob, Membership::Invite);
        let r = members.room(&room(1)).unwrap();
        assert_eq!(r.joined_count(), 1);
        assert_eq!(r.membership(&bob), Some(Membership::Invite));

        members.set(&room(1), &bob, Membership::Join);
        assert_eq!(joined(&members, &room(1)), ["alice", "bob"]);
        assert_eq!(members.room(&room(1)).unwrap().joined_count(), 2);

        // Leaving forgets the member: left and never-there are the same.
        members.set(&room(1), &alice, Membership::Leave);
        assert_eq!(joined(&members, &room(1)), ["bob"]);
        assert_eq!(members.membership(&room(1), &alice), None);
        assert_eq!(members.room(&room(1)).unwrap().joined_count(), 1);

        // A rejected invite, and a leave of someone not there, count nothing.
        members.set(&room(1), &alice, Membership::Invite);
        members.set(&room(1), &alice, Membership::Leave);
        members.set(&room(1), &alice, Membership::Leave);
        assert_eq!(members.room(&room(1)).unwrap().joined_count(), 1);
        assert_eq!(members.membership(&room(1), &alice), None);
    }

    #[test]
    fn a_user_id_is_shared_across_rooms() {
        let mut members = RoomMembers::default();
        members.add_room(room(1), false);
        members.add_room(room(2), true);
        let a = members.set(&room(1), &user("alice"), Membership::Join);
        let b = members.set(&room(2), &user("alice"), Membership::Join);
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn adding_an_existing_room_keeps_its_members() {
        let mut members = RoomMembers::default();
        members.add_room(room(1), false);
        members.set(&room(1), &user("alice"), Membership::Join);
        members.add_room(room(1), false);
        assert_eq!(joined(&members, &room(1)), ["alice"]);
    }
}
