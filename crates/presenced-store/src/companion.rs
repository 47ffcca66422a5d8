//! Companion mode's membership view: who is in which of Synapse's rooms,
//! as the application-service transactions and the admin-API bootstrap
//! tell it (tables `companion_as_txns` and `companion_memberships`,
//! migration 0004).
//!
//! The ordering rule. The same membership can reach presenced twice and
//! out of order: the first application service Synapse knows gets the
//! server's whole history replayed, while the bootstrap has already read
//! the current state. So each (room, user) keeps the newest event seen,
//! and a change is kept only if its `(origin_server_ts, event_id)` is
//! above the stored pair; at equal times the event ID decides, only so
//! that every node and every replay picks the same winner. The limit:
//! `origin_server_ts` is the sending server's clock, so a remote server
//! whose clock is behind can make a newer event look older (it is then
//! ignored until a later event or the next bootstrap corrects it). Room
//! DAG order would be exact, but Synapse's public APIs do not give it.
//!
//! The store only keeps rows and applies that comparison; what a change
//! means for presence is the server's business.

use std::fmt;
use std::str::FromStr;

use presenced_engine::Timestamp;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId};

use crate::StoreResult;

/// A membership as the room event spells it (all five of the spec's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomMembership {
    /// Invited, not yet joined.
    Invite,
    /// Joined.
    Join,
    /// Left, was kicked, or rejected an invite.
    Leave,
    /// Banned.
    Ban,
    /// Asked to join.
    Knock,
}

impl RoomMembership {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Ban => "ban",
            Self::Knock => "knock",
        }
    }
}

impl fmt::Display for RoomMembership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoomMembership {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "invite" => Ok(Self::Invite),
            "join" => Ok(Self::Join),
            "leave" => Ok(Self::Leave),
            "ban" => Ok(Self::Ban),
            "knock" => Ok(Self::Knock),
            other => Err(format!("unknown membership {other:?}")),
        }
    }
}

/// How many applied transaction ids are kept. Synapse numbers its
/// transactions to a service in order and re-sends only the oldest one
/// not acknowledged, so an id far behind the newest never comes back;
/// older ids are deleted as new ones arrive.
pub const KEPT_TRANSACTION_IDS: i64 = 10_000;

/// Stored changes kept for cluster nodes to follow
/// ([`CompanionStore::companion_changes_after`]); older ones are deleted as
/// new ones arrive. A node follows a few times a second, so it is never
/// this far behind; one that starts reads the view itself and follows on
/// from the newest change.
pub const KEPT_CHANGES: i64 = 100_000;

/// One `m.room.member` event, reduced to what the view keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipEvent {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Whose membership (the event's `state_key`).
    pub user_id: OwnedUserId,
    /// Who sent it (the inviter, for an invite).
    pub sender: OwnedUserId,
    /// The new membership.
    pub membership: RoomMembership,
    /// The sending server's time: the ordering key.
    pub origin_server_ts: Timestamp,
    /// The tie-breaker at equal times.
    pub event_id: OwnedEventId,
}

/// An event that won the ordering rule and was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedMembership {
    /// The event.
    pub event: MembershipEvent,
    /// The membership it replaced (`None`: the first one seen).
    pub previous: Option<RoomMembership>,
}

/// Storage of companion mode's membership view.
pub trait CompanionStore {
    /// Applies a transaction's membership events in order, and records
    /// `txn_id`, in one database transaction. A `txn_id` recorded before
    /// (among the last [`KEPT_TRANSACTION_IDS`]) applies nothing and
    /// returns no changes. Returns the events the
    /// ordering rule kept, in input order.
    fn apply_membership_transaction(
        &self,
        txn_id: &str,
        events: &[MembershipEvent],
    ) -> StoreResult<Vec<AppliedMembership>>;
    /// Applies events read outside any transaction (the bootstrap), with
    /// the same rule, in one database transaction.
    fn upsert_memberships(&self, events: &[MembershipEvent])
        -> StoreResult<Vec<AppliedMembership>>;
    /// Every (room, user) whose stored membership is `join` (at start-up,
    /// to seed presence), in room then user order.
    fn companion_joined(&self) -> StoreResult<Vec<(OwnedRoomId, OwnedUserId)>>;
    /// Whether any membership is stored (none: the bootstrap has never
    /// run).
    fn companion_has_memberships(&self) -> StoreResult<bool>;
    /// The changes both writes above kept, as numbered when stored (in
    /// storage order, on any node), after number `after`, at most
    /// `limit`, in order: how every node of a cluster hears the changes
    /// one node received.
    fn companion_changes_after(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AppliedMembership)>>;
    /// The number of the newest stored change (0: none), read before the
    /// view at start-up, so following starts where the view was read.
    fn companion_change_position(&self) -> StoreResult<i64>;
}

/// A row of `companion_membership_changes` as both backends read it.
pub(crate) struct RawChange {
    pub seq: i64,
    pub room_id: String,
    pub user_id: String,
    pub sender: String,
    pub membership: String,
    pub previous: Option<String>,
    pub origin_server_ts: i64,
    pub event_id: String,
}

impl RawChange {
    /// The typed change (`None`, logged: a row that does not parse, which
    /// only a hand-edited database holds).
    pub(crate) fn parse(self) -> Option<(i64, AppliedMembership)> {
        use crate::sqlite::parse_or_skip;
        let previous = match &self.previous {
            Some(raw) => Some(parse_or_skip("previous", raw)?),
            None => None,
        };
        let event = MembershipEvent {
            room_id: parse_or_skip("room_id", &self.room_id)?,
            user_id: parse_or_skip("user_id", &self.user_id)?,
            sender: parse_or_skip("sender", &self.sender)?,
            membership: parse_or_skip("membership", &self.membership)?,
            origin_server_ts: crate::sql_time::from_column(self.origin_server_ts),
            event_id: parse_or_skip("event_id", &self.event_id)?,
        };
        Some((self.seq, AppliedMembership { event, previous }))
    }
}

/// The ordering rule: whether `candidate` replaces the stored
/// `(origin_server_ts, event_id)`.
pub fn is_newer(candidate: (Timestamp, &str), stored: (Timestamp, &str)) -> bool {
    candidate > stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_times_win_and_event_ids_break_ties() {
        assert!(is_newer((Timestamp(2), "$a"), (Timestamp(1), "$z")));
        assert!(!is_newer((Timestamp(1), "$z"), (Timestamp(2), "$a")));
        assert!(is_newer((Timestamp(1), "$b"), (Timestamp(1), "$a")));
        assert!(
            !is_newer((Timestamp(1), "$a"), (Timestamp(1), "$a")),
            "the same event"
        );
    }

    #[test]
    fn memberships_round_trip() {
        for m in ["invite", "join", "leave", "ban", "knock"] {
            assert_eq!(m.parse::<RoomMembership>().unwrap().as_str(), m);
        }
        assert!("joined".parse::<RoomMembership>().is_err());
    }
}
