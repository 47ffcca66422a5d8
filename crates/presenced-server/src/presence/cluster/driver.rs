//! The engine behind the cluster crate's [`PresenceDriver`] seam: what a
//! partition owner does with a command, and how this node's engine
//! follows the logs it replicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock, Weak};

use presenced_cluster::record::{decode_state, encode_state, Command, StateRecord};
use presenced_cluster::{PresenceDriver, PARTITIONS};
use presenced_engine::RemotePresence;
use ruma_common::{OwnedDeviceId, OwnedUserId};

use super::command::ClusterCommand;
use super::link::ShardNews;
use crate::presence::{Inner, PresenceService};

/// A user's device (`None`: a request without one).
type DeviceKey = (OwnedUserId, Option<OwnedDeviceId>);

/// The engine behind the cluster crate's seam.
pub struct ClusterDriver {
    /// The service whose engine this drives; weak, since the service holds
    /// the node that holds this driver.
    service: OnceLock<Weak<Inner>>,
    owned: Mutex<[bool; PARTITIONS as usize]>,
    /// Users this node computed states for, per partition, so giving a
    /// partition up reaches all of them (also those whose write failed).
    seen: Mutex<BTreeMap<u16, BTreeSet<OwnedUserId>>>,
    /// Per owned (user, device): the nodes that told this owner the device
    /// syncs there. Makes their sync edges idempotent, so a node that
    /// re-announces its devices after a takeover never counts twice.
    syncing: Mutex<HashMap<DeviceKey, BTreeSet<String>>>,
    /// Nodes whose devices count here but that were not alive at the last
    /// look: still gone at the next, their devices stop syncing.
    missing: Mutex<BTreeSet<String>>,
}

impl ClusterDriver {
    pub fn new() -> Self {
        Self {
            service: OnceLock::new(),
            owned: Mutex::new([false; PARTITIONS as usize]),
            seen: Mutex::default(),
            syncing: Mutex::default(),
            missing: Mutex::default(),
        }
    }

    /// Binds the driver to its service (once, before the node starts).
    pub fn bind(&self, service: &PresenceService) {
        let _ = self.service.set(std::sync::Arc::downgrade(&service.inner));
    }

    fn service(&self) -> Option<PresenceService> {
        let inner = self.service.get()?.upgrade()?;
        Some(PresenceService { inner })
    }

    fn owns(&self, partition: u16) -> bool {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())[usize::from(partition)]
    }

    fn set_owned(&self, partition: u16, owned: bool) {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())[usize::from(partition)] = owned;
    }

    fn note(&self, partition: u16, user: &OwnedUserId) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_default()
            .insert(user.clone());
    }
}

impl ClusterDriver {
    /// A node's sync start for a device it already started here is a
    /// presence change at most; its end without a start is nothing.
    /// `None`: nothing to apply.
    fn dedupe_sync_edge(
        &self,
        user: &OwnedUserId,
        sender: &str,
        op: ClusterCommand,
    ) -> Option<ClusterCommand> {
        let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            ClusterCommand::SyncStart { device, presence } => {
                let nodes = syncing.entry((user.clone(), device.clone())).or_default();
                if nodes.insert(sender.to_owned()) {
                    Some(ClusterCommand::SyncStart { device, presence })
                } else {
                    presence.map(|presence| ClusterCommand::SyncPresence { device, presence })
                }
            }
            ClusterCommand::SyncEnd { device } => {
                let key = (user.clone(), device.clone());
                let nodes = syncing.get_mut(&key)?;
                if !nodes.remove(sender) {
                    return None;
                }
                if nodes.is_empty() {
                    syncing.remove(&key);
                }
                Some(ClusterCommand::SyncEnd { device })
            }
            other => Some(other),
        }
    }

    /// Ends the syncs that only nodes gone from the cluster held here
    /// (`live`: the nodes alive now): a node killed while its clients
    /// synced never sends their ends. A node must be missing at two looks
    /// in a row; one that comes back later re-announces its devices.
    pub(super) fn end_syncs_of_dead_nodes(&self, live: &BTreeSet<String>) {
        let ended: Vec<DeviceKey> = {
            let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
            let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            let now_missing: BTreeSet<String> = (syncing.values().flatten())
                .filter(|node| !live.contains(*node))
                .cloned()
                .collect();
            let dead: BTreeSet<String> = now_missing.intersection(&missing).cloned().collect();
            *missing = now_missing;
            if dead.is_empty() {
                return;
            }
            let mut ended = Vec::new();
            syncing.retain(|key, nodes| {
                nodes.retain(|node| !dead.contains(node));
                if nodes.is_empty() {
                    ended.push(key.clone());
                }
                !nodes.is_empty()
            });
            ended
        };
        let Some(service) = self.service() else {
            return;
        };
        tracing::info!(
            devices = ended.len(),
            "syncs of nodes gone from the cluster ended"
        );
        service.drive(|e, now| {
            for (user, device) in &ended {
                e.handle_sync_end(now, user, device.as_deref());
            }
        });
    }

    /// Forgets the sync edges of a partition's users (its ownership began
    /// or ended: a new owner starts with no syncing devices).
    fn forget_sync_edges(&self, partition: u16) {
        (self.syncing.lock().unwrap_or_else(|p| p.into_inner()))
            .retain(|(user, _), _| presenced_cluster::partition_of(user.as_str()) != partition);
    }
}

/// The node that sent a command: its ids are `<node>-<counter>`.
fn sender_of(command_id: &str) -> &str {
    command_id
        .rsplit_once('-')
        .map_or(command_id, |(node, _)| node)
}

impl Default for ClusterDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl PresenceDriver for ClusterDriver {
    fn apply(&self, partition: u16, command: &Command) -> Option<serde_json::Value> {
        let service = self.service()?;
        let op: ClusterCommand = match serde_json::from_value(command.state.clone()) {
            Ok(op) => op,
            Err(error) => {
                // A newer node's command this version cannot read, or a
                // value no node of this version writes: refused whole.
                tracing::warn!(%error, id = %command.id, "unreadable cluster command");
                return None;
            }
        };
        if let ClusterCommand::FederationQueued { destination } = op {
            if let Some(link) = service.cluster_link() {
                link.tell_federation(ShardNews::Queued(destination));
            }
            return None;
        }
        let user: OwnedUserId = command.user.as_str().try_into().ok()?;
        self.note(partition, &user);
        let op = self.dedupe_sync_edge(&user, sender_of(&command.id), op)?;
        let state = service.apply_owned(&user, |e, now| match &op {
            ClusterCommand::Set {
                device,
                presence,
                status_msg,
            } => {
                e.handle_set_presence(
                    now,
                    &user,
                    device.as_deref(),
                    *presence,
                    status_msg.as_deref(),
                );
            }
            ClusterCommand::Activity { device } => {
                e.handle_activity(now, &user, device.as_deref());
            }
            ClusterCommand::SyncStart {
                device,
                presence: Some(presence),
            } => {
                e.handle_sync_start(now, &user, device.as_deref(), *presence);
            }
            ClusterCommand::SyncStart {
                device,
                presence: None,
            } => {
                e.handle_sync_keepalive_start(now, &user, device.as_deref());
            }
            ClusterCommand::SyncPresence { device, presence } => {
                // One more sync of a device already counted here: its
                // presence applies and the count stays as it was.
                let device = device.as_deref();
                if e.handle_sync_start(now, &user, device, *presence) {
                    e.handle_sync_end(now, &user, device);
                }
            }
            ClusterCommand::SyncEnd { device } => {
                e.handle_sync_end(now, &user, device.as_deref());
            }
            ClusterCommand::Remote {
                origin,
                presence,
                last_active_ago,
                currently_active,
                status_msg,
            } => {
                let entry = RemotePresence {
                    user_id: user.clone(),
                    presence: *presence,
                    last_active_ago: *last_active_ago,
                    currently_active: *currently_active,
                    status_msg: status_msg.clone(),
                };
                e.handle_remote_presence(now, origin, [entry]);
            }
            ClusterCommand::Deactivate => e.handle_deactivate(now, &user),
            ClusterCommand::ModuleSet {
                presence,
                status_msg,
            } => {
                e.set_presence_for_users(now, [(user.clone(), *presence, status_msg.clone())]);
            }
            // Handled above: not a user's input.
            ClusterCommand::FederationQueued { .. } => {}
        });
        state.map(|s| encode_state(&s))
    }

    fn replicated(&self, partition: u16, record: &StateRecord) {
        // An owned partition's records are this engine's own writes: now
        // logged, they may be shown, so their watchers look again.
        if self.owns(partition) {
            if let (Some(service), Ok(user)) = (
                self.service(),
                <&ruma_common::UserId>::try_from(record.user.as_str()),
            ) {
                service.drive(|e, _| e.wake_watchers(user));
            }
            return;
        }
        let (Some(service), Some(state)) =
            (self.service(), decode_state(&record.user, &record.state))
        else {
            return;
        };
        service.drive(|e, _| e.handle_replicated_state(state));
    }

    fn owned(&self, partition: u16, users: Vec<StateRecord>) {
        self.forget_sync_edges(partition);
        self.set_owned(partition, true);
        let Some(service) = self.service() else {
            return;
        };
        let ids: Vec<OwnedUserId> = users
            .iter()
            .filter_map(|r| r.user.as_str().try_into().ok())
            .collect();
        tracing::info!(partition, users = ids.len(), "took a presence partition");
        service.drive(|e, _| e.handle_own(ids));
        if let Some(link) = service.cluster_link() {
            link.tell_federation(ShardNews::Gained);
        }
    }

    fn disowned(&self, partition: u16, users: Vec<StateRecord>) {
        self.forget_sync_edges(partition);
        self.set_owned(partition, false);
        let Some(service) = self.service() else {
            return;
        };
        let seen = (self.seen.lock().unwrap_or_else(|p| p.into_inner()))
            .remove(&partition)
            .unwrap_or_default();
        let ids: Vec<OwnedUserId> = seen
            .into_iter()
            .chain(users.iter().filter_map(|r| r.user.as_str().try_into().ok()))
            .collect();
        tracing::info!(partition, "gave a presence partition up");
        service.drive(|e, _| {
            e.handle_disown(ids);
            // What this node computed but could not write gives way to the log.
            for record in &users {
                if let Some(state) = decode_state(&record.user, &record.state) {
                    e.handle_replicated_state(state);
                }
            }
        });
    }
}
