//! One commit for the writes of many writers (the presence writer's group
//! commit), in which a row the backend refuses fails only the writer that
//! sent it.
//!
//! The grouped write is tried first, as before: one transaction, which
//! nearly always succeeds, and that path costs what it did (the rows are
//! moved, not copied; a `u32` per row says whose it is). When the backend
//! refuses a value ([`StoreFailure::is_refusal`]), the whole transaction
//! is undone, so each row is then written again on its own and only the
//! writers of rows that fail again are told so; the others' rows commit.
//! Any other failure (the database unreachable, a timeout) fails the group
//! at once without retries: a thousand single-row writes against a
//! database that is down would only stall the writer.
//!
//! Full-presence marks and forgotten users are not retried row by row:
//! they hold only user IDs, which a backend has no reason to refuse. Their
//! failure fails only the writers that sent some.

use presenced_engine::{PresenceState, StreamPos};
use ruma_common::OwnedUserId;

use super::{PresenceStore, StoreFailure};

/// The writes of several writers, stored together by [`Self::commit`].
#[derive(Default)]
pub struct GroupCommit {
    /// Every notified state, with the writer that sent it.
    states: Vec<(StreamPos, PresenceState, u32)>,
    marks: Vec<(OwnedUserId, StreamPos)>,
    /// The writers that sent marks.
    marks_from: Vec<u32>,
    forget: Vec<(OwnedUserId, StreamPos)>,
    /// The writers that sent users to forget.
    forget_from: Vec<u32>,
    writers: u32,
}

/// A group's states reduced to each user's latest, and whose they are.
struct Latest {
    rows: Vec<(StreamPos, PresenceState)>,
    /// The writer of each row.
    from: Vec<u32>,
    /// `(row, writer)`: the writer's older state of that row's user was
    /// dropped, so it shares the row's fate.
    superseded: Vec<(usize, u32)>,
}

impl GroupCommit {
    /// Adds one writer's share; [`Self::commit`] answers for it at the
    /// returned index.
    pub fn add(
        &mut self,
        states: Vec<(StreamPos, PresenceState)>,
        marks: Vec<(OwnedUserId, StreamPos)>,
        forget: Vec<(OwnedUserId, StreamPos)>,
    ) -> usize {
        let writer = self.writers;
        self.writers += 1;
        self.states
            .extend(states.into_iter().map(|(pos, s)| (pos, s, writer)));
        if !marks.is_empty() {
            self.marks.extend(marks);
            self.marks_from.push(writer);
        }
        if !forget.is_empty() {
            self.forget.extend(forget);
            self.forget_from.push(writer);
        }
        writer as usize
    }

    /// Stores every share: per writer, in the order they were added,
    /// whether its share is stored.
    pub fn commit(self, store: &dyn PresenceStore) -> Vec<Result<(), StoreFailure>> {
        let mut outcome: Vec<Result<(), StoreFailure>> =
            (0..self.writers).map(|_| Ok(())).collect();
        let latest = latest_per_user(self.states);
        if !latest.rows.is_empty() {
            if let Err(e) = store.persist(&latest.rows) {
                persist_one_by_one(store, &latest, e, &mut outcome);
            }
        }
        // States first, then marks, then forgets: a forget applies only to
        // states at or before its position, so it cannot drop a newer one.
        if !self.marks.is_empty() {
            if let Err(e) = store.persist_marks(&self.marks) {
                for &w in &self.marks_from {
                    fail(&mut outcome, w, &e);
                }
            }
        }
        if !self.forget.is_empty() {
            if let Err(e) = store.forget(&self.forget) {
                for &w in &self.forget_from {
                    fail(&mut outcome, w, &e);
                }
            }
        }
        outcome
    }
}

/// Only each user's latest state needs writing (jobs may arrive slightly
/// out of stream order: the server sends them after releasing the
/// engine's lock).
fn latest_per_user(mut states: Vec<(StreamPos, PresenceState, u32)>) -> Latest {
    states.sort_unstable_by(|(p, a, _), (q, b, _)| a.user_id.cmp(&b.user_id).then(q.cmp(p)));
    let mut latest = Latest {
        rows: Vec::with_capacity(states.len()),
        from: Vec::with_capacity(states.len()),
        superseded: Vec::new(),
    };
    for (pos, state, writer) in states {
        match latest.rows.last() {
            Some((_, kept)) if kept.user_id == state.user_id => {
                latest.superseded.push((latest.rows.len() - 1, writer));
            }
            _ => {
                latest.rows.push((pos, state));
                latest.from.push(writer);
            }
        }
    }
    latest
}

/// After the grouped write failed with `first`: each row on its own when
/// that was a refusal, else the whole group fails.
fn persist_one_by_one(
    store: &dyn PresenceStore,
    latest: &Latest,
    first: StoreFailure,
    outcome: &mut [Result<(), StoreFailure>],
) {
    let fail_row = |outcome: &mut [Result<(), StoreFailure>], row: usize, e: &StoreFailure| {
        fail(outcome, latest.from[row], e);
        for &(_, w) in latest.superseded.iter().filter(|(r, _)| *r == row) {
            fail(outcome, w, e);
        }
    };
    if !first.is_refusal() {
        for row in 0..latest.rows.len() {
            fail_row(outcome, row, &first);
        }
        return;
    }
    for (row, state) in latest.rows.iter().enumerate() {
        match store.persist(std::slice::from_ref(state)) {
            Ok(()) => {}
            Err(e) if e.is_refusal() => fail_row(outcome, row, &e),
            Err(e) => {
                // The backend itself failed meanwhile: stop trying.
                for rest in row..latest.rows.len() {
                    fail_row(outcome, rest, &e);
                }
                return;
            }
        }
    }
}

/// Marks a writer failed (its first failure is the one it reports).
fn fail(outcome: &mut [Result<(), StoreFailure>], writer: u32, e: &StoreFailure) {
    if let Some(slot) = outcome.get_mut(writer as usize) {
        if slot.is_ok() {
            *slot = Err(e.clone());
        }
    }
}
