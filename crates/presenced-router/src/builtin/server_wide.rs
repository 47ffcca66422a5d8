//! `presenced.routers.ServerWide`: every local user sees every other local
//! user (organisation-wide presence without a giant room).
//!
//! ```yaml
//! modules:
//!   - module: presenced.routers.ServerWide
//! ```
//!
//! Why a directory: the interest of a local user must be "all local users",
//! which `Interest::All` would overshoot (it includes remote users) and a
//! module cannot list on its own. So the server hands a [`LocalUsers`]
//! directory to the [`ModuleApi`]; this router reads it on every call (new
//! registrations count at once) and refuses to load without one. States of
//! remote users are not routed; a user's own state is not routed back to
//! them. Cost grows with the number of local users per batch, so it suits
//! organisations rather than large public servers.
//!
//! [`LocalUsers`]: crate::LocalUsers

use std::collections::HashSet;
use std::sync::Arc;

use futures::FutureExt;
use presenced_engine::{Interest, PresenceState, UsersForStates};
use ruma_common::OwnedUserId;
use serde::Deserialize;

use crate::callbacks::{GetInterestedUsers, GetUsersForStates};
use crate::config::{parse_config, ConstructError};
use crate::module_api::ModuleApi;

/// The module name.
pub const SERVER_WIDE: &str = "presenced.routers.ServerWide";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let _: Config = parse_config(config)?;
    let Some(directory) = api.local_users() else {
        return Err(ConstructError::Config(
            "this server provides no local user directory to ServerWide".to_owned(),
        ));
    };
    let server = api.server_name().clone();
    let for_states = directory.clone();
    let server_for_states = server.clone();
    let get_users_for_states: GetUsersForStates = Arc::new(move |states: Arc<[PresenceState]>| {
        let mut answer = UsersForStates::new();
        let local: Vec<&PresenceState> = states
            .iter()
            .filter(|s| s.user_id.server_name() == server_for_states)
            .collect();
        if !local.is_empty() {
            // The directory is read per call, so users registered since
            // start-up are included.
            for user in for_states.local_users() {
                // A user's own state is not routed back to them (they see it
                // anyway), and nobody gets an empty entry.
                let others: HashSet<PresenceState> = local
                    .iter()
                    .filter(|s| s.user_id != user)
                    .map(|s| (*s).clone())
                    .collect();
                if !others.is_empty() {
                    answer.insert(user, others);
                }
            }
        }
        futures::future::ready(Ok(answer)).boxed()
    });
    let get_interested_users: GetInterestedUsers = Arc::new(move |user: OwnedUserId| {
        let interest = if user.server_name() == server {
            Interest::Users(
                directory
                    .local_users()
                    .into_iter()
                    .filter(|u| *u != user)
                    .collect(),
            )
        } else {
            Interest::None
        };
        futures::future::ready(Ok(interest)).boxed()
    });
    Ok(api.register_presence_router_callbacks(
        Some(get_users_for_states),
        Some(get_interested_users),
    )?)
}
