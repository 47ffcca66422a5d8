//! Counters the server turns into metrics; pulled, never pushed.

use crate::stream::StreamPos;

/// A snapshot of the engine's size and activity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Users with a slot (local and remote).
    pub users_tracked: usize,
    /// Local users among them.
    pub local_users: usize,
    /// Users whose presence is not offline.
    pub users_not_offline: usize,
    /// Rooms in the membership index.
    pub rooms: usize,
    /// Users filed in the timer queue.
    pub timers: usize,
    /// Current presence stream position.
    pub stream_position: StreamPos,
    /// Notifiable changes written to the stream since start.
    pub notified_changes: u64,
    /// Waiting syncs woken since start.
    pub wakes: u64,
    /// Per-destination sends emitted since start (states counted).
    pub federation_states_sent: u64,
    /// Remote presence entries accepted since start.
    pub remote_accepted: u64,
    /// Remote presence entries dropped (wrong origin, local user) since start.
    pub remote_dropped: u64,
    /// Remote users forgotten to keep a server within its cap, since start.
    pub remote_evicted: u64,
    /// Batches waiting for a router answer.
    pub batches_in_flight: usize,
    /// Cluster mode: states applied from other nodes' partitions since start.
    pub replicated_changes: u64,
    /// Cluster mode: client inputs for a user another node owns, ignored
    /// (the driver routes them to the owner; a count above 0 is a driver bug).
    pub replicated_inputs_ignored: u64,
}
