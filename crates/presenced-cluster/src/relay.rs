//! The membership relay: committed outbox rows into the membership feed.
//!
//! PostgreSQL stays the truth for rooms; each membership change writes an
//! outbox row in its own transaction, and one relay at a time (a lease)
//! copies rows into the feed in id order, so every node can follow room
//! changes made on any node. A relay that takes over starts after the
//! feed's last row id; every append is fenced by the feed's last sequence
//! and deduplicated by row id, so a crashed or paused relay never makes a
//! row appear twice or out of order.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::bus::{Bus, BusError, LeaseBucket, Seq};

/// Where the relay reads committed rows: the server implements it over
/// PostgreSQL.
pub trait OutboxSource: Send + Sync + 'static {
    /// Rows after `after`, in id order, at most `limit`. Must return only
    /// rows no smaller id can still commit before (PostgreSQL: ids below
    /// the snapshot's `xmin` horizon), or a late commit would be skipped.
    fn committed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Bytes)>, String>> + Send;
}

#[derive(Clone, Debug)]
pub struct RelayTiming {
    /// Must match the owners bucket's time to live.
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    /// How long to wait when there is nothing to relay, or no lease.
    pub poll: Duration,
    pub batch: usize,
}

impl Default for RelayTiming {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            poll: Duration::from_millis(100),
            batch: 256,
        }
    }
}

const RELAY_KEY: &str = "relay";

/// Runs for the node's life: relays while it holds the relay lease.
pub async fn run<B: Bus, S: OutboxSource>(node: String, bus: B, source: S, timing: RelayTiming) {
    loop {
        match bus
            .lease_create(LeaseBucket::Owners, RELAY_KEY, Bytes::from(node.clone()))
            .await
        {
            Ok(revision) => {
                let revision = relay(&node, &bus, &source, &timing, revision).await;
                if let Some(revision) = revision {
                    let _ = bus
                        .lease_release(LeaseBucket::Owners, RELAY_KEY, revision)
                        .await;
                }
            }
            Err(_) => tokio::time::sleep(timing.poll.max(Duration::from_millis(500))).await,
        }
    }
}

/// Relays until the lease is lost or the feed moved under it; returns the
/// lease revision to release, if it may still be held.
async fn relay<B: Bus, S: OutboxSource>(
    node: &str,
    bus: &B,
    source: &S,
    timing: &RelayTiming,
    mut revision: u64,
) -> Option<u64> {
    let (mut last, mut cursor): (Seq, u64) = bus.feed_last().await.ok()?.unwrap_or((0, 0));
    let mut renewed = Instant::now();
    tracing::info!(node, after = cursor, "membership relay started");
    loop {
        if renewed.elapsed() >= timing.renew_every {
            match bus
                .lease_update(
                    LeaseBucket::Owners,
                    RELAY_KEY,
                    Bytes::from(node.to_owned()),
                    revision,
                )
                .await
            {
                Ok(next) => {
                    revision = next;
                    renewed = Instant::now();
                }
                Err(BusError::LeaseLost) => return None,
                Err(_) if renewed.elapsed() >= timing.lease_ttl => return None,
                Err(_) => {}
            }
        }
        let rows = match source.committed_after(cursor, timing.batch).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "membership relay: reading the outbox failed");
                tokio::time::sleep(timing.poll).await;
                continue;
            }
        };
        if rows.is_empty() {
            tokio::time::sleep(timing.poll).await;
            continue;
        }
        for (id, payload) in rows {
            match bus.feed_append(last, id, payload).await {
                Ok(seq) => {
                    last = last.max(seq);
                    cursor = id;
                }
                // Another relay appended meanwhile (this one was paused
                // past its lease), or the outcome is unknown: start over
                // from the feed.
                Err(error) => {
                    tracing::info!(node, %error, "membership relay stopped");
                    return Some(revision);
                }
            }
        }
    }
}
