//! User activity notices for presence (spec §2.3).
//!
//! Sending an event, typing, sending a receipt and moving read markers are
//! signs that a person is at their device. The handlers of those endpoints
//! emit an [`ActivityEvent`] through `Homeserver::emit_activity` once the request has
//! succeeded; the presence engine driver turns it into a user-activity input.

use ruma_common::{OwnedDeviceId, OwnedUserId};

/// A user did something on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityEvent {
    /// Who acted.
    pub user: OwnedUserId,
    /// With which device (from the access token).
    pub device: OwnedDeviceId,
}
