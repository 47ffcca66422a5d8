//! Companion mode in a cluster: every node's presence engine hears every
//! membership change the feed stored, whichever node Synapse pushed the
//! transaction to.
//!
//! Synapse pushes each transaction to one node. That node stores it once
//! (the store numbers each kept change, under one lock, so the numbers
//! are storage order); then every node, the receiving one included, reads
//! the numbered changes after the last one it told presence and tells
//! them, in order. This is the way a cluster node follows presenced's own
//! rooms (`Homeserver::spawn_room_follower` reading the event stream from
//! PostgreSQL), not the NATS membership relay: the feed's changes are
//! already ordered and durable in PostgreSQL, and a second copy on the bus
//! would only add a relay lease and a second source of truth.
//!
//! Exactly once per node: the position and the telling share one lock, so
//! the receiving node's catch-up right after its store and the periodic
//! catch-up never tell the same change twice.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;

use super::members::{FeedError, MembershipFeed};
use crate::store::companion::AppliedMembership;
use crate::store::{blocking, Store};

/// How often a node looks for changes other nodes stored (as often as it
/// looks for their room writes).
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Changes read per store call.
const BATCH: usize = 500;

/// The number of the last stored change this node told presence.
pub struct ChangeFollower {
    told_up_to: Mutex<i64>,
}

impl ChangeFollower {
    /// A follower that tells the changes after `position`: the newest
    /// change number read before the view seeded presence at start-up.
    pub fn from(position: i64) -> Self {
        Self {
            told_up_to: Mutex::new(position),
        }
    }

    /// Tells `tell` every stored change after the position, in order, and
    /// moves the position past them. Returns how many it told.
    pub async fn catch_up(
        &self,
        store: &Arc<dyn Store>,
        tell: impl Fn(&[AppliedMembership]),
    ) -> Result<usize, FeedError> {
        let mut told_up_to = self.told_up_to.lock().await;
        let mut told = 0;
        loop {
            let after = *told_up_to;
            let changes =
                blocking(store, move |s| s.companion_changes_after(after, BATCH)).await??;
            let Some((last, _)) = changes.last() else {
                return Ok(told);
            };
            *told_up_to = *last;
            let full = changes.len() == BATCH;
            let changes: Vec<AppliedMembership> = changes.into_iter().map(|(_, c)| c).collect();
            tell(&changes);
            told += changes.len();
            if !full {
                return Ok(told);
            }
        }
    }
}

/// Catches the feed up a few times a second for as long as it lives.
pub fn spawn(feed: &Arc<MembershipFeed>) {
    let weak: Weak<MembershipFeed> = Arc::downgrade(feed);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            let Some(feed) = weak.upgrade() else {
                return;
            };
            if let Err(e) = feed.catch_up().await {
                tracing::warn!("following the membership changes other nodes stored: {e}");
            }
        }
    });
}
