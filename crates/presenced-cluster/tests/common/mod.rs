//! Test helpers shared by the bus and cluster tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use presenced_cluster::{JetStreamBus, JetStreamConfig};

pub fn jetstream_config(urls: Vec<String>, namespace: &str, replicas: usize) -> JetStreamConfig {
    JetStreamConfig {
        servers: urls,
        credentials: None,
        replicas,
        allow_unreplicated: replicas < 3,
        node_ttl: Duration::from_secs(3),
        owner_ttl: Duration::from_secs(4),
        namespace: namespace.to_owned(),
    }
}

/// Connects, retrying while a fresh cluster elects its JetStream leader.
pub async fn connect(config: &JetStreamConfig) -> JetStreamBus {
    let mut last = None;
    for _ in 0..40 {
        match JetStreamBus::connect(config).await {
            Ok(bus) => return bus,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("connect to {:?}: {last:?}", config.servers)
}
