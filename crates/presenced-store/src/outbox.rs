//! The federation presence outbox: per destination, the latest state of
//! each local user that the destination has not acknowledged yet (spec
//! W19: kept until acknowledged, latest wins, survives restarts).
//!
//! The store only keeps rows; the sender (`federation::sender`) decides
//! when to read and delete them.

use presenced_engine::PresenceState;
use ruma_common::{OwnedServerName, OwnedUserId, ServerName};

use super::StoreResult;

/// A queued state and the version it was queued at.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Bumped every time the entry is replaced; a sent entry is removed
    /// only while its `seq` is unchanged.
    pub seq: i64,
    /// The state to send (`user_id`, presence, activity, message).
    pub state: PresenceState,
}

/// Storage of outgoing federation presence.
pub trait OutboxStore {
    /// Queues states for destinations in one transaction. A state replaces
    /// the queued state of the same (destination, user) but keeps its place
    /// in that destination's queue.
    fn queue_presence(&self, items: &[(OwnedServerName, PresenceState)]) -> StoreResult<()>;
    /// Up to `limit` queued entries for `destination`, oldest first.
    fn pending_presence(
        &self,
        destination: &ServerName,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEntry>>;
    /// Removes entries the destination acknowledged, each only if it was
    /// not replaced since it was read (same `seq`). Returns how many went.
    fn remove_sent_presence(
        &self,
        destination: &ServerName,
        sent: &[(OwnedUserId, i64)],
    ) -> StoreResult<usize>;
    /// Every destination with something queued (to resume after a restart).
    fn outbox_destinations(&self) -> StoreResult<Vec<OwnedServerName>>;
    /// How many entries are queued for all destinations.
    fn outbox_len(&self) -> StoreResult<u64>;
}
