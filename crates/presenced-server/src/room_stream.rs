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
//! Writes hold one lock from the SQLite commit to the record, so the
//! recorded position never runs ahead of a change that is not recorded
//! yet: a sync that sees position N and no change for its user after
//! `since` can answer an empty rooms section up to N.
//!
//! At start-up nothing is recorded: positions at or before the stored
//! maximum (`floor`) are unknown, and a token older than that falls back
//! to the database once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use ruma_common::{OwnedUserId, UserId};

/// In-memory room stream: current position and per-user latest change.
pub struct RoomStream {
    positions: Mutex<Positions>,
    /// Held across "commit room events, then record them".
    writes: Mutex<()>,
}

struct Positions {
    /// Highest committed and recorded event stream position.
    position: i64,
    /// The position at start-up: changes at or before it were not seen.
    floor: i64,
    /// Per user: the stream position of their latest room change.
    latest: HashMap<OwnedUserId, i64>,
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

impl RoomStream {
    /// Starts at the stored maximum stream position.
    pub fn new(stored_max: i64) -> Self {
        Self {
            positions: Mutex::new(Positions {
                position: stored_max,
                floor: stored_max,
                latest: HashMap::new(),
            }),
            writes: Mutex::new(()),
        }
    }

    fn positions(&self) -> MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(|p| p.into_inner())
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
        (p.position, moved)
    }

    /// Runs a room write (on a blocking thread) and records it: `write`
    /// returns its result, the highest stream position it committed (if
    /// any) and the users it concerns. Returns the result and those users,
    /// whose waiting syncs the caller should wake.
    pub fn write<T, E>(
        &self,
        write: impl FnOnce() -> Result<(T, Option<i64>, Vec<OwnedUserId>), E>,
    ) -> Result<(T, Vec<OwnedUserId>), E> {
        let _serial = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let (result, top, users) = write()?;
        let Some(top) = top else {
            return Ok((result, Vec::new()));
        };
        let mut p = self.positions();
        p.position = p.position.max(top);
        for user in &users {
            let at = p.latest.entry(user.clone()).or_insert(top);
            *at = (*at).max(top);
        }
        Ok((result, users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> OwnedUserId {
        format!("@{name}:example.org").try_into().unwrap()
    }

    #[test]
    fn records_changes_per_user() {
        let rooms = RoomStream::new(10);
        let (alice, bob) = (user("alice"), user("bob"));
        assert_eq!(rooms.moved_since(&alice, 10), (10, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&alice, 5), (10, RoomsMoved::Unknown));
        let ((), woken) = rooms
            .write(|| Ok::<_, ()>(((), Some(12), vec![alice.clone()])))
            .unwrap();
        assert_eq!(woken, vec![alice.clone()]);
        assert_eq!(rooms.moved_since(&alice, 10), (12, RoomsMoved::Yes));
        assert_eq!(rooms.moved_since(&alice, 5), (12, RoomsMoved::Yes));
        assert_eq!(rooms.moved_since(&alice, 12), (12, RoomsMoved::No));
        assert_eq!(rooms.moved_since(&bob, 10), (12, RoomsMoved::No));
    }

    #[test]
    fn a_write_that_stored_nothing_records_nothing() {
        let rooms = RoomStream::new(3);
        let (_, woken) = rooms
            .write(|| Ok::<_, ()>(((), None, vec![user("alice")])))
            .unwrap();
        assert!(woken.is_empty());
        assert_eq!(rooms.position(), 3);
    }
}
