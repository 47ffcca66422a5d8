//! `cluster:` — several presenced nodes sharing one PostgreSQL and one NATS
//! JetStream cluster (presenced-specific; absent means a single node).
//!
//! Exactly four keys: the partition count is fixed (16) and every timing
//! is the cluster crate's, so an operator has nothing to get wrong there.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One node's place in a cluster.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (it names its leases).
    pub node_name: String,
    /// NATS URLs of the JetStream cluster (`nats://host:4222`).
    pub nats_servers: Vec<String>,
    /// A NATS credentials file (`.creds`), when the servers need one.
    #[serde(default)]
    pub nats_credentials: Option<PathBuf>,
    /// Lets a single `nats-server`, or streams in memory, carry the
    /// cluster: for tests and laptops, never production (one server's
    /// loss would lose acknowledged presence).
    #[serde(default)]
    pub allow_unreplicated: bool,
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 64
            && (self.node_name.bytes())
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(format!(
                "cluster.node_name {:?}: 1 to 64 letters, digits, '-' or '_' (it names NATS keys)",
                self.node_name
            ));
        }
        if self.nats_servers.is_empty() {
            return Err("cluster.nats_servers: at least one nats:// URL is needed".to_owned());
        }
        for url in &self.nats_servers {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(format!(
                    "cluster.nats_servers: {url:?} is not a NATS URL (nats://host:4222)"
                ));
            }
        }
        Ok(())
    }
}
