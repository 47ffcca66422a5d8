//! `presenced.routers.Observers`: users who receive every presence update
//! and see everyone (`PRESENCE_ALL_USERS`).
//!
//! ```yaml
//! modules:
//!   - module: presenced.routers.Observers
//!     config:
//!       observers: ["@monitor:example.com"]
//! ```

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
pub const OBSERVERS: &str = "presenced.routers.Observers";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    observers: Vec<OwnedUserId>,
}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let observers: Arc<[OwnedUserId]> = config.observers.into();
    let set: Arc<HashSet<OwnedUserId>> = Arc::new(observers.iter().cloned().collect());
    // On the hot write path: the batch's set is built once and cloned per
    // observer (ids are reference-counted, so clones do not allocate strings).
    let get_users_for_states: GetUsersForStates = Arc::new(move |states: Arc<[PresenceState]>| {
        let batch: HashSet<PresenceState> = states.iter().cloned().collect();
        let answer: UsersForStates = observers
            .iter()
            .map(|o| (o.clone(), batch.clone()))
            .collect();
        futures::future::ready(Ok(answer)).boxed()
    });
    let get_interested_users: GetInterestedUsers = Arc::new(move |user: OwnedUserId| {
        let interest = if set.contains(&user) {
            Interest::All
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
