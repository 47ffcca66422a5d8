//! Outgoing federation presence: the engine's `Send` outputs go into the
//! durable outbox (`store::outbox`), and one sender task per destination
//! delivers them.
//!
//! - Queueing: states arriving together are written in one store
//!   transaction; per (destination, user) the newest replaces the older.
//!   Our own server, destinations outside `federation_domain_whitelist`
//!   and everything when `presence.federation.send` is false are dropped
//!   before the store.
//! - Sending: each destination has one task and one transaction in
//!   flight. It wakes as soon as something is queued, sends up to 5,000
//!   states (100 EDUs of 50), and on success removes the entries it sent
//!   (unless replaced meanwhile) and looks again. On failure it waits
//!   (`federation.destination_*_retry_interval`, doubling) and retries
//!   with whatever is queued then: the latest state of each user, never an
//!   older one. Every attempt has a fresh transaction ID, because the
//!   content may have changed and peers skip IDs they have seen.
//! - A destination that reaches us (an authenticated request) is up:
//!   its task stops waiting out a failure and retries at once.
//! - Restart: destinations with queued entries get their task at start.
//! - Cluster mode: the outbox is shared (PostgreSQL) and sending is
//!   sharded by destination over the presence partitions: a destination's
//!   task runs only on the owner of its partition (its lease is the shard
//!   lease). A node that queues for a destination it does not send to
//!   tells the shard owner; a node that takes a partition looks at the
//!   outbox at once, so a dead owner's destinations resume there with
//!   their queued entries (the outbox rows are the durable cursor: the
//!   newest state per user, removed once acknowledged).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presenced_engine::PresenceState;
use ruma_common::{OwnedServerName, OwnedUserId, ServerName};
use tokio::sync::{mpsc, watch, Notify};

use super::client::FederationClient;
use super::keys::BoxFuture;
use super::outgoing::{self, STATES_PER_TRANSACTION};
use crate::config::{Config, FederationConfig};
use crate::presence::{FederationShards, ShardNews};
use crate::store::Store;
use crate::util::clock::now;

/// How often a cluster node looks at the whole outbox for destinations
/// of its shards, beyond the notices it gets (one lost while a shard
/// moved is made up here).
const CLUSTER_OUTBOX_RESCAN: Duration = Duration::from_secs(5);

/// Tries to write one batch to the outbox before it is dropped.
const QUEUE_WRITE_ATTEMPTS: u32 = 5;

/// The edge the senders deliver through: `PUT
/// /_matrix/federation/v1/send/{txn_id}` to a destination, signed. The
/// federation client implements it; `Err` carries why, for the log.
pub trait TransactionSender: Send + Sync {
    /// Sends one transaction; `Ok` once the destination acknowledged it.
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        txn_id: &'a str,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), String>>;
}

impl TransactionSender for FederationClient {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        txn_id: &'a str,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // The inherent method (inherent methods win over trait ones).
            Self::send_transaction(self, destination, txn_id, body)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct OutboundStats {
    /// States acknowledged by their destination.
    pub states_delivered: AtomicU64,
    /// Transactions acknowledged.
    pub transactions_sent: AtomicU64,
    /// Transactions that failed (each is retried).
    pub transactions_failed: AtomicU64,
}

/// Outgoing presence; cheap to clone.
#[derive(Clone)]
pub struct OutboundPresence {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    client: Arc<dyn TransactionSender>,
    /// Which destinations this process sends to (on a cluster node, those
    /// of its shards).
    shards: FederationShards,
    /// One wake-up per destination task.
    senders: Mutex<HashMap<OwnedServerName, Arc<Wakers>>>,
    stats: OutboundStats,
    /// Transaction IDs are `<start ms>.<n>`: unique across restarts.
    txn_prefix: u64,
    next_txn: AtomicU64,
    stop: watch::Sender<bool>,
}

impl OutboundPresence {
    /// Starts delivering what the outbox holds and what `outbound` brings
    /// (on a cluster node: for the destinations of its shards). Must run
    /// inside a tokio runtime.
    pub fn start(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        client: Arc<dyn TransactionSender>,
        outbound: mpsc::UnboundedReceiver<(OwnedServerName, Vec<PresenceState>)>,
        shards: FederationShards,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let news = shards.news();
        let this = Self {
            inner: Arc::new(Inner {
                config,
                store,
                client,
                shards,
                senders: Mutex::new(HashMap::new()),
                stats: OutboundStats::default(),
                txn_prefix: now().as_millis(),
                next_txn: AtomicU64::new(1),
                stop,
            }),
        };
        tokio::spawn(this.clone().queue_task(outbound));
        let resume = this.clone();
        tokio::spawn(async move {
            resume.resume_queued(true).await;
            if let Some(news) = news {
                resume.shard_task(news).await;
            }
        });
        this
    }

    /// A cluster node's senders follow its shards: notices of entries
    /// other nodes queued, a look at the outbox when it takes a partition,
    /// and a periodic look for whatever a notice missed.
    async fn shard_task(&self, mut news: mpsc::UnboundedReceiver<ShardNews>) {
        let mut stop = self.inner.stop.subscribe();
        let mut rescan = tokio::time::interval(CLUSTER_OUTBOX_RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                item = news.recv() => item,
                _ = rescan.tick() => Some(ShardNews::Gained),
                _ = stop.wait_for(|s| *s) => None,
            };
            match item {
                Some(ShardNews::Queued(destination)) => self.wake_sender(&destination),
                Some(ShardNews::Gained) => self.resume_queued(false).await,
                None => return,
            }
        }
    }

    /// Whether this node sends to `destination` (always, outside a cluster).
    fn sends_to(&self, destination: &ServerName) -> bool {
        self.inner.shards.sends_to(destination)
    }

    /// Starts (or wakes) a sender for every destination the outbox holds
    /// entries for.
    async fn resume_queued(&self, at_start: bool) {
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.outbox_destinations()).await {
            Ok(Ok(destinations)) => {
                if at_start && !destinations.is_empty() {
                    tracing::info!(
                        destinations = destinations.len(),
                        "resuming queued federation presence"
                    );
                }
                for destination in destinations {
                    self.wake_sender(&destination);
                }
            }
            Ok(Err(e)) => tracing::error!("cannot read the federation outbox: {e}"),
            Err(e) => tracing::error!("reading the federation outbox panicked: {e}"),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &OutboundStats {
        &self.inner.stats
    }

    /// Stops queueing and sending (shutdown). What is queued stays in the
    /// store for the next start.
    pub fn shut_down(&self) {
        self.inner.stop.send_replace(true);
    }

    fn stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Whether states for `destination` are queued at all.
    fn wanted(&self, destination: &ServerName) -> bool {
        let config = &self.inner.config;
        config.presence.federation.send
            && destination != config.server_name
            && config.federation_allowed(destination)
    }

    async fn queue_task(
        self,
        mut outbound: mpsc::UnboundedReceiver<(OwnedServerName, Vec<PresenceState>)>,
    ) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let first = tokio::select! {
                item = outbound.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            // Whatever queued up meanwhile goes in the same transaction.
            let mut items = Vec::new();
            let mut push = |(destination, states): (OwnedServerName, Vec<PresenceState>)| {
                if self.wanted(&destination) {
                    items.extend(states.into_iter().map(|s| (destination.clone(), s)));
                }
            };
            push(first);
            while let Ok(more) = outbound.try_recv() {
                push(more);
            }
            if items.is_empty() {
                continue;
            }
            let destinations: BTreeSet<OwnedServerName> =
                items.iter().map(|(d, _)| d.clone()).collect();
            if !self.store_queued(items).await {
                continue;
            }
            for destination in &destinations {
                if self.inner.shards.sends_to(destination) {
                    self.wake_sender(destination);
                } else {
                    self.inner.shards.hand_over(destination);
                }
            }
        }
    }

    /// Writes queued states, retrying a failed write a few times (a busy
    /// database) before giving up on this batch; false if it was lost.
    async fn store_queued(&self, items: Vec<(OwnedServerName, PresenceState)>) -> bool {
        let items = Arc::new(items);
        for attempt in 1..=QUEUE_WRITE_ATTEMPTS {
            let store = self.inner.store.clone();
            let batch = items.clone();
            match tokio::task::spawn_blocking(move || store.queue_presence(&batch)).await {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => tracing::warn!(attempt, "queueing federation presence failed: {e}"),
                Err(e) => tracing::warn!(attempt, "queueing federation presence panicked: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        tracing::error!(
            states = items.len(),
            "federation presence could not be queued; it goes with the next change or keepalive"
        );
        false
    }

    /// `server` just reached us (an authenticated request): it is up, so a
    /// sender waiting out a failure towards it retries now, with its
    /// backoff reset (Synapse does the same on inbound traffic).
    pub fn peer_is_up(&self, server: &ServerName) {
        let senders = self.inner.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wakers) = senders.get(server) {
            wakers.up.notify_one();
        }
    }

    /// Wakes the destination's task, starting it if needed, if this node
    /// sends to it.
    fn wake_sender(&self, destination: &ServerName) {
        if !self.sends_to(destination) {
            return;
        }
        let mut senders = self.inner.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wakers) = senders.get(destination) {
            // Stored as a permit if the task is busy: it looks again after.
            wakers.queued.notify_one();
            return;
        }
        let wakers = Arc::new(Wakers::default());
        senders.insert(destination.to_owned(), wakers.clone());
        tokio::spawn(self.clone().sender_task(destination.to_owned(), wakers));
    }

    async fn sender_task(self, destination: OwnedServerName, wakers: Arc<Wakers>) {
        let retry = self.inner.config.federation.clone();
        let mut backoff = Backoff::new(&retry);
        let mut stop = self.inner.stop.subscribe();
        loop {
            if self.stopped() || self.shard_moved(&destination) {
                return;
            }
            let delivered = match self.send_once(&destination).await {
                Ok(0) => {
                    // Nothing queued: sleep until something is.
                    tokio::select! {
                        () = wakers.queued.notified() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
                Ok(n) => n,
                Err(why) => {
                    self.inner
                        .stats
                        .transactions_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.failed();
                    tracing::info!(%destination, retry_in = ?wait, "presence transaction failed: {why}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = wakers.up.notified() => {
                            tracing::debug!(%destination, "destination is up: retrying now");
                            backoff.reset();
                        }
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
            };
            backoff.reset();
            tracing::debug!(%destination, states = delivered, "presence delivered");
        }
    }

    /// Whether `destination`'s shard left this node; if so its task ends
    /// (the next wake-up after the shard comes back starts another).
    fn shard_moved(&self, destination: &ServerName) -> bool {
        let mut senders = self.inner.senders.lock().unwrap_or_else(|p| p.into_inner());
        if self.sends_to(destination) {
            return false;
        }
        senders.remove(destination);
        tracing::debug!(%destination, "federation shard moved: sender stops here");
        true
    }

    /// Sends one transaction of what is queued for `destination`; how many
    /// states it carried (0: nothing queued).
    async fn send_once(&self, destination: &ServerName) -> Result<usize, String> {
        let store = self.inner.store.clone();
        let dest = destination.to_owned();
        let entries = tokio::task::spawn_blocking(move || {
            store.pending_presence(&dest, STATES_PER_TRANSACTION)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if entries.is_empty() {
            return Ok(0);
        }
        let body = outgoing::transaction(
            &self.inner.config.server_name,
            entries.iter().map(|e| &e.state),
            now(),
        );
        let txn_id = format!(
            "{}.{}",
            self.inner.txn_prefix,
            self.inner.next_txn.fetch_add(1, Ordering::Relaxed)
        );
        let n = entries.len();
        let edus = body["edus"].as_array().map_or(0, Vec::len);
        tracing::debug!(%destination, %txn_id, edus, states = n, "outbound transaction sending");
        if let Err(why) = self
            .inner
            .client
            .send_transaction(destination, &txn_id, &body)
            .await
        {
            tracing::debug!(%destination, %txn_id, "outbound transaction failed: {why}");
            return Err(why);
        }
        tracing::debug!(%destination, %txn_id, edus, states = n, "outbound transaction acknowledged");
        let sent: Vec<(OwnedUserId, i64)> = entries
            .into_iter()
            .map(|e| (e.state.user_id, e.seq))
            .collect();
        let store = self.inner.store.clone();
        let dest = destination.to_owned();
        tokio::task::spawn_blocking(move || store.remove_sent_presence(&dest, &sent))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let stats = &self.inner.stats;
        stats.transactions_sent.fetch_add(1, Ordering::Relaxed);
        stats
            .states_delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What wakes a destination's task.
#[derive(Debug, Default)]
struct Wakers {
    /// Something was queued.
    queued: Notify,
    /// The destination reached us, so it is up again.
    up: Notify,
}

/// Exponential retry waits: min, min×m, min×m², … capped at max.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    multiplier: u32,
    next: Duration,
}

impl Backoff {
    fn new(config: &FederationConfig) -> Self {
        Self {
            min: config.destination_min_retry_interval,
            max: config.destination_max_retry_interval,
            multiplier: config.destination_retry_multiplier,
            next: config.destination_min_retry_interval,
        }
    }

    /// The wait after one more failure.
    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(self.multiplier).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let config = FederationConfig {
            destination_min_retry_interval: Duration::from_secs(1),
            destination_max_retry_interval: Duration::from_secs(5),
            ..FederationConfig::default()
        };
        let mut backoff = Backoff::new(&config);
        let waits: Vec<u64> = (0..5).map(|_| backoff.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        backoff.reset();
        assert_eq!(backoff.failed().as_secs(), 1);
    }
}
