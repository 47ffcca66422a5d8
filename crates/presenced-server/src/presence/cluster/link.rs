//! The running node under a clustered [`PresenceService`](crate::presence::PresenceService):
//! commands out to partition owners, owner-computed states into the log,
//! and the edge-triggered relay of this node's long-polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use presenced_cluster::record::{decode_state, encode_state};
use presenced_cluster::sync_relay::{SyncEdge, SyncRelay};
use presenced_cluster::{JetStreamBus, Node, NodeHandle, Timing, WriteError, PARTITIONS};
use presenced_engine::{Presence, PresenceState};
use ruma_common::{DeviceId, OwnedDeviceId, OwnedServerName, ServerName, UserId};
use tokio::sync::{mpsc, Notify};

use super::{ClusterCommand, ClusterDriver};
use crate::presence::SyncEffect;

/// How long a device may be without a long-poll on this node before its
/// owner hears that it stopped syncing: clients poll again at once, so
/// only a device that went away waits this out (it adds to the owner's
/// sync timeout).
const SYNC_GRACE: Duration = Duration::from_secs(5);

/// How long a sync waits for the owner to write the presence its start
/// changes before it answers anyway.
const SYNC_EDGE_WAIT: Duration = Duration::from_secs(2);

/// This node's part in the cluster.
pub struct ClusterLink {
    handle: NodeHandle<JetStreamBus>,
    driver: Arc<ClusterDriver>,
    node: Mutex<Option<Node<JetStreamBus>>>,
    relay: Mutex<Relay>,
    relay_moved: Notify,
    /// Where news for this node's federation senders goes (see
    /// [`Self::federation_news`]).
    federation: Mutex<Option<mpsc::UnboundedSender<ShardNews>>>,
}

/// What this node's federation senders hear from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardNews {
    /// Another node queued states for a destination this node sends to.
    Queued(OwnedServerName),
    /// This node took a partition: destinations may have become its own.
    Gained,
}

/// The key whose partition's owner sends to `destination`: outgoing
/// federation is sharded by destination over the same 16 partitions and
/// leases as presence, so one node at a time sends to each destination.
fn destination_key(destination: &ServerName) -> String {
    format!("federation:{destination}")
}

/// The partition whose owner sends to `destination`.
pub fn destination_partition(destination: &ServerName) -> u16 {
    presenced_cluster::partition_of(&destination_key(destination))
}

struct Relay {
    relay: SyncRelay,
    /// The presence last relayed per (user, device) syncing here.
    relayed: HashMap<(String, Option<String>), Option<Presence>>,
}

impl ClusterLink {
    /// Starts the node's tasks with `driver` (already bound to its
    /// service) and the sync relay's task.
    pub fn start(
        name: &str,
        bus: JetStreamBus,
        timing: Timing,
        driver: Arc<ClusterDriver>,
    ) -> Arc<Self> {
        let node = Node::start_with(name, bus, timing, driver.clone());
        let link = Arc::new(Self {
            handle: node.handle(),
            driver,
            node: Mutex::new(Some(node)),
            relay: Mutex::new(Relay {
                relay: SyncRelay::new(SYNC_GRACE),
                relayed: HashMap::new(),
            }),
            relay_moved: Notify::new(),
            federation: Mutex::new(None),
        });
        tokio::spawn(relay_task(Arc::downgrade(&link)));
        tokio::spawn(dead_node_task(Arc::downgrade(&link)));
        link
    }

    /// Ends the node's tasks (shutdown): its leases run out by themselves
    /// and other nodes take its partitions.
    pub fn stop(&self) {
        if let Some(node) = self.node.lock().unwrap_or_else(|p| p.into_inner()).take() {
            node.stop();
        }
    }

    /// How long the bus has not answered; past the lease this node no
    /// longer owns anything and fails its health check.
    pub fn silent_for(&self) -> Duration {
        self.handle.bus_silent_for()
    }

    /// How often this node's heartbeat asks the bus.
    pub fn heartbeat_every(&self) -> Duration {
        self.handle.timing().heartbeat_every
    }

    /// Whether the node was stopped (shutdown).
    pub fn stopped(&self) -> bool {
        self.node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// What other nodes tell this one on `topic` (see [`Self::tell_others`]).
    pub async fn listen(
        &self,
        topic: &str,
    ) -> Result<<JetStreamBus as presenced_cluster::Bus>::Requests, presenced_cluster::BusError>
    {
        self.handle.listen(topic).await
    }

    /// Tells every other live node on `topic` and waits for their answers
    /// (at most `timeout`); the nodes that did not answer.
    pub async fn tell_others(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Vec<String>, presenced_cluster::BusError> {
        self.handle.tell_others(topic, payload, timeout).await
    }

    /// The owner lease: how long a silent bus may last before this node
    /// counts as cut off.
    pub fn lease(&self) -> Duration {
        self.handle.timing().owner_ttl
    }

    /// This node's name in the cluster.
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The partitions this node owns now.
    pub fn owned_partitions(&self) -> Vec<u16> {
        self.handle.owned().into_keys().collect()
    }

    /// Whether this node sends federation traffic to `destination` now
    /// (it owns the destination's partition).
    pub fn sends_to(&self, destination: &ServerName) -> bool {
        !self.cut_off() && self.handle.owns(destination_partition(destination))
    }

    /// Tells the node that sends to `destination` that states were queued
    /// for it in the shared outbox. Best effort: a notice lost while the
    /// shard moves is made up by the new owner's look at the outbox.
    pub fn federation_queued(self: &Arc<Self>, destination: &ServerName) {
        let link = self.clone();
        let key = destination_key(destination);
        let command = ClusterCommand::FederationQueued {
            destination: destination.to_owned(),
        };
        tokio::spawn(async move {
            if let Err(error) = link.write_key(&key, &command).await {
                tracing::debug!(%error, %key, "federation notice not delivered");
            }
        });
    }

    /// The news for this node's federation senders (one receiver: a later
    /// call replaces the earlier one).
    pub fn federation_news(&self) -> mpsc::UnboundedReceiver<ShardNews> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.federation.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Passes news to the federation senders (if they listen yet: at start
    /// they look at the whole outbox anyway).
    pub(in crate::presence) fn tell_federation(&self, news: ShardNews) {
        if let Some(tx) = &*self.federation.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(news);
        }
    }

    /// Whether this node has been cut off from the bus past its lease.
    pub fn cut_off(&self) -> bool {
        self.silent_for() > self.lease()
    }

    /// Sends a command to the user's partition owner and returns once it
    /// is written and this node's replica (and engine) has applied it.
    pub async fn write(&self, user: &UserId, command: &ClusterCommand) -> Result<(), WriteError> {
        self.write_key(user.as_str(), command).await
    }

    /// [`Self::write`] to the owner of `key`'s partition.
    async fn write_key(&self, key: &str, command: &ClusterCommand) -> Result<(), WriteError> {
        if self.cut_off() {
            return Err(WriteError::NoOwner(presenced_cluster::partition_of(key)));
        }
        let payload = serde_json::to_value(command).unwrap_or_default();
        self.handle.write(key, payload).await.map(|_| ())
    }

    /// [`Self::write`] without waiting: activity and sync edges, whose
    /// loss costs a late presence change, not an acknowledged one.
    pub fn send(self: &Arc<Self>, user: &UserId, command: ClusterCommand) {
        let link = self.clone();
        let user = user.to_owned();
        tokio::spawn(async move {
            if let Err(error) = link.write(&user, &command).await {
                tracing::debug!(%error, %user, "cluster command not written");
            }
        });
    }

    /// An owner-computed state (a timeout, a module's change to another
    /// user) for its partition's log.
    pub fn publish(&self, state: &PresenceState) {
        self.handle
            .publish_owned(state.user_id.as_str(), encode_state(state));
    }

    /// The replica's applied vector: every record up to it has reached
    /// this node's engine.
    pub fn applied(&self) -> presenced_cluster::VectorToken {
        self.handle.replica().applied()
    }

    /// Waits until this node has applied `partition` up to `seq` (or the
    /// timeout).
    pub async fn wait_applied(&self, partition: u16, seq: u64, timeout: Duration) {
        self.handle
            .replica()
            .wait_applied(partition, seq, timeout)
            .await;
    }

    /// A user's state as its partition's log has it, with its partition
    /// and sequence (`None`: never written, or unreadable).
    pub fn logged(&self, user: &UserId) -> Option<(u16, u64, PresenceState)> {
        let entry = self.handle.replica().get(user.as_str())?;
        let state = decode_state(&entry.record.user, &entry.record.state)?;
        Some((entry.partition, entry.seq, state))
    }

    /// A long-poll of `device` starts on this node; returns what the owner
    /// must hear of it (its first long-poll here, or another
    /// `set_presence`), for [`Self::write_sync_edge`].
    pub fn sync_started(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        effect: SyncEffect,
    ) -> Option<ClusterCommand> {
        let asked = match effect {
            SyncEffect::None => return None,
            SyncEffect::KeepAlive => None,
            SyncEffect::Set(p) => Some(p),
        };
        let mut relay = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            user.as_str().to_owned(),
            device.map(|d| d.as_str().to_owned()),
        );
        let edge = relay
            .relay
            .start(user.as_str(), device.map(DeviceId::as_str));
        let before = relay.relayed.get(&key).copied();
        if edge.is_some() {
            relay.relayed.insert(key, asked);
            Some(ClusterCommand::SyncStart {
                device: device.map(ToOwned::to_owned),
                presence: asked,
            })
        } else if asked.is_some() && before != Some(asked) {
            relay.relayed.insert(key, asked);
            asked.map(|presence| ClusterCommand::SyncPresence {
                device: device.map(ToOwned::to_owned),
                presence,
            })
        } else {
            None
        }
    }

    /// Writes a sync edge and returns once it is applied here, so the
    /// sync's own answer shows what it changed, as on a single node (or
    /// after `SYNC_EDGE_WAIT`, when the owner is slow: the change then
    /// arrives in a later answer).
    pub async fn write_sync_edge(&self, user: &UserId, command: &ClusterCommand) {
        match tokio::time::timeout(SYNC_EDGE_WAIT, self.write(user, command)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, %user, "sync start not written"),
            Err(_) => tracing::debug!(%user, "sync start not written in time"),
        }
    }

    /// A long-poll of `device` ended on this node; its owner hears of it
    /// after the grace if no other starts.
    pub fn sync_ended(&self, user: &UserId, device: Option<&DeviceId>) {
        let now = crate::util::clock::now();
        (self.relay.lock().unwrap_or_else(|p| p.into_inner()))
            .relay
            .end(user.as_str(), device.map(DeviceId::as_str), now);
        self.relay_moved.notify_one();
    }
}

/// How often an owner looks for nodes gone from the cluster whose devices
/// still count as syncing here.
const DEAD_NODE_LOOK: Duration = Duration::from_secs(5);

/// Ends the syncs that only dead nodes held on the partitions this node
/// owns.
async fn dead_node_task(link: Weak<ClusterLink>) {
    loop {
        tokio::time::sleep(DEAD_NODE_LOOK).await;
        let Some(link) = link.upgrade() else {
            return;
        };
        let Some(live) = link.handle.live_nodes().await else {
            continue;
        };
        let live: std::collections::BTreeSet<String> = live.into_iter().collect();
        // On a partial view (this node itself missing) nothing is ended.
        if live.contains(link.name()) {
            link.driver.end_syncs_of_dead_nodes(&live);
        }
    }
}

/// Relays stops whose grace ran out, and re-announces this node's syncing
/// devices of a partition whose owner changed (the new owner starts
/// without them; the owner ignores a repeated start from the same node).
async fn relay_task(link: Weak<ClusterLink>) {
    let mut epochs = [0u64; PARTITIONS as usize];
    let mut incarnations = 1;
    if let Some(link) = link.upgrade() {
        for (p, epoch) in (0..PARTITIONS).zip(epochs.iter_mut()) {
            *epoch = link.handle.replica().epoch(p);
        }
    }
    loop {
        let Some(link) = link.upgrade() else {
            return;
        };
        let now = crate::util::clock::now();
        let (due, edges) = {
            let mut relay = link.relay.lock().unwrap_or_else(|p| p.into_inner());
            let mut edges = relay.relay.poll(now);
            // Back in the nodes bucket after dropping out of it: owners may
            // have ended this node's syncs meanwhile, so all are announced.
            let back = link.handle.incarnations() > incarnations;
            if back {
                incarnations = link.handle.incarnations();
            }
            for (p, epoch) in (0..PARTITIONS).zip(epochs.iter_mut()) {
                let current = link.handle.replica().epoch(p);
                if current != *epoch || back {
                    *epoch = current;
                    edges.extend(relay.relay.announce_partition(p));
                }
            }
            for edge in &edges {
                if let SyncEdge::Stopped { user, device, .. } = edge {
                    relay.relayed.remove(&(user.clone(), device.clone()));
                }
            }
            (relay.relay.next_due(), edges)
        };
        for edge in edges {
            let (user, command) = match edge {
                SyncEdge::Started { user, device } => (
                    user,
                    ClusterCommand::SyncStart {
                        device: device.map(OwnedDeviceId::from),
                        presence: None,
                    },
                ),
                SyncEdge::Stopped { user, device, .. } => (
                    user,
                    ClusterCommand::SyncEnd {
                        device: device.map(OwnedDeviceId::from),
                    },
                ),
            };
            if let Ok(user) = <&UserId>::try_from(user.as_str()) {
                link.send(user, command);
            }
        }
        // Epochs are looked at at least once a second.
        let wait = due.map_or(Duration::from_secs(1), |at| {
            at.saturating_since(now).min(Duration::from_secs(1))
        });
        // Holding the link while waiting delays the task's end after the
        // link is dropped by at most this wait.
        let _ = tokio::time::timeout(wait, link.relay_moved.notified()).await;
    }
}
