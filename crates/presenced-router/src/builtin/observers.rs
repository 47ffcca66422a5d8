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
use crate::ids::{user_ids, ConfigUserId};
use crate::module_api::ModuleApi;

/// The module name.
pub const OBSERVERS: &str = "presenced.routers.Observers";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    observers: Vec<ConfigUserId>,
}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let set: HashSet<OwnedUserId> = user_ids(config.observers).collect();
    // Deduplicated, so a twice-listed observer does not double the work.
    let observers: Arc<[OwnedUserId]> = set.iter().cloned().collect();
    let set = Arc::new(set);
    // On the hot write path (batches of ~1000 states, a handful of
    // observers): the batch's set is hashed once and then cloned per
    // observer; a clone copies the table without rehashing, and ids and
    // status messages are reference-counted (the workspace builds ruma with
    // `Arc` storage), so no string is copied. The last observer takes the
    // set itself.
    let get_users_for_states: GetUsersForStates = Arc::new(move |states: Arc<[PresenceState]>| {
        let mut answer = UsersForStates::with_capacity(observers.len());
        if let Some((last, rest)) = observers.split_last().filter(|_| !states.is_empty()) {
            let batch: HashSet<PresenceState> = states.iter().cloned().collect();
            for observer in rest {
                answer.insert(observer.clone(), batch.clone());
            }
            answer.insert(last.clone(), batch);
        }
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
