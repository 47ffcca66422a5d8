//! Presence values and the user-level presence record.

use std::fmt;
use std::sync::Arc;

use ruma_common::OwnedUserId;

use crate::Timestamp;

/// A presence value. Closed on purpose: every value from clients, modules
/// and federation is validated into one of these at the edge (Synapse's W8/W9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presence {
    /// Not connected (the default for everyone never seen).
    #[default]
    Offline,
    /// Connected but idle ("away").
    Unavailable,
    /// Connected and active.
    Online,
    /// Do not disturb (MSC3026), `org.matrix.msc3026.busy` on the wire.
    Busy,
}

impl Presence {
    /// The wire name of the busy state (unstable MSC3026 prefix, as the
    /// ecosystem sends it).
    pub const BUSY_WIRE: &'static str = "org.matrix.msc3026.busy";

    /// The string sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Unavailable => "unavailable",
            Self::Online => "online",
            Self::Busy => Self::BUSY_WIRE,
        }
    }

    /// Parses a wire value; `busy` is accepted as an alias of the MSC3026 name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "offline" => Self::Offline,
            "unavailable" => Self::Unavailable,
            "online" => Self::Online,
            Self::BUSY_WIRE | "busy" => Self::Busy,
            _ => return None,
        })
    }

    /// Rank used to combine device states: busy > online > unavailable > offline.
    /// The derived `Ord` follows the declaration order, which is this rank.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything known about one user's presence (Synapse's `UserPresenceState`).
///
/// Compared and hashed over every field, because router modules receive and
/// return sets of these. Cloning is cheap-ish: the status message is shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PresenceState {
    /// Whose presence this is.
    pub user_id: OwnedUserId,
    /// The combined presence value.
    pub presence: Presence,
    /// Last time the user did something that counts as activity.
    pub last_active_ts: Timestamp,
    /// Local user: last time this state was sent (or counted as sent) to other
    /// servers. Remote user: last time we heard about them over federation.
    pub last_federation_update_ts: Timestamp,
    /// Local user: last time a presence-affecting sync started or ended.
    pub last_user_sync_ts: Timestamp,
    /// Free-text status; `None` when unset (an empty string is stored as `None`).
    pub status_msg: Option<Arc<str>>,
    /// Local online user: active within the last-active granularity.
    /// Remote user: whatever their server said.
    pub currently_active: bool,
}

impl PresenceState {
    /// The default state: offline, every timestamp zero, no message.
    pub fn new(user_id: OwnedUserId) -> Self {
        Self {
            user_id,
            presence: Presence::Offline,
            last_active_ts: Timestamp::ZERO,
            last_federation_update_ts: Timestamp::ZERO,
            last_user_sync_ts: Timestamp::ZERO,
            status_msg: None,
            currently_active: false,
        }
    }

    /// Milliseconds since the last activity, as clients and federation see
    /// it, or `None` when the user was never active (the field is omitted then).
    pub fn last_active_ago(&self, now: Timestamp) -> Option<u64> {
        (self.last_active_ts != Timestamp::ZERO)
            .then(|| now.0.saturating_sub(self.last_active_ts.0))
    }

    /// `currently_active` is only shown for online users.
    pub fn shown_currently_active(&self) -> Option<bool> {
        (self.presence == Presence::Online).then_some(self.currently_active)
    }
}

/// Normalises a status message: empty strings are treated as no message.
pub fn status_msg(s: Option<&str>) -> Option<Arc<str>> {
    s.filter(|s| !s.is_empty()).map(Arc::from)
}
