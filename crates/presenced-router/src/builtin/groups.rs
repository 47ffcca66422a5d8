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
use crate::ids::{user_ids, ConfigUserId};
use crate::module_api::ModuleApi;

/// The module name.
pub const GROUPS: &str = "presenced.routers.Groups";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    groups: BTreeMap<String, Vec<ConfigUserId>>,
}

/// Each member's co-members over all their groups, as a list (for routing
/// states) and as a set (for interest answers).
struct Groups {
    receivers: HashMap<OwnedUserId, Vec<OwnedUserId>>,
    co_members: HashMap<OwnedUserId, HashSet<OwnedUserId>>,
}

impl Table for Groups {
    fn receivers(&self, sender: &UserId) -> &[OwnedUserId] {
        self.receivers.get(sender).map_or(&[], Vec::as_slice)
    }

    fn interest(&self, user: &UserId) -> Interest {
        self.co_members
            .get(user)
            .filter(|s| !s.is_empty())
            .map_or(Interest::None, |s| Interest::Users(s.clone()))
    }
}

pub(crate) fn construct(
    config: serde_json::Value,
    api: &mut ModuleApi,
) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let mut co_members: HashMap<OwnedUserId, HashSet<OwnedUserId>> = HashMap::new();
    for members in config.groups.into_values() {
        let members: Vec<OwnedUserId> = user_ids(members).collect();
        for member in &members {
            let others = members.iter().filter(|m| *m != member).cloned();
            co_members.entry(member.clone()).or_default().extend(others);
        }
    }
    let receivers = co_members
        .iter()
        .map(|(member, others)| (member.clone(), others.iter().cloned().collect()))
        .collect();
    Ok(register_table(
        api,
        Groups {
            receivers,
            co_members,
        },
    )?)
}
