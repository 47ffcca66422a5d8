//! Room membership values and the change notice the room code emits.
//!
//! Every committed membership change (invite, join, leave) is sent as a
//! [`MembershipChange`] through `Homeserver::emit_membership`, after the database
//! write, so whoever consumes it (the presence engine driver) never sees a
//! change that was not stored.

use std::fmt;
use std::str::FromStr;

use ruma_common::{OwnedRoomId, OwnedUserId};

/// A user's membership of a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Membership {
    /// Invited, not yet joined.
    Invite,
    /// Joined.
    Join,
    /// Left, was kicked, or rejected an invite.
    Leave,
}

impl Membership {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Membership {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "invite" => Ok(Self::Invite),
            "join" => Ok(Self::Join),
            "leave" => Ok(Self::Leave),
            other => Err(format!("unsupported membership {other:?}")),
        }
    }
}

/// One stored membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Whose membership changed.
    pub user_id: OwnedUserId,
    /// Who made the change (the inviter, for an invite).
    pub sender: OwnedUserId,
    /// The new membership.
    pub membership: Membership,
    /// Stream position of the membership event.
    pub stream: i64,
}
