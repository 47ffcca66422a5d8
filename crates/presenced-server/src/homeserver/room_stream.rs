//! Where each user's rooms last moved, kept in memory.
//!
//! `/sync` needs two room facts on every turn: the event stream position
//! for `next_batch`, and whether anything in the caller's rooms happened
//! after their `since`. Asking SQLite both on every sync (and, for waiting
//! syncs, again and again) was the largest part of the server's CPU. Room
//! writes go through [`RoomStream::write`] instead, which records, for
//! every user the write concerns, the stream position of their latest room
//! change; a sync compares that number with its token and only reads the
//! database when something did change.
//!
//! Writes hold one lock from their checks through the SQLite commit to the
//! record, so the recorded position never runs ahead of a change that is
//! not recorded yet: a sync that sees position N and no change for its
//! user after `since` can answer an empty rooms section up to N.
//!
//! The same lock guards the rooms' members ([`RoomMembers`]): a write
//! checks against them, commits, then updates them and records the new
//! position for the room's joined members, so no write reads the member
//! list from SQLite.
//!
//! At start-up nothing is recorded: positions at or before the stored
//! maximum (`floor`) are unknown, and a token older than that falls back
//! to the database once.
//!
//! **Cluster mode** (`following`): other nodes write rooms too, so the
//! facts here are applied only from the database's event stream, in stream
//! order ([`RoomStream::follow`]; PostgreSQL commits room writes one at a
//! time, so reading past N has seen every event below N). A write here
//! first catches up (its checks see every earlier write, from any node),
//! commits, and catches up again, which applies its own events; a
//! follower task catches up a few times a second between writes. A token
//! from a node further ahead is echoed, never answered with an older
//! position.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use ruma_common::{OwnedRoomId, OwnedUserId, UserId};

use crate::homeserver::room_members::RoomMembers;
use crate::store::membership::{Membership, MembershipChange};
use crate::store::TailedEvent;

/// Room events read per catch-up query.
const FOLLOW_BATCH: usize = 1_000;

/// In-memory room stream: current position, per-user latest change, and
/// the rooms' members.
pub struct RoomStream {
    positions: Mutex<Positions>,
    /// Changed only by [`RoomStream::write`], after the commit, while it
    /// holds `writes`; anyone may read it.
    members: RwLock<RoomMembers>,
    /// Held across "check, commit room events, then record them".
    writes: Mutex<()>,
    /// Cluster mode: facts come from the database's event stream only.
    following: bool,
}

struct Positions {
    /// Highest committed and recorded event stream position.
    position: i64,
    /// The position at start-up: changes at or before it were not seen.
    floor: i64,
    /// Per user: the stream position of their latest room change.
    latest: HashMap<Arc<UserId>, i64>,
}

/// What the in-memory record knows about a user's rooms after a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomsMoved {
    /// Something changed after the token.
    Yes,
    /// Nothing changed between the token and the current position.
    No,
    /// The token predates start-up and the user has not changed since:
    /// only the database knows.
    Unknown,
}

/// What a catch-up with the database's event stream applied.
#[derive(Debug, Default)]
pub struct Followed {
    /// Users whose waiting syncs to wake (duplicates possible).
    pub woken: Vec<Arc<UserId>>,
    /// Membership changes, in stream order (already applied to presence
    /// through `before_record`; kept for observers).
    pub memberships: Vec<MembershipChange>,
}

/// What a room write committed, for [`RoomStream::write`] to record.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The room written to.
    pub room: OwnedRoomId,
    /// The highest stream position stored.
    pub top: i64,
    /// Set when the write created the room: whether its join rule is public.
    pub created: Option<bool>,
    /// The membership changes stored, in commit order.
    pub memberships: Vec<(OwnedUserId, Membership)>,
}

impl Committed {
    /// Events that changed no membership in an existing room.
    pub fn events(room: OwnedRoomId, top: i64) -> Self {
        Self {
            room,
            top,
            created: None,
            memberships: Vec::new(),
        }
    }
}

impl RoomStream {
    /// Starts at the stored maximum stream position, with the stored
    /// rooms' members.
    pub fn new(stored_max: i64, members: RoomMembers) -> Self {
        Self::with_following(stored_max, members, false)
    }

    /// [`Self::new`] for a cluster node (`following`): `stored_max` must
    /// have been read before `members`, so the first catch-up misses
    /// nothing (re-applying a change `members` already has is harmless).
    pub fn with_following(stored_max: i64, members: RoomMembers, following: bool) -> Self {
        Self {
            positions: Mutex::new(Positions {
                position: stored_max,
                floor: stored_max,
                latest: HashMap::new(),
            }),
            members: RwLock::new(members),
            writes: Mutex::new(()),
            following,
        }
    }

    /// Whether this is a cluster node's room stream.
    pub fn is_following(&self) -> bool {
        self.following
    }

    fn positions(&self) -> MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rooms' current (committed) members. Do not hold the guard
    /// across a room write.
    pub fn members(&self) -> RwLockReadGuard<'_, RoomMembers> {
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current event stream position.
    pub fn position(&self) -> i64 {
        self.positions().position
    }

    /// The current position and whether `user`'s rooms moved after `since`.
    pub fn moved_since(&self, user: &UserId, since: i64) -> (i64, RoomsMoved) {
        let p = self.positions();
        let moved = match p.latest.get(user) {
            Some(&at) if at > since => RoomsMoved::Yes,
            _ if since >= p.floor => RoomsMoved::No,
            // A later change would be recorded; an earlier one is only
            // in the database.
            _ => RoomsMoved::Unknown,
        };
        // A token from a node that followed further: what it covers was
        // delivered, and what comes after it will be recorded here.
        let position = if self.following {
            p.position.max(since)
        } else {
            p.position
        };
        (position, moved)
    }

    /// Runs a room write (on a blocking thread) and records it. `write`
    /// sees the current members (no other write runs meanwhile) and
    /// returns its result and what it committed (`None`: nothing). The
    /// members are then updated, and the room's joined members and the
    /// targets of its membership changes (who may have just left) get the
    /// new position. Returns the result and those users, whose waiting
    /// syncs the caller should wake.
    pub fn write<T, E>(
        &self,
        write: impl FnOnce(&RoomMembers) -> Result<(T, Option<Committed>), E>,
    ) -> Result<(T, Vec<Arc<UserId>>), E> {
        let _serial = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let (result, committed) = write(&self.members())?;
        let Some(committed) = committed else {
            return Ok((result, Vec::new()));
        };
        Ok((result, self.record(&committed)))
    }

    /// Cluster mode's [`Self::write`]: catches up with the database's
    /// event stream before the write (its checks see every earlier write,
    /// from any node) and after it (which applies the write's own events).
    /// `read(after, limit)` reads committed events. Returns the result, the
    /// users to wake and the membership changes applied, in stream order.
    pub fn write_following<T, E>(
        &self,
        read: impl Fn(i64, usize) -> Result<Vec<TailedEvent>, E>,
        mut before_record: impl FnMut(&MembershipChange),
        write: impl FnOnce(&RoomMembers) -> Result<(T, Option<Committed>), E>,
    ) -> Result<(T, Followed), E> {
        let _serial = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut followed = self.catch_up(&read, &mut before_record)?;
        let (result, committed) = write(&self.members())?;
        if committed.is_some() {
            let after = self.catch_up(&read, &mut before_record)?;
            followed.woken.extend(after.woken);
            followed.memberships.extend(after.memberships);
        }
        Ok((result, followed))
    }

    /// Cluster mode: applies every room event committed after the current
    /// position (the follower task calls this between writes).
    /// `before_record` sees each membership change before the position
    /// moves past it (see [`Self::catch_up`]).
    pub fn follow<E>(
        &self,
        read: impl Fn(i64, usize) -> Result<Vec<TailedEvent>, E>,
        mut before_record: impl FnMut(&MembershipChange),
    ) -> Result<Followed, E> {
        let _serial = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&read, &mut before_record)
    }

    /// Reads and records events after the position until there are none.
    /// The caller holds `writes`. Each membership change goes to
    /// `before_record` before it is recorded: presence must have met the
    /// change before any sync can hand out a token past it (cluster tokens
    /// map room positions to meetings).
    fn catch_up<E>(
        &self,
        read: &impl Fn(i64, usize) -> Result<Vec<TailedEvent>, E>,
        before_record: &mut impl FnMut(&MembershipChange),
    ) -> Result<Followed, E> {
        let mut followed = Followed::default();
        loop {
            let events = read(self.position(), FOLLOW_BATCH)?;
            let full = events.len() >= FOLLOW_BATCH;
            for event in events {
                let memberships: Vec<_> = event.membership.iter().cloned().collect();
                let changes: Vec<MembershipChange> = (memberships.iter().cloned())
                    .map(|(user_id, membership)| MembershipChange {
                        room_id: event.room_id.clone(),
                        user_id,
                        sender: event.sender.clone(),
                        membership,
                        stream: event.stream,
                    })
                    .collect();
                changes.iter().for_each(&mut *before_record);
                let committed = Committed {
                    room: event.room_id.clone(),
                    top: event.stream,
                    created: event.created_public,
                    memberships,
                };
                followed.woken.extend(self.record(&committed));
                followed.memberships.extend(changes);
            }
            if !full {
                return Ok(followed);
            }
        }
    }

    /// Records a commit: the members, the position, and the latest change
    /// of every user it concerns; returns those users.
    fn record(&self, committed: &Committed) -> Vec<Arc<UserId>> {
        let users = self.apply(committed);
        let mut p = self.positions();
        p.position = p.position.max(committed.top);
        for user in &users {
            match p.latest.get_mut(&**user) {
                Some(at) => *at = (*at).max(committed.top),
                None => {
                    p.latest.insert(Arc::clone(user), committed.top);
                }
            }
        }
        users
    }

    /// Applies a commit to the members; returns the users it concerns.
    fn apply(&self, committed: &Committed) -> Vec<Arc<UserId>> {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let room = &committed.room;
        if let Some(public) = committed.created {
            members.add_room(room.clone(), public);
        }
        let targets: Vec<Arc<UserId>> = (committed.memberships.iter())
            .map(|(user, membership)| members.set(room, user, *membership))
            .collect();
        let Some(r) = members.room(room) else {
            return targets;
        };
        let mut users = Vec::with_capacity(r.joined_count() + targets.len());
        users.extend(r.joined().cloned());
        // Joined targets are in already; the others were invited or left.
        users.extend(targets.into_iter().filter(|u| !r.is_joined(u)));
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> OwnedUserId {
        format!("@{name}:example.org").try_into().unwrap()
    }

    fn room() -> OwnedRoomId {
        "!r:example.org".try_into().unwrap()
    }

    fn names(users: &[Arc<UserId>]) -> Vec<&str> {
        let mut names: Vec<&str> = users.iter().map(|u| u.localpart()).collect();
        names.sort_unstable();
        names
    }

    /// A committed write of `memberships` at `top`.
    fn commit(
        rooms: &RoomStream,
        top: i64,
        created: Option<bool>,
        memberships: &[(&OwnedUserId, Membership)],
    ) -> Vec<Arc<UserId>> {
        let memberships = memberships.iter().map(|&(u, m)| (u.clone(), m)).collect();
        let committed = Committed {
            memberships,
            created,
            ..Committed::events(room(), top)
        };
        rooms
            .write(|_| Ok::<_, ()>(((), Some(committed))))
            .unwrap()
            .1
    }

    #[test]
    fn records_changes_per_user() {
        let rooms = RoomStream::new(10, RoomMembers::default());
        let (alice, bob) = (user("alice"), user("bob"));
        assert_eq!(rooms.moved_since(&alice, 10), (10, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&alice, 5), (10, RoomsMoved::Unknown));
        let woken = commit(&rooms, 12, Some(false), &[(&alice, Membership::Join)]);
        assert_eq!(names(&woken), ["alice"]);
        assert_eq!(rooms.moved_since(&alice, 10), (12, RoomsMoved::Yes));
        assert_eq!(rooms.moved_since(&alice, 5), (12, RoomsMoved::Yes));
        assert_eq!(rooms.moved_since(&alice, 12), (12, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&bob, 10), (12, RoomsMoved::No));
    }

    #[test]
    fn a_write_that_stored_nothing_records_nothing() {
        let rooms = RoomStream::new(3, RoomMembers::default());
        let (_, woken) = rooms.write(|_| Ok::<_, ()>(((), None))).unwrap();
        assert!(woken.is_empty());
        assert_eq!(rooms.position(), 3);
        assert_eq!(rooms.members().room_count(), 0);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let rooms = RoomStream::new(3, RoomMembers::default());
        assert_eq!(rooms.write(|_| Err::<((), _), _>("no")).unwrap_err(), "no");
        assert_eq!(rooms.position(), 3);
    }

    #[test]
    fn writes_keep_the_members_and_concern_the_joined_ones() {
        let rooms = RoomStream::new(0, RoomMembers::default());
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        // Created with alice joined and bob and carol invited: all three
        // are concerned (the invitees see their invite).
        let woken = commit(
            &rooms,
            5,
            Some(true),
            &[
                (&alice, Membership::Join),
                (&bob, Membership::Invite),
                (&carol, Membership::Invite),
            ],
        );
        assert_eq!(names(&woken), ["alice", "bob", "carol"]);
        assert!(rooms.members().room(&room()).unwrap().is_public());
        assert_eq!(
            rooms.members().membership(&room(), &bob),
            Some(Membership::Invite)
        );

        // A message concerns the joined members only.
        let (_, woken) = rooms
            .write(|members| {
                assert!(members.is_joined(&room(), &alice));
                Ok::<_, ()>(((), Some(Committed::events(room(), 6))))
            })
            .unwrap();
        assert_eq!(names(&woken), ["alice"]);
        assert_eq!(rooms.moved_since(&bob, 5), (6, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&alice, 5), (6, RoomsMoved::Yes));

        // Bob joins: listed once.
        let woken = commit(&rooms, 7, None, &[(&bob, Membership::Join)]);
        assert_eq!(names(&woken), ["alice", "bob"]);

        // Alice leaves: she is told, and is no longer a member.
        let woken = commit(&rooms, 8, None, &[(&alice, Membership::Leave)]);
        assert_eq!(names(&woken), ["alice", "bob"]);
        assert!(!rooms.members().is_joined(&room(), &alice));
        assert_eq!(rooms.moved_since(&alice, 7), (8, RoomsMoved::Yes));

        // After she left, the room's events are not hers.
        let woken = commit(&rooms, 9, None, &[]);
        assert_eq!(names(&woken), ["bob"]);
        assert_eq!(rooms.moved_since(&alice, 8), (9, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&carol, 5), (9, RoomsMoved::No));
    }
}
