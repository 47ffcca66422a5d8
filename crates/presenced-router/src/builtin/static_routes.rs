//! `presenced.routers.StaticRoutes`: fixed routes from senders to receivers.
//!
//! ```yaml
//! modules:
//!   - module: presenced.routers.StaticRoutes
//!     config:
//!       routes:
//!         - receiver: "@alice:example.com"
//!           senders: ["@bob:example.com", "@charlie:somewhere.org"]
//! ```
//! Each receiver gets its senders' presence and may see it.

use std::collections::{HashMap, HashSet};

use presenced_engine::Interest;
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;

use super::{register_table, Table};
use crate::config::{parse_config, ConstructError};
use crate::ids::{user_ids, ConfigUserId};
use crate::module_api::ModuleApi;

/// The module name.
pub const STATIC_ROUTES: &str = "presenced.routers.StaticRoutes";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    receiver: ConfigUserId,
    senders: Vec<ConfigUserId>,
}

struct StaticRoutes {
    receivers_of: HashMap<OwnedUserId, Vec<OwnedUserId>>,
    senders_of: HashMap<OwnedUserId, HashSet<OwnedUserId>>,
}

impl Table for StaticRoutes {
    fn receivers(&self, sender: &UserId) -> &[OwnedUserId] {
        self.receivers_of.get(sender).map_or(&[], Vec::as_slice)
    }

    fn interest(&self, user: &UserId) -> Interest {
        self.senders_of
            .get(user)
            .map_or(Interest::None, |s| Interest::Users(s.clone()))
    }
}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let mut table = StaticRoutes {
        receivers_of: HashMap::new(),
        senders_of: HashMap::new(),
    };
    for route in config.routes {
        let receiver = route.receiver.into_inner();
        for sender in user_ids(route.senders) {
            let receivers = table.receivers_of.entry(sender.clone()).or_default();
            if !receivers.contains(&receiver) {
                receivers.push(receiver.clone());
            }
            table
                .senders_of
                .entry(receiver.clone())
                .or_default()
                .insert(sender);
        }
    }
    Ok(register_table(api, table)?)
}
