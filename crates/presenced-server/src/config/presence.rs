//! The `presence:`, `rc_presence:` and `modules:` sections (spec §15).

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::duration;

/// `presence:` — Synapse's presence options, same names and defaults.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PresenceConfig {
    /// `true`, `false` or `"untracked"`; `None` when the key is absent, so the
    /// legacy top-level `use_presence` can still decide (Synapse's rule).
    pub enabled: Option<PresenceEnabled>,
    /// Include offline users on initial and full-state syncs.
    pub include_offline_users_on_sync: bool,
    /// Window for `currently_active`; must be greater than zero.
    #[serde(with = "duration")]
    pub last_active_granularity: Duration,
    /// A device that stops syncing goes offline after this long.
    #[serde(with = "duration")]
    pub sync_online_timeout: Duration,
    /// An online user with no activity for this long becomes unavailable.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Rooms with more joined members than this do not make members see
    /// each other (presenced addition; absent = no limit).
    pub max_room_size: Option<usize>,
    /// Legacy single presence router, loaded after `modules:`.
    pub presence_router: Option<ModuleConfig>,
    /// Presence over federation, per direction (presenced addition).
    pub federation: FederationPresence,
    /// Remote users whose presence is kept in memory per remote server; past
    /// it, that server's offline users are forgotten first, then its least
    /// recently updated ones (presenced addition, W9/W10).
    pub max_remote_users_per_server: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            include_offline_users_on_sync: false,
            last_active_granularity: Duration::from_secs(60),
            sync_online_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_room_size: None,
            presence_router: None,
            federation: FederationPresence::default(),
            max_remote_users_per_server: 10_000,
        }
    }
}

/// `presence.federation:` — which way presence crosses federation.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct FederationPresence {
    /// Send local users' presence to other servers.
    pub send: bool,
    /// Accept `m.presence` EDUs from other servers (false: they are
    /// acknowledged and ignored).
    pub receive: bool,
}

impl Default for FederationPresence {
    fn default() -> Self {
        Self {
            send: true,
            receive: true,
        }
    }
}

impl PresenceConfig {
    /// Checks the relations Synapse enforces between the timers.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.last_active_granularity.is_zero() {
            return Err("presence.last_active_granularity must be greater than 0".to_owned());
        }
        if self.sync_online_timeout.is_zero() {
            return Err("presence.sync_online_timeout must be greater than 0".to_owned());
        }
        if self.max_remote_users_per_server == 0 {
            return Err("presence.max_remote_users_per_server must be greater than 0".to_owned());
        }
        if self.idle_timeout <= self.last_active_granularity {
            return Err(
                "presence.idle_timeout must be greater than presence.last_active_granularity"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The three presence modes of `presence.enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceEnabled {
    /// Presence is tracked from clients and served (`true`, the default).
    Enabled,
    /// No presence at all (`false`).
    Disabled,
    /// Presence is served but only the module API changes it (`"untracked"`).
    Untracked,
}

impl<'de> Deserialize<'de> for PresenceEnabled {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        // Untagged enums lose the location of the error; that is fine here
        // because serde_yaml still reports the line of the `enabled` key.
        match Raw::deserialize(deserializer)? {
            Raw::Bool(true) => Ok(Self::Enabled),
            Raw::Bool(false) => Ok(Self::Disabled),
            Raw::Text(t) if t == "untracked" => Ok(Self::Untracked),
            Raw::Text(t) => Err(de::Error::custom(format!(
                "invalid presence.enabled {t:?}: expected true, false or \"untracked\""
            ))),
        }
    }
}

impl Serialize for PresenceEnabled {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Enabled => serializer.serialize_bool(true),
            Self::Disabled => serializer.serialize_bool(false),
            Self::Untracked => serializer.serialize_str("untracked"),
        }
    }
}

/// A module entry: `{module: name, config: {...}}`, as in Synapse.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ModuleConfig {
    /// The module's name (a presenced built-in, e.g. a Python dotted path
    /// copied from a Synapse config).
    pub module: String,
    /// Module-specific settings, handed to the router crate as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Deadline of each callback call in milliseconds (presenced addition;
    /// absent = what the module asks for, else the router's default). A
    /// module that misses it counts as having no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

impl ModuleConfig {
    /// An entry with an empty config and the default deadline.
    pub fn new(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            config: empty_object(),
            deadline_ms: None,
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// `rc_presence:` — rate limit for presence updates.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RcPresence {
    /// Per-user leaky bucket.
    pub per_user: RateLimit,
}

/// A leaky bucket: `per_second` actions per second, `burst_count` at once.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RateLimit {
    /// Sustained rate (Synapse default 0.1/s).
    pub per_second: f64,
    /// Burst size; Synapse truncates it to an integer.
    pub burst_count: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 0.1,
            burst_count: 1.0,
        }
    }
}
