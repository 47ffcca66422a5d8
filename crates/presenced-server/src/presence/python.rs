//! Synapse's Python presence router modules, run unmodified in a child
//! process that presenced starts and supervises (`python_modules:`).
//!
//! Owns the host process and the protocol to it; must not let the host
//! stop presence: a crashed, stuck or bloated host is killed and restarted
//! while its modules' answers count as empty.
//!
//! - `host`: the process, its threads and the supervisor.
//! - `protocol`: frames and messages (written up in `python/PROTOCOL.md`).
//! - `adapter`: a module's callbacks as router callbacks, with the
//!   per-user `get_interested_users` cache.
//! - `stats`: per-module counters and restarts for `/metrics`.
//!
//! The host program itself, `python/presenced_host.py` and its three
//! parts (presenced's `ModuleApi`, the stand-in `synapse` package, the
//! adapter to the interpreter's own Synapse), is compiled into the binary
//! and started as `python -c`, so nothing is installed and a server
//! without Python modules never starts Python.

mod adapter;
pub mod host;
pub mod protocol;
pub mod stats;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use presenced_router::{ConstructError, ModuleApi, ModuleEntry};

pub use self::adapter::INTEREST_TTL;
use self::host::{HostSpec, PythonHost, StartError};
use self::protocol::InitModule;
use self::stats::HostStats;
use crate::config::python_modules::PythonModulesConfig;

/// Extra time the router waits past a Python call's own deadline, so the
/// adapter (which cancels the Python task and counts a "deadline") always
/// answers first.
const ROUTER_GRACE: Duration = Duration::from_millis(250);

/// Whether a `module:` name is for the Python host: not one of presenced's
/// own names, and a dotted class path (`package.module.Class`).
pub fn is_python_class_path(name: &str) -> bool {
    !name.starts_with("presenced.")
        && name.contains('.')
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The Python modules of one server, loaded in the host.
pub struct PythonModules {
    host: PythonHost,
    pairs: Vec<usize>,
    deadlines: Vec<Duration>,
    next: Cell<usize>,
}

/// One Python entry: the config entry, and whether it is the legacy
/// `presence.presence_router`.
pub struct PythonEntry<'a> {
    pub entry: &'a ModuleEntry,
    pub legacy: bool,
}

impl PythonModules {
    /// Starts the host with every Python entry, in load order.
    pub fn start(
        config: &PythonModulesConfig,
        server_name: &str,
        entries: &[PythonEntry<'_>],
        commands: tokio::sync::mpsc::UnboundedSender<presenced_router::ModuleCommand>,
    ) -> Result<Self, StartError> {
        let default_deadline = Duration::from_millis(config.deadline_ms.max(1));
        let modules: Vec<InitModule> = entries
            .iter()
            .enumerate()
            .map(|(index, e)| InitModule {
                index,
                module: e.entry.module.clone(),
                config: e.entry.config.clone(),
                legacy: e.legacy,
            })
            .collect();
        let deadlines: Vec<Duration> = entries
            .iter()
            .map(|e| e.entry.deadline.unwrap_or(default_deadline))
            .collect();
        let longest = deadlines.iter().copied().max().unwrap_or(default_deadline);
        let spec = HostSpec {
            python: config.interpreter(),
            path: config.path.clone(),
            server_name: server_name.to_owned(),
            modules,
            // A healthy loop answers a ping in well under a millisecond;
            // twice the longest deadline (at least 2 s) tells a module
            // that blocks the loop from one that is merely slow.
            stall: (longest * 2).max(Duration::from_secs(2)),
            max_rss: config.max_rss_mb.saturating_mul(1 << 20),
        };
        let (host, pairs) = PythonHost::start(spec, commands, Arc::new(HostStats::default()))?;
        Ok(Self {
            host,
            pairs,
            deadlines,
            next: Cell::new(0),
        })
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> Arc<HostStats> {
        self.host.stats().clone()
    }

    /// Constructs the next Python entry on `api` (called by the router's
    /// loader, in the same order the entries were given to [`Self::start`]).
    pub fn construct(
        &self,
        entry: &ModuleEntry,
        api: &mut ModuleApi,
    ) -> Result<(), ConstructError> {
        let index = self.next.get();
        self.next.set(index + 1);
        let deadline = self.deadlines[index];
        api.set_deadline(deadline + ROUTER_GRACE);
        adapter::register(
            api,
            adapter::Callbacks {
                host: self.host.clone(),
                name: entry.module.as_str().into(),
                index,
                slot: 0,
                deadline,
                calls: self.host.stats().module(&entry.module),
            },
            self.pairs[index],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_python_class_path;

    #[test]
    fn only_dotted_class_paths_outside_presenced_go_to_python() {
        assert!(is_python_class_path("custom_router.CustomPresenceRouter"));
        assert!(is_python_class_path("a.b_2.C"));
        assert!(!is_python_class_path("presenced.routers.Observer"));
        assert!(!is_python_class_path("nodots"));
        assert!(!is_python_class_path("a..b"));
        assert!(!is_python_class_path("a.2b"));
    }
}
