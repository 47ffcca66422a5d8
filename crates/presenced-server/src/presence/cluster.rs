//! Cluster mode's back end: the presence driver of a node among several
//! sharing one NATS JetStream (docs/cluster.md has the protocol).
//!
//! A node owns some of the 16 partitions. For a user of an owned partition
//! the engine runs the state machine and timers (as on a single node); for
//! every other user it holds the replica's state, applied as records
//! arrive. Client inputs (PUT, activity, sync edges, module calls) become
//! typed [`ClusterCommand`]s sent to the owner, whichever node received
//! them; the owner's engine applies the command ([`driver`]) and the state
//! it computes is written to the partition's log, from which every node's
//! replica, and engine, learns it. The answer to a PUT waits for this
//! node's replica to apply the write (read-your-writes on the node the
//! client talks to).
//!
//! What stays node-local: router calls (each node runs the modules),
//! wake-ups, and the engine's stream positions; a sync token is the vector
//! of the logs' sequences ([`sync`]). Outgoing federation is sharded by
//! destination over the same partitions ([`link::ShardNews`]).
//!
//! Everything of cluster mode in the server is in this folder: the
//! commands, the driver, the link to the running node, joining at
//! start-up ([`join`]), room marks and the sync view.

pub mod command;
mod driver;
pub mod join;
pub mod link;
pub mod room_marks;
mod sync;
pub mod tokens;

use std::sync::{Arc, Mutex, OnceLock};

use presenced_engine::{Presence, PresenceState, RemotePresence, StreamPos};
use ruma_common::{DeviceId, OwnedUserId, ServerName, UserId};

pub use self::command::ClusterCommand;
pub(super) use self::driver::ClusterDriver;
use self::link::ClusterLink;
use self::room_marks::RoomMarks;
use super::token::PresenceToken;
use super::{PresenceService, PresenceWriteError, SyncEffect, SyncPresence, SyncRequest};

/// The cluster back end of one node.
pub(super) struct ClusterBackend {
    /// The engine's side of the node, bound to the service.
    driver: Arc<ClusterDriver>,
    /// The running node; set once, right after the node starts (the node
    /// needs the driver bound first).
    link: OnceLock<Arc<ClusterLink>>,
    /// Room stream positions of membership changes and the engine
    /// positions they got.
    room_marks: Mutex<RoomMarks>,
}

impl ClusterBackend {
    /// A back end whose node is not started yet ([`Self::start_node`]).
    pub(super) fn new(start_position: StreamPos) -> Self {
        Self {
            driver: Arc::new(ClusterDriver::new()),
            link: OnceLock::new(),
            room_marks: Mutex::new(RoomMarks::new(start_position)),
        }
    }

    /// Binds the driver to `service`, then starts the node under it.
    pub(super) fn start_node(&self, service: &PresenceService, joining: join::Joined) {
        self.driver.bind(service);
        let link = ClusterLink::start(
            &joining.node_name,
            joining.bus,
            joining.timing,
            self.driver.clone(),
        );
        let _ = self.link.set(link);
    }

    /// The running node (`None` only while it starts).
    pub(super) fn link(&self) -> Option<&Arc<ClusterLink>> {
        self.link.get()
    }

    /// The engine's `Persist`: the partition's log is the store, and only
    /// owned users' states come out of the engine here.
    pub(super) fn persist(&self, states: Vec<(StreamPos, PresenceState)>) {
        match self.link() {
            Some(link) => {
                for (_, state) in &states {
                    link.publish(state);
                }
            }
            None => tracing::warn!(
                states = states.len(),
                "presence computed before the cluster node started is not logged"
            ),
        }
    }

    pub(super) async fn set_presence(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        presence: Presence,
        status_msg: Option<&str>,
    ) -> Result<(), PresenceWriteError> {
        let command = ClusterCommand::Set {
            device: device.map(ToOwned::to_owned),
            presence,
            status_msg: status_msg.map(str::to_owned),
        };
        let link = self.link().ok_or_else(starting)?;
        (link.write(user, &command).await)
            .map_err(|e| PresenceWriteError::Unavailable(e.to_string()))
    }

    /// Sends a command without waiting for it (see [`ClusterLink::send`]).
    fn send(&self, user: &UserId, command: ClusterCommand) {
        if let Some(link) = self.link() {
            link.send(user, command);
        }
    }

    pub(super) fn activity(&self, user: &UserId, device: Option<&DeviceId>) {
        let device = device.map(ToOwned::to_owned);
        self.send(user, ClusterCommand::Activity { device });
    }

    pub(super) fn deactivate(&self, user: &UserId) {
        self.send(user, ClusterCommand::Deactivate);
    }

    pub(super) fn module_set(&self, users: Vec<(OwnedUserId, Presence, Option<String>)>) {
        for (user, presence, status_msg) in users {
            self.send(
                &user,
                ClusterCommand::ModuleSet {
                    presence,
                    status_msg,
                },
            );
        }
    }

    /// Each remote user's partition owner applies it (cap, timers, the
    /// log); the transaction is answered without waiting.
    pub(super) fn remote_presence(
        &self,
        origin: &ServerName,
        entries: Vec<RemotePresence>,
    ) -> usize {
        let mut sent = 0;
        for entry in entries {
            if entry.user_id.server_name() != origin {
                continue;
            }
            let command = ClusterCommand::Remote {
                origin: origin.to_owned(),
                presence: entry.presence,
                last_active_ago: entry.last_active_ago,
                currently_active: entry.currently_active,
                status_msg: entry.status_msg,
            };
            self.send(&entry.user_id, command);
            sent += 1;
        }
        sent
    }

    /// A counted sync starts (`effect` is not [`SyncEffect::None`]): the
    /// owner hears of it before this returns, or after a bounded wait
    /// ([`ClusterLink::write_sync_edge`]).
    pub(super) async fn start_syncing(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        effect: SyncEffect,
    ) {
        let Some(link) = self.link() else {
            return;
        };
        if let Some(edge) = link.sync_started(user, device, effect) {
            link.write_sync_edge(user, &edge).await;
        }
    }

    pub(super) fn end_sync(&self, user: &UserId, device: Option<&DeviceId>) {
        if let Some(link) = self.link() {
            link.sync_ended(user, device);
        }
    }

    pub(super) async fn sync(
        &self,
        service: &PresenceService,
        request: SyncRequest<'_>,
    ) -> SyncPresence {
        match self.link() {
            Some(link) => sync::sync(service, self, link, request).await,
            None => SyncPresence {
                states: Vec::new(),
                next: request.since.unwrap_or_else(|| self.token()),
            },
        }
    }

    /// The vector of what this node has applied.
    pub(super) fn token(&self) -> PresenceToken {
        PresenceToken::Vector(self.link().map(|l| l.applied()).unwrap_or_default())
    }

    /// A membership change at room stream position `stream` reached the
    /// engine: remembers the engine position it got, so a token's room
    /// position maps to "meetings after it".
    pub(super) fn note_room_position(&self, stream: i64, engine_position: StreamPos) {
        (self.room_marks.lock().unwrap_or_else(|p| p.into_inner())).note(stream, engine_position);
    }

    /// The engine position up to which meetings are covered by a token
    /// whose room position is `at`.
    fn meetings_position(&self, at: i64) -> StreamPos {
        (self.room_marks.lock().unwrap_or_else(|p| p.into_inner())).position_for(at)
    }

    /// Shutdown: the node stops; its leases run out and other nodes take
    /// its partitions (its presence lives in the cluster's logs).
    pub(super) fn shut_down(&self) {
        if let Some(link) = self.link() {
            link.stop();
        }
    }
}

fn starting() -> PresenceWriteError {
    PresenceWriteError::Unavailable("the cluster node is starting".to_owned())
}
