//! `python_modules:` — the child process that runs Synapse's Python
//! presence router modules (presenced addition).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the Python host's interpreter and modules are, and its limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PythonModulesConfig {
    /// The interpreter (e.g. a Synapse virtualenv's `bin/python`); `None`
    /// means `python3` on `PATH`. `PRESENCED_PYTHON` overrides it.
    pub python: Option<PathBuf>,
    /// Directories put first on the host's `sys.path`, in order.
    pub path: Vec<PathBuf>,
    /// Deadline of each Python router call unless the module entry sets
    /// its own `deadline_ms`.
    pub deadline_ms: u64,
    /// Resident memory (MiB) past which the host is killed and restarted.
    pub max_rss_mb: u64,
}

impl Default for PythonModulesConfig {
    fn default() -> Self {
        Self {
            python: None,
            path: Vec::new(),
            deadline_ms: 1000,
            max_rss_mb: 1024,
        }
    }
}

impl PythonModulesConfig {
    /// The interpreter to start.
    pub fn interpreter(&self) -> PathBuf {
        self.python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3"))
    }
}
