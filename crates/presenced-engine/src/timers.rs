//! Timers by deadline: one entry per user at its earliest deadline.
//!
//! A timer pass costs what is due, never a scan of all users. Entries are
//! filed and removed as users change, so a fired entry is always current.

use std::collections::BTreeSet;

use crate::users::UserIdx;
use crate::Timestamp;

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    queue: BTreeSet<(Timestamp, UserIdx)>,
}

impl TimerQueue {
    /// Moves `user` from `old` (where it was filed) to `new`.
    pub(crate) fn refile(&mut self, user: UserIdx, old: Option<Timestamp>, new: Option<Timestamp>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.queue.remove(&(old, user));
        }
        if let Some(new) = new {
            self.queue.insert((new, user));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.queue.first().map(|e| e.0)
    }

    /// Removes and returns every user due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Vec<UserIdx> {
        let mut due = Vec::new();
        while let Some(&(at, user)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            due.push(user);
        }
        due
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
