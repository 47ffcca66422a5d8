//! The presence stream: positions and a bounded log of who changed when.

use std::collections::VecDeque;

use crate::users::UserIdx;

/// A position in the presence stream (the presence part of a sync token).
pub type StreamPos = u64;

/// Marks a position that records no user (a full-presence or join marker).
const MARKER: UserIdx = UserIdx::MAX;

/// Positions handed out so far, and the most recent ones with their users.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    entries: VecDeque<(StreamPos, UserIdx)>,
    capacity: usize,
    current: StreamPos,
}

impl ChangeLog {
    pub(crate) fn new(start: StreamPos, capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            current: start,
        }
    }

    /// The latest position handed out.
    pub(crate) fn current(&self) -> StreamPos {
        self.current
    }

    /// Records a change of `user` at a new position.
    pub(crate) fn push(&mut self, user: UserIdx) -> StreamPos {
        self.current += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((self.current, user));
        self.current
    }

    /// Moves the stream by one position that names no user, so that tokens
    /// handed out from now on are strictly past everything before.
    pub(crate) fn mark(&mut self) -> StreamPos {
        self.push(MARKER)
    }

    /// Users changed after `since`, oldest first (with repeats), or `None`
    /// if `since` is older than the log remembers.
    pub(crate) fn since(
        &self,
        since: StreamPos,
    ) -> Option<impl Iterator<Item = (StreamPos, UserIdx)> + '_> {
        let oldest = self.entries.front().map_or(self.current + 1, |e| e.0);
        if since + 1 < oldest && since < self.current {
            return None;
        }
        let start = self.entries.partition_point(|e| e.0 <= since);
        Some(
            self.entries
                .range(start..)
                .copied()
                .filter(|&(_, u)| u != MARKER),
        )
    }

    /// How many positions lie after `since`.
    pub(crate) fn distance(&self, since: StreamPos) -> u64 {
        self.current.saturating_sub(since)
    }
}

/// A bounded log of recent (position, item) records that knows how far back
/// it is complete. Used per large room and for joins.
#[derive(Debug)]
pub(crate) struct RecentLog<T> {
    entries: VecDeque<(StreamPos, T)>,
    capacity: usize,
    /// Records at or before this position may be missing.
    complete_after: StreamPos,
}

impl<T: Copy> RecentLog<T> {
    /// A log that is complete only for positions after `complete_after`.
    pub(crate) fn new(capacity: usize, complete_after: StreamPos) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            complete_after,
        }
    }

    pub(crate) fn push(&mut self, pos: StreamPos, item: T) {
        if self.entries.len() == self.capacity {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.complete_after = self.complete_after.max(dropped);
            }
        }
        self.entries.push_back((pos, item));
    }

    /// Records after `since`, or `None` if some may be missing.
    pub(crate) fn since(
        &self,
        since: StreamPos,
    ) -> Option<impl Iterator<Item = (StreamPos, T)> + '_> {
        if since < self.complete_after {
            return None;
        }
        let start = self.entries.partition_point(|e| e.0 <= since);
        Some(self.entries.range(start..).copied())
    }

    /// Forgets every record of `item` (a member leaving a large room).
    pub(crate) fn forget(&mut self, item: T)
    where
        T: PartialEq,
    {
        self.entries.retain(|&(_, i)| i != item);
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(StreamPos, T)>()
    }
}
