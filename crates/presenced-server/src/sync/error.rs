//! [`SyncError`]: how a sync fails, in the service's terms.
//!
//! A sync is refused before it reaches the service (a bad token or filter
//! is the handler's to report), so what is left is reading the rooms
//! section; `api/error.rs` maps it to a Matrix error as it maps every
//! homeserver failure.

use crate::homeserver::Error as HomeserverError;

/// A sync that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading whether the user's rooms moved, or their section, failed.
    #[error(transparent)]
    Rooms(#[from] HomeserverError),
}
