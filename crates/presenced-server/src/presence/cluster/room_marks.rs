//! From a sync token's room stream position to the engine position up to
//! which its meetings (joins, invites) were seen, on a cluster node.
//!
//! Every node applies membership changes in room stream order (it follows
//! the database's event stream), each at an engine position of its own.
//! Noting (room position, engine position) per change gives a monotone
//! map: a token at room position `r` has seen the meetings of every change
//! at or before `r`, which this node recorded at or before the engine
//! position noted for the last of them.

use std::collections::VecDeque;

use presenced_engine::StreamPos;

/// Marks kept at most; a token older than the oldest gets every meeting
/// since start-up again (a repeat, never a loss).
const KEPT: usize = 100_000;

/// Noted (room position, engine position) pairs, both increasing.
#[derive(Debug)]
pub struct RoomMarks {
    /// The engine position before any noted change.
    start: StreamPos,
    marks: VecDeque<(i64, StreamPos)>,
    /// The highest room position whose mark was dropped.
    dropped_upto: Option<i64>,
}

impl RoomMarks {
    pub fn new(start: StreamPos) -> Self {
        Self {
            start,
            marks: VecDeque::new(),
            dropped_upto: None,
        }
    }

    /// The change at room position `room` was applied; the engine is at
    /// `engine` now.
    pub fn note(&mut self, room: i64, engine: StreamPos) {
        if self.marks.back().is_some_and(|&(r, _)| r >= room) {
            return;
        }
        if self.marks.len() >= KEPT {
            if let Some((r, _)) = self.marks.pop_front() {
                self.dropped_upto = Some(r);
            }
        }
        self.marks.push_back((room, engine));
    }

    /// The engine position up to which a token at room position `room`
    /// has seen the meetings.
    pub fn position_for(&self, room: i64) -> StreamPos {
        if self.dropped_upto.is_some_and(|r| room <= r) {
            return self.start;
        }
        let seen = self.marks.partition_point(|&(r, _)| r <= room);
        match seen {
            0 => self.start,
            n => self.marks[n - 1].1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_position_maps_to_the_last_change_at_or_before_it() {
        let mut marks = RoomMarks::new(100);
        assert_eq!(marks.position_for(5), 100);
        marks.note(10, 120);
        marks.note(12, 130);
        marks.note(12, 131); // a second change of the same event: kept once
        marks.note(20, 150);
        assert_eq!(marks.position_for(9), 100);
        assert_eq!(marks.position_for(10), 120);
        assert_eq!(marks.position_for(15), 130);
        assert_eq!(marks.position_for(20), 150);
        // A token from a node further ahead: everything here is seen.
        assert_eq!(marks.position_for(99), 150);
    }

    #[test]
    fn a_token_older_than_what_is_kept_sees_meetings_again() {
        let mut marks = RoomMarks::new(0);
        for r in 1..=(KEPT as i64 + 5) {
            marks.note(r, r as u64 * 2);
        }
        assert_eq!(marks.position_for(3), 0, "dropped: from the start");
        let last = KEPT as i64 + 5;
        assert_eq!(marks.position_for(last), last as u64 * 2);
    }
}
