//! What the engine asks its driver to do.

use ruma_common::{OwnedServerName, OwnedUserId};

use crate::stream::StreamPos;
use crate::PresenceState;

/// Identifies a batch of updates waiting for the router's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub(crate) u64);

/// An action the driver must carry out, from [`crate::Engine::poll_output`].
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Store these notifiable changes at their stream positions. Emitted
    /// before anyone is told about them.
    Persist(Vec<(StreamPos, PresenceState)>),
    /// Ask the presence router's `get_users_for_states` about these states
    /// and hand the answer to [`crate::Engine::handle_route_answer`].
    /// Only emitted when [`crate::EngineConfig::routing`] is on.
    Route {
        /// Pass back with the answer.
        batch: BatchId,
        /// The states the router is asked about.
        states: Vec<PresenceState>,
    },
    /// Wake the waiting syncs of these users (each was registered with
    /// [`crate::Engine::wait_for_presence`] and is now unregistered).
    Wake(Vec<OwnedUserId>),
    /// Send these local users' states to a remote server as `m.presence`.
    Send {
        /// The remote server.
        destination: OwnedServerName,
        /// Current states of local users, latest wins.
        states: Vec<PresenceState>,
    },
    /// Store full-presence marks: each of these local users gets one
    /// snapshot at their next sync whose token is at or before `at`. Give
    /// them back with [`crate::Engine::restore_full_presence`] after a
    /// restart, so the resend is not lost.
    PersistFullPresence {
        /// The users marked.
        users: Vec<OwnedUserId>,
        /// Tokens at or before this position get the snapshot.
        at: StreamPos,
    },
    /// Delete the stored presence of these remote users, forgotten to keep
    /// their server within [`crate::EngineConfig::max_remote_users_per_server`],
    /// where it was stored at or before the position given (0: never
    /// notified). A later state of the same user, stored at a later
    /// position, must survive, whatever order the two reach storage in.
    Forget(Vec<(OwnedUserId, StreamPos)>),
}
