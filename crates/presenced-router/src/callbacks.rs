//! The two presence router callbacks, as a module registers them.

use std::sync::Arc;

use futures::future::BoxFuture;
use presenced_engine::{Interest, PresenceState, UsersForStates};
use ruma_common::OwnedUserId;

/// Why a module's callback failed. Logged with the module's name; the
/// module's answer then counts as empty.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ModuleError(pub String);

impl ModuleError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// `get_users_for_states`: for these updates, which extra users (local or
/// remote) should receive which of them.
pub type GetUsersForStates = Arc<
    dyn Fn(Arc<[PresenceState]>) -> BoxFuture<'static, Result<UsersForStates, ModuleError>>
        + Send
        + Sync,
>;

/// `get_interested_users`: whose presence may this local user additionally
/// see (`Interest::All` is `PRESENCE_ALL_USERS`).
pub type GetInterestedUsers =
    Arc<dyn Fn(OwnedUserId) -> BoxFuture<'static, Result<Interest, ModuleError>> + Send + Sync>;

/// Synapse's `PRESENCE_ALL_USERS` marker, for module authors who think in
/// its terms; it is [`Interest::All`].
pub const PRESENCE_ALL_USERS: Interest = Interest::All;

/// The wire form of `PRESENCE_ALL_USERS` in Synapse: the plain string
/// `"ALL"`. A host running Python modules maps an answer equal to it to
/// [`Interest::All`].
pub const PRESENCE_ALL_USERS_STR: &str = "ALL";

/// Both callbacks of one registration.
#[derive(Clone)]
pub(crate) struct Callbacks {
    pub(crate) get_users_for_states: GetUsersForStates,
    pub(crate) get_interested_users: GetInterestedUsers,
}
