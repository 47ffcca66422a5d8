//! `presenced.routers.Groups`: members of a group (local or remote) see
//! each other.
//!
//! ```yaml
//! modules:
//!   - module: presenced.routers.Groups
//!     config:
//!       groups:
//!         ops: ["@alice:example.com", "@bob:example.com", "@carol:partner.org"]
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use presenced_engine::Interest;
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;

use super::{register_table, Table};
use crate::config::{parse_config, ConstructError};
use crate::module_api::ModuleApi;

/// The module name.
pub const GROUPS: &str = "presenced.routers.Groups";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    groups: BTreeMap<String, Vec<OwnedUserId>>,
}

/// Each member's co-members over all their groups.
struct Groups(HashMap<OwnedUserId, HashSet<OwnedUserId>>);

impl Table for Groups {
    fn receivers(&self, sender: &UserId) -> Vec<OwnedUserId> {
        self.0
            .get(sender)
            .map_or_else(Vec::new, |s| s.iter().cloned().collect())
    }

    fn interest(&self, user: &UserId) -> Interest {
        self.0
            .get(user)
            .map_or(Interest::None, |s| Interest::Users(s.clone()))
    }
}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let mut co_members: HashMap<OwnedUserId, HashSet<OwnedUserId>> = HashMap::new();
    for members in config.groups.values() {
        for member in members {
            let others = members.iter().filter(|m| *m != member).cloned();
            co_members.entry(member.clone()).or_default().extend(others);
        }
    }
    Ok(register_table(api, Groups(co_members))?)
}
