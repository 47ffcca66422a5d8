//! Loading modules from configuration (`modules:` entries, then the legacy
//! `presence.presence_router`). Module configs arrive as JSON values: the
//! server converts from YAML, so this crate knows no file format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ruma_common::OwnedServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::module_api::{
    LocalUsers, ModuleApi, ModuleCommand, RegistrationError, DEFAULT_DEADLINE,
};
use crate::router::{Counters, LoadedModule, PresenceRouter};

/// One `modules:` entry (or the legacy `presence_router`).
///
/// Deserializes from Synapse's shape, `{module: .., config: ..}`, plus one
/// presenced extension beside them, `deadline_ms`, the deadline of each
/// callback call in milliseconds. It sits in the entry rather than inside
/// `config` so that module configs stay exactly what the module defines
/// (and Synapse configs keep working unchanged).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawEntry")]
pub struct ModuleEntry {
    /// The module's name, e.g. `presenced.routers.Observers`.
    pub module: String,
    /// Its configuration (`null` is treated as `{}`).
    pub config: serde_json::Value,
    /// Deadline of each callback call: the operator's `deadline_ms`, else
    /// what the module set with [`ModuleApi::set_deadline`], else
    /// [`DEFAULT_DEADLINE`].
    pub deadline: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    module: String,
    #[serde(default)]
    config: serde_json::Value,
    #[serde(default)]
    deadline_ms: Option<u64>,
}

impl TryFrom<RawEntry> for ModuleEntry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Self, String> {
        if raw.deadline_ms == Some(0) {
            // Every call would time out: almost certainly a mistake.
            return Err(format!("module `{}`: deadline_ms must be > 0", raw.module));
        }
        Ok(Self {
            module: raw.module,
            config: raw.config,
            deadline: raw.deadline_ms.map(Duration::from_millis),
        })
    }
}

impl ModuleEntry {
    /// An entry with the default deadline.
    pub fn new(module: impl Into<String>, config: serde_json::Value) -> Self {
        Self {
            module: module.into(),
            config,
            deadline: None,
        }
    }

    /// Entries in the order Synapse loads them: the `modules:` list in file
    /// order, then the legacy `presence.presence_router` last.
    pub fn load_order(modules: Vec<Self>, legacy_presence_router: Option<Self>) -> Vec<Self> {
        let mut entries = modules;
        entries.extend(legacy_presence_router);
        entries
    }
}

/// Why the modules could not be loaded; presenced refuses to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No module of that name is known.
    #[error("unknown module `{name}`; known modules: {}", known.join(", "))]
    UnknownModule {
        /// The name in the config.
        name: String,
        /// Every known name.
        known: Vec<String>,
    },
    /// The module rejected its configuration.
    #[error("bad config for module `{module}`: {message}")]
    BadConfig {
        /// The module's name.
        module: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The module registered only one of the paired callbacks.
    #[error("module `{module}`: {source}")]
    Registration {
        /// The module's name.
        module: String,
        /// The pairing error.
        source: RegistrationError,
    },
}

/// Constructs a module: reads its config and registers its callbacks.
/// Config problems are returned as [`ConstructError::Config`] ([`parse_config`]
/// does this); the loader adds the module's name.
pub type ModuleConstructor =
    fn(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError>;

/// Constructs modules the registry does not know (see
/// [`ModuleRegistry::load_with_fallback`]).
pub type ExternalConstructor<'a> =
    dyn Fn(&ModuleEntry, &mut ModuleApi) -> Option<Result<(), ConstructError>> + 'a;

/// A module constructor's failure.
#[derive(Debug, thiserror::Error)]
pub enum ConstructError {
    /// The configuration is invalid (the message names the field).
    #[error("{0}")]
    Config(String),
    /// A registration was refused.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

/// Parses a module config into its typed form; serde's message names the
/// unknown, missing or mistyped field.
pub fn parse_config<T: DeserializeOwned>(config: serde_json::Value) -> Result<T, ConstructError> {
    let config = if config.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        config
    };
    serde_json::from_value(config).map_err(|e| ConstructError::Config(e.to_string()))
}

/// Known modules by name. Starts with the built-in routers; Rust module
/// authors add theirs with [`ModuleRegistry::register`] before loading.
#[derive(Clone)]
pub struct ModuleRegistry {
    constructors: BTreeMap<String, ModuleConstructor>,
}

impl Default for ModuleRegistry {
    fn default() -> Self {
        let mut registry = Self {
            constructors: BTreeMap::new(),
        };
        crate::builtin::register_all(&mut registry);
        registry
    }
}

impl ModuleRegistry {
    /// Adds (or replaces) a module constructor.
    pub fn register(&mut self, name: impl Into<String>, constructor: ModuleConstructor) {
        self.constructors.insert(name.into(), constructor);
    }

    /// Every known module name.
    pub fn names(&self) -> Vec<String> {
        self.constructors.keys().cloned().collect()
    }

    /// Constructs the modules of `entries` in order (the `modules:` list in
    /// file order, then the legacy router) and returns the router.
    pub fn load(
        &self,
        entries: &[ModuleEntry],
        server_name: OwnedServerName,
        commands: tokio::sync::mpsc::UnboundedSender<ModuleCommand>,
        local_users: Option<Arc<dyn LocalUsers>>,
    ) -> Result<PresenceRouter, LoadError> {
        self.load_with_fallback(entries, server_name, commands, local_users, &|_, _| None)
    }

    /// [`ModuleRegistry::load`], handing every entry whose name the
    /// registry does not know to `fallback` (the server's Python module
    /// host). `fallback` answers `None` when it does not know the entry
    /// either, and otherwise constructs it on the given [`ModuleApi`] like
    /// a [`ModuleConstructor`]; the order of `entries` is kept.
    pub fn load_with_fallback(
        &self,
        entries: &[ModuleEntry],
        server_name: OwnedServerName,
        commands: tokio::sync::mpsc::UnboundedSender<ModuleCommand>,
        local_users: Option<Arc<dyn LocalUsers>>,
        fallback: &ExternalConstructor<'_>,
    ) -> Result<PresenceRouter, LoadError> {
        let mut modules = Vec::new();
        for entry in entries {
            let mut api = ModuleApi::new(server_name.clone(), commands.clone());
            if let Some(directory) = &local_users {
                api = api.with_local_users(directory.clone());
            }
            let constructed = match self.constructors.get(&entry.module) {
                Some(constructor) => constructor(entry.config.clone(), &mut api),
                None => match fallback(entry, &mut api) {
                    Some(result) => result,
                    None => {
                        return Err(LoadError::UnknownModule {
                            name: entry.module.clone(),
                            known: self.names(),
                        })
                    }
                },
            };
            constructed.map_err(|e| match e {
                ConstructError::Config(message) => LoadError::BadConfig {
                    module: entry.module.clone(),
                    message,
                },
                ConstructError::Registration(source) => LoadError::Registration {
                    module: entry.module.clone(),
                    source,
                },
            })?;
            let deadline = entry.deadline.or(api.deadline).unwrap_or(DEFAULT_DEADLINE);
            modules.push(LoadedModule {
                name: entry.module.clone(),
                deadline,
                callbacks: std::mem::take(&mut api.registered),
                counters: Counters::default(),
            });
        }
        Ok(PresenceRouter::from_modules(modules))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::{parse_config, ConstructError};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn null_is_an_empty_config_and_unknown_fields_are_named() {
        let opts: Opts = parse_config(serde_json::Value::Null).unwrap();
        assert_eq!(opts.n, 0);
        let Err(ConstructError::Config(message)) =
            parse_config::<Opts>(serde_json::json!({"m": 1}))
        else {
            panic!("an unknown field is a config error");
        };
        assert!(message.contains("`m`"), "{message}");
    }
}
