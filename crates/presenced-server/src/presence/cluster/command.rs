//! What a node asks a partition owner to do for one user, as it travels
//! in the cluster's command stream.
//!
//! Typed end to end: a node builds a command from values the edge already
//! checked, and the owner reads it back into the same types. A command
//! this version cannot read whole (a newer node's presence value, say) is
//! refused as a whole and logged (`driver.rs`), never half-applied. The
//! JSON shape is the one earlier versions wrote (`op` tag, presence as its
//! wire name), so nodes of both versions read each other's commands.

use presenced_engine::Presence;
use ruma_common::{OwnedDeviceId, OwnedServerName};
use serde::{Deserialize, Serialize};

/// One user's engine input, named as the engine names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClusterCommand {
    /// `PUT /presence/{userId}/status`.
    Set {
        device: Option<OwnedDeviceId>,
        #[serde(with = "wire_presence")]
        presence: Presence,
        status_msg: Option<String>,
    },
    /// A request that counts as activity.
    Activity { device: Option<OwnedDeviceId> },
    /// A device's first long-poll on the sending node; `presence` is its
    /// `set_presence` (`None`: rate-limited, counts as syncing only).
    SyncStart {
        device: Option<OwnedDeviceId>,
        #[serde(with = "wire_presence_opt")]
        presence: Option<Presence>,
    },
    /// A later long-poll of a syncing device asked for another presence.
    SyncPresence {
        device: Option<OwnedDeviceId>,
        #[serde(with = "wire_presence")]
        presence: Presence,
    },
    /// The device's last long-poll on the sending node ended (after the
    /// relay's grace).
    SyncEnd { device: Option<OwnedDeviceId> },
    /// Presence of a remote user from their server (inbound federation,
    /// received by any node).
    Remote {
        origin: OwnedServerName,
        #[serde(with = "wire_presence")]
        presence: Presence,
        last_active_ago: Option<u64>,
        currently_active: Option<bool>,
        status_msg: Option<String>,
    },
    /// The account was deactivated: offline, without a message, for good.
    Deactivate,
    /// The module API's `set_presence_for_users`.
    ModuleSet {
        #[serde(with = "wire_presence")]
        presence: Presence,
        status_msg: Option<String>,
    },
    /// States for `destination` were queued in the shared outbox; sent to
    /// the owner of the destination's shard (its key is not a user), which
    /// wakes its sender. Writes nothing to the log.
    FederationQueued { destination: OwnedServerName },
}

/// A presence value as its wire name; an unknown name fails the command.
mod wire_presence {
    use presenced_engine::Presence;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(presence: &Presence, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(presence.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Presence, D::Error> {
        let name = String::deserialize(d)?;
        Presence::parse(&name).ok_or_else(|| D::Error::custom(format!("unknown presence {name:?}")))
    }
}

/// [`wire_presence`] for an optional value (`null` when absent).
mod wire_presence_opt {
    use presenced_engine::Presence;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        presence: &Option<Presence>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match presence {
            Some(p) => s.serialize_some(p.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Presence>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| {
                Presence::parse(&name)
                    .ok_or_else(|| D::Error::custom(format!("unknown presence {name:?}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_keep_the_wire_shape_of_earlier_versions() {
        let set = ClusterCommand::Set {
            device: Some("DEV".into()),
            presence: Presence::Busy,
            status_msg: Some("hi".to_owned()),
        };
        let written = json!({"op": "set", "device": "DEV",
            "presence": "org.matrix.msc3026.busy", "status_msg": "hi"});
        assert_eq!(serde_json::to_value(&set).unwrap(), written);
        assert_eq!(
            serde_json::from_value::<ClusterCommand>(written).unwrap(),
            set
        );
        let start = json!({"op": "sync_start", "device": null, "presence": null});
        assert_eq!(
            serde_json::from_value::<ClusterCommand>(start).unwrap(),
            ClusterCommand::SyncStart {
                device: None,
                presence: None
            }
        );
    }

    #[test]
    fn an_unknown_presence_or_origin_fails_the_whole_command() {
        for bad in [
            json!({"op": "set", "device": null, "presence": "dancing", "status_msg": null}),
            json!({"op": "sync_start", "device": null, "presence": "dancing"}),
            json!({"op": "remote", "origin": "not a server name!", "presence": "online",
                "last_active_ago": null, "currently_active": null, "status_msg": null}),
        ] {
            assert!(
                serde_json::from_value::<ClusterCommand>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
