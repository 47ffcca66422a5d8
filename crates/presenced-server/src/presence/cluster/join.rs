//! Cluster mode at start-up: the `cluster:` section turned into a
//! connection to NATS JetStream and a running node under the presence
//! service.

use std::time::Duration;

use presenced_cluster::{BusError, JetStreamBus, JetStreamConfig, Timing};

use crate::config::cluster::ClusterConfig;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cluster: cannot use NATS at {servers}: {reason}")]
    Bus { servers: String, reason: String },
    #[error(
        "cluster: start-up runs on tokio's multi-threaded runtime (the presenced binary does)"
    )]
    Runtime,
}

/// The cluster's clocks. A 6 s owner lease: a dead node's partitions move
/// within about 6–8 s (SCALING.md measures it), and a node cut off from
/// NATS for longer fails its health check.
pub fn timing() -> Timing {
    Timing {
        owner_ttl: Duration::from_secs(6),
        renew_every: Duration::from_secs(2),
        heartbeat_every: Duration::from_secs(2),
        ..Timing::default()
    }
}

fn jetstream_config(config: &ClusterConfig, timing: &Timing) -> JetStreamConfig {
    JetStreamConfig {
        servers: config.nats_servers.clone(),
        credentials: config.nats_credentials.clone(),
        replicas: if config.allow_unreplicated { 1 } else { 3 },
        allow_unreplicated: config.allow_unreplicated,
        node_ttl: timing.heartbeat_every * 3,
        owner_ttl: timing.owner_ttl,
        namespace: String::new(),
    }
}

/// How long start-up waits for NATS: servers started together with the
/// nodes elect their JetStream leader within seconds.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects, retrying while the servers are unreachable or JetStream is
/// not ready; a refusal (old server, too few replicas) ends it at once.
async fn connect(js: &JetStreamConfig) -> Result<JetStreamBus, BusError> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match JetStreamBus::connect(js).await {
            Ok(bus) => return Ok(bus),
            Err(refused @ BusError::Refused(_)) => return Err(refused),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "waiting for NATS JetStream");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A node connected to the cluster's NATS, ready to start under a
/// presence service ([`super::ClusterBackend::start_node`]).
pub struct Joined {
    pub(super) node_name: String,
    pub(super) bus: JetStreamBus,
    pub(super) timing: Timing,
}

/// Connects to NATS (creating the streams and buckets on first use, and
/// refusing servers older than 2.12 or, unless `allow_unreplicated`,
/// fewer than 3 replicas). Blocks the calling thread of a multi-threaded
/// runtime while connecting.
pub fn connect_node(config: &ClusterConfig) -> Result<Joined, JoinError> {
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(JoinError::Runtime);
    }
    let timing = timing();
    let js = jetstream_config(config, &timing);
    let bus = tokio::task::block_in_place(|| handle.block_on(connect(&js))).map_err(|e| {
        JoinError::Bus {
            servers: config.nats_servers.join(", "),
            reason: e.to_string(),
        }
    })?;
    tracing::info!(
        node = %config.node_name,
        nats = %config.nats_servers.join(", "),
        "joined the presence cluster"
    );
    Ok(Joined {
        node_name: config.node_name.clone(),
        bus,
        timing,
    })
}
