//! The shapes of presence-router answers, as the engine consumes them.
//!
//! They mirror Synapse's module API: `get_users_for_states` answers a map
//! user → set of states, `get_interested_users` answers a set of users or
//! `PRESENCE_ALL_USERS`. The router crate produces these; the engine only
//! reads them (router answers are inputs).

use std::collections::{HashMap, HashSet};

use ruma_common::OwnedUserId;

use crate::PresenceState;

/// Answer of `get_users_for_states`: which extra users (local or remote)
/// should receive which of the states.
pub type UsersForStates = HashMap<OwnedUserId, HashSet<PresenceState>>;

/// Answer of `get_interested_users` for one local user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Interest {
    /// `PRESENCE_ALL_USERS`: every presence update, local and remote.
    All,
    /// These users' presence may be seen in addition to room co-members.
    Users(HashSet<OwnedUserId>),
    /// No extra users (the answer when no module is loaded).
    #[default]
    None,
}

impl Interest {
    /// Whether this interest lets the observer see `target`.
    pub fn includes(&self, target: &ruma_common::UserId) -> bool {
        match self {
            Self::All => true,
            Self::Users(users) => users.contains(target),
            Self::None => false,
        }
    }
}
