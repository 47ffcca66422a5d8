//! Built-in routers that need no code, configured in YAML.

mod groups;
mod observers;
mod server_wide;
mod static_routes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use presenced_engine::{Interest, PresenceState, UsersForStates};
use ruma_common::{OwnedUserId, UserId};

use crate::callbacks::{GetInterestedUsers, GetUsersForStates};
use crate::config::ModuleRegistry;
use crate::module_api::{ModuleApi, RegistrationError};

pub use groups::GROUPS;
pub use observers::OBSERVERS;
pub use server_wide::SERVER_WIDE;
pub use static_routes::STATIC_ROUTES;

pub(crate) fn register_all(registry: &mut ModuleRegistry) {
    registry.register(STATIC_ROUTES, static_routes::construct);
    registry.register(OBSERVERS, observers::construct);
    registry.register(GROUPS, groups::construct);
    registry.register(SERVER_WIDE, server_wide::construct);
}

/// A router defined by two plain functions over a fixed table: who receives
/// a sender's presence, and whom a user may see.
trait Table: Send + Sync + 'static {
    /// Borrowed, so routing a batch allocates nothing per state.
    fn receivers(&self, sender: &UserId) -> &[OwnedUserId];
    fn interest(&self, user: &UserId) -> Interest;
}

/// Registers the pair of callbacks of a table-driven router. Answers are
/// computed synchronously: tables need no I/O.
fn register_table(api: &mut ModuleApi, table: impl Table) -> Result<(), RegistrationError> {
    let table = Arc::new(table);
    let for_states = table.clone();
    let get_users_for_states: GetUsersForStates = Arc::new(move |states: Arc<[PresenceState]>| {
        let mut answer: HashMap<OwnedUserId, HashSet<PresenceState>> = UsersForStates::new();
        for state in states.iter() {
            for receiver in for_states.receivers(&state.user_id) {
                answer
                    .entry(receiver.clone())
                    .or_default()
                    .insert(state.clone());
            }
        }
        futures::future::ready(Ok(answer)).boxed()
    });
    let get_interested_users: GetInterestedUsers = Arc::new(move |user: OwnedUserId| {
        futures::future::ready(Ok(table.interest(&user))).boxed()
    });
    api.register_presence_router_callbacks(Some(get_users_for_states), Some(get_interested_users))
}
