//! Engine configuration: plain values, no file formats.

use std::collections::HashSet;
use std::time::Duration;

use ruma_common::OwnedRoomId;

/// How presence is tracked (`presence.enabled` in the config file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tracking {
    /// Clients, federation and timers drive presence (the default).
    #[default]
    Enabled,
    /// Presence exists and is served, but only the module API changes it:
    /// no timers, client and federation input ignored, nothing federated.
    Untracked,
    /// No presence at all: every input is ignored.
    Disabled,
}

/// Everything the engine needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Tracking mode.
    pub tracking: Tracking,
    /// Window for `currently_active`, and the minimum activity jump worth
    /// notifying (Synapse default 60 s).
    pub last_active_granularity: Duration,
    /// A device that neither syncs nor acts for this long is dropped (30 s).
    pub sync_online_timeout: Duration,
    /// An online device with no activity for this long becomes unavailable (5 min).
    pub idle_timeout: Duration,
    /// Replaces the sync timeout for busy devices (1 h).
    pub busy_timeout: Duration,
    /// Local non-offline users are re-sent to interested servers this often (25 min).
    pub federation_ping_interval: Duration,
    /// Remote users not heard of for this long are forced offline (30 min).
    pub federation_timeout: Duration,
    /// Offline users inactive for longer than this (and with no status
    /// message) are not pushed to servers joining a room (7 days).
    pub join_staleness: Duration,
    /// Rooms that never, on their own, make users see each other.
    pub exclude_rooms_from_presence: HashSet<OwnedRoomId>,
    /// Rooms with more joined members than this never, on their own, make
    /// users see each other. `None`: no limit.
    pub max_room_size: Option<usize>,
    /// Whether router modules are loaded: when true, every batch of updates
    /// is handed out as [`crate::Output::Route`] and waits for its answer.
    pub routing: bool,
    /// Remote users without a room here kept per remote server; past it,
    /// that server's offline users are forgotten first, then its least
    /// recently updated (W9/W10).
    pub max_remote_users_per_server: usize,
    /// How many stream positions the change log remembers; older sync tokens
    /// take the slower (but correct) path.
    pub change_log_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            tracking: Tracking::Enabled,
            last_active_granularity: Duration::from_secs(60),
            sync_online_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            busy_timeout: Duration::from_secs(3600),
            federation_ping_interval: Duration::from_secs(25 * 60),
            federation_timeout: Duration::from_secs(30 * 60),
            join_staleness: Duration::from_secs(7 * 24 * 3600),
            exclude_rooms_from_presence: HashSet::new(),
            max_room_size: None,
            routing: false,
            max_remote_users_per_server: 10_000,
            change_log_capacity: 1 << 17,
        }
    }
}
