//! Config → a running presence driver: engine settings, router modules,
//! presence storage, and the task that applies module commands. Outgoing
//! federation presence is handed back to the caller
//! (`federation::sender` carries it).

use std::sync::Arc;
use std::time::Duration;

use presenced_engine::{EngineConfig, Tracking};
use presenced_router::{command_channel, LocalUsers, ModuleEntry, ModuleRegistry};
use ruma_common::{OwnedRoomId, OwnedUserId};

use super::directory::StoreDirectory;
use super::python::{is_python_class_path, PythonEntry, PythonModules};
use super::PresenceService;
use crate::config::presence::PresenceEnabled;
use crate::config::Config;
use crate::store::presence::{PresenceStore, StoreFailure};
use crate::store::Store;

/// Why the presence driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A presence router module could not be loaded.
    #[error("presence router modules: {0}")]
    Modules(#[from] presenced_router::LoadError),
    /// The Python module host could not start or load a module.
    #[error("presence router modules: {0}")]
    Python(#[from] super::python::host::StartError),
    /// The presence store could not be opened.
    #[error("presence store: {0}")]
    PresenceStore(#[from] StoreFailure),
    /// Cluster mode: the node could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] super::cluster::join::JoinError),
}

pub use super::OutboundReceiver;

/// The engine's settings from the config file.
pub fn engine_config(config: &Config) -> EngineConfig {
    let p = &config.presence;
    EngineConfig {
        tracking: match config.presence_enabled() {
            PresenceEnabled::Enabled => Tracking::Enabled,
            PresenceEnabled::Untracked => Tracking::Untracked,
            PresenceEnabled::Disabled => Tracking::Disabled,
        },
        last_active_granularity: p.last_active_granularity,
        sync_online_timeout: p.sync_online_timeout,
        idle_timeout: p.idle_timeout,
        max_room_size: p.max_room_size,
        max_remote_users_per_server: p.max_remote_users_per_server,
        exclude_rooms_from_presence: config.exclude_rooms_from_presence.iter().cloned().collect(),
        ..EngineConfig::default()
    }
}

/// Loads the modules and starts the driver over the stored presence and
/// the current joined memberships. `store` backs the local user directory
/// that modules such as `presenced.routers.ServerWide` read.
pub fn start(
    config: &Config,
    joined: Vec<(OwnedRoomId, OwnedUserId)>,
    store: Arc<dyn Store>,
    presence_store: Arc<dyn PresenceStore>,
) -> Result<(PresenceService, OutboundReceiver), StartError> {
    let (commands_tx, mut commands_rx) = command_channel();
    let modules = config.router_modules();
    let legacy_at = config
        .presence
        .presence_router
        .as_ref()
        .map(|_| modules.len() - 1);
    let entries: Vec<ModuleEntry> = modules
        .into_iter()
        .map(|m| ModuleEntry {
            deadline: m.deadline_ms.map(Duration::from_millis),
            ..ModuleEntry::new(m.module, m.config)
        })
        .collect();
    let registry = ModuleRegistry::default();
    let known = registry.names();
    // Every entry the registry does not know and that reads as a class path
    // is a Python module (Synapse's `modules:` shape, unchanged).
    let python_entries: Vec<PythonEntry<'_>> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !known.contains(&e.module) && is_python_class_path(&e.module))
        .map(|(i, entry)| PythonEntry {
            entry,
            legacy: Some(i) == legacy_at,
        })
        .collect();
    let python = if python_entries.is_empty() {
        None
    } else {
        Some(PythonModules::start(
            &config.python_modules,
            config.server_name.as_str(),
            &python_entries,
            commands_tx.clone(),
        )?)
    };
    // The router's own deadline for a Python entry is set by the adapter
    // (the call's deadline plus a grace), so the entry's must not override it.
    let entries: Vec<ModuleEntry> = entries
        .into_iter()
        .map(|e| {
            if python.is_some() && !known.contains(&e.module) {
                ModuleEntry {
                    deadline: None,
                    ..e
                }
            } else {
                e
            }
        })
        .collect();
    let directory: Arc<dyn LocalUsers> = Arc::new(StoreDirectory::new(store));
    let router = registry.load_with_fallback(
        &entries,
        config.server_name.clone(),
        commands_tx,
        Some(directory),
        &|entry, api| {
            let python = python.as_ref()?;
            is_python_class_path(&entry.module).then(|| python.construct(entry, api))
        },
    )?;
    // The one place the back end is chosen (presence/backend.rs).
    let (service, outbound) = match &config.cluster {
        None => PresenceService::start(
            engine_config(config),
            config.server_name.clone(),
            router,
            presence_store,
            joined,
        ),
        Some(cluster) => PresenceService::start_cluster(
            engine_config(config),
            config.server_name.clone(),
            router,
            joined,
            super::cluster::join::connect_node(cluster)?,
        ),
    };
    if let Some(python) = &python {
        service.set_python_stats(python.stats());
    }
    let for_commands = service.clone();
    tokio::spawn(async move {
        while let Some(command) = commands_rx.recv().await {
            for_commands.module_command(command);
        }
    });
    Ok((service, outbound))
}
