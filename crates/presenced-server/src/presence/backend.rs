//! The one seam between the presence driver and where presence lives:
//! [`Backend`], chosen once at start-up ([`super::PresenceService::start`]
//! or [`super::PresenceService::start_cluster`]).
//!
//! - [`single`](super::single): one process; inputs go to the local
//!   engine, states are committed to this server's database, a token is
//!   the engine's stream position.
//! - [`cluster`](super::cluster): a node among several; inputs become
//!   commands for the user's partition owner, states live in the
//!   partitions' logs, a token is the logs' vector.
//!
//! A closed enum, not a trait: there are exactly two back ends, both in
//! this crate; the hot paths (`PUT`, `/sync`) are async and stay unboxed;
//! and a method added here must be answered by both, which the compiler
//! checks at the one `match` per method below. Everything outside this
//! folder talks to [`super::PresenceService`] and never learns which back
//! end it has: federation's sharding ([`FederationShards`]), health
//! ([`BackendHealth`]) and the room feed go through here too.
//!
//! Where accounts, tokens and room memberships come from (presenced's own
//! store, or Synapse in companion mode) is another seam, the homeserver's:
//! it feeds this one memberships and activity and is independent of it.

use std::sync::Arc;

use presenced_engine::{Presence, PresenceState, RemotePresence, StreamPos};
use ruma_common::{DeviceId, OwnedUserId, ServerName, UserId};
use tokio::sync::{mpsc, oneshot};

use super::cluster::link::ClusterLink;
pub use super::cluster::link::ShardNews;
pub use super::cluster::tokens::ForgetTokens;
use super::cluster::ClusterBackend;
use super::single::SingleNode;
use super::token::PresenceToken;
use super::{PresenceService, PresenceWriteError, SyncEffect, SyncPresence, SyncRequest};

/// Where this process's presence lives.
pub(super) enum Backend {
    Single(SingleNode),
    Cluster(ClusterBackend),
}

impl Backend {
    /// The engine's `Persist`; the receiver (if any) answers once stored.
    pub(super) fn persist(
        &self,
        states: Vec<(StreamPos, PresenceState)>,
    ) -> Option<oneshot::Receiver<bool>> {
        match self {
            Self::Single(single) => single.persist(states),
            Self::Cluster(cluster) => {
                cluster.persist(states);
                None
            }
        }
    }

    /// The engine's `PersistFullPresence`: node-local stream positions, so
    /// nothing for a cluster node to keep.
    pub(super) fn persist_marks(&self, users: Vec<OwnedUserId>, at: StreamPos) {
        match self {
            Self::Single(single) => single.persist_marks(users, at),
            Self::Cluster(_) => {}
        }
    }

    /// The engine's `Forget`: a cluster node keeps no remote users' rows.
    pub(super) fn forget(&self, forget: Vec<(OwnedUserId, StreamPos)>) {
        match self {
            Self::Single(single) => single.forget(forget),
            Self::Cluster(_) => {}
        }
    }

    pub(super) async fn set_presence(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
        presence: Presence,
        status_msg: Option<&str>,
    ) -> Result<(), PresenceWriteError> {
        match self {
            Self::Single(single) => {
                (single.set_presence(service, user, device, presence, status_msg)).await
            }
            Self::Cluster(cluster) => {
                (cluster.set_presence(user, device, presence, status_msg)).await
            }
        }
    }

    pub(super) fn activity(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
    ) {
        match self {
            Self::Single(single) => single.activity(service, user, device),
            Self::Cluster(cluster) => cluster.activity(user, device),
        }
    }

    pub(super) fn deactivate(&self, service: &PresenceService, user: &UserId) {
        match self {
            Self::Single(single) => single.deactivate(service, user),
            Self::Cluster(cluster) => cluster.deactivate(user),
        }
    }

    /// The module API's `set_presence_for_users`.
    pub(super) fn module_set(
        &self,
        service: &PresenceService,
        users: Vec<(OwnedUserId, Presence, Option<String>)>,
    ) {
        match self {
            Self::Single(single) => single.module_set(service, users),
            Self::Cluster(cluster) => cluster.module_set(users),
        }
    }

    pub(super) fn remote_presence(
        &self,
        service: &PresenceService,
        origin: &ServerName,
        entries: Vec<RemotePresence>,
    ) -> usize {
        match self {
            Self::Single(single) => single.remote_presence(service, origin, entries),
            Self::Cluster(cluster) => cluster.remote_presence(origin, entries),
        }
    }

    /// Whether the sync counts (its device syncs until the guard drops).
    pub(super) async fn start_syncing(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
        effect: SyncEffect,
    ) -> bool {
        match self {
            Self::Single(single) => single.start_syncing(service, user, device, effect),
            Self::Cluster(_) if effect == SyncEffect::None => false,
            Self::Cluster(cluster) => {
                // Boxed, like the cluster's sync below: each `/sync`
                // request's future holds this one inline, and a single
                // node's long-polls would otherwise each carry the
                // cluster's larger future (0.8 KiB more each, measured
                // with scripts/longpoll-memory).
                Box::pin(cluster.start_syncing(user, device, effect)).await;
                true
            }
        }
    }

    pub(super) fn end_sync(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
    ) {
        match self {
            Self::Single(single) => single.end_sync(service, user, device),
            Self::Cluster(cluster) => cluster.end_sync(user, device),
        }
    }

    pub(super) async fn sync(
        &self,
        service: &PresenceService,
        request: SyncRequest<'_>,
    ) -> SyncPresence {
        match self {
            Self::Single(single) => single.sync(service, request).await,
            Self::Cluster(cluster) => Box::pin(cluster.sync(service, request)).await,
        }
    }

    pub(super) fn token(&self, service: &PresenceService) -> PresenceToken {
        match self {
            Self::Single(single) => single.token(service),
            Self::Cluster(cluster) => cluster.token(),
        }
    }

    /// A membership change reached the engine at `engine_position`, from
    /// room stream position `stream` (a cluster token's room position
    /// maps to "meetings after it"; a single node's token needs nothing).
    pub(super) fn note_room_position(&self, stream: i64, engine_position: StreamPos) {
        match self {
            Self::Single(_) => {}
            Self::Cluster(cluster) => cluster.note_room_position(stream, engine_position),
        }
    }

    /// Whether a room write of this process, as its feed delivers it,
    /// still has to reach the engine: a cluster node's room follower
    /// applied it already, before its room position moved past it.
    pub(super) fn applies_written_memberships(&self) -> bool {
        matches!(self, Self::Single(_))
    }

    /// Shutdown: a single node writes every state to its database; a
    /// cluster node stops and leaves its partitions to the others.
    pub(super) fn shut_down(&self, service: &PresenceService) {
        match self {
            Self::Single(single) => single.shut_down(service),
            Self::Cluster(cluster) => cluster.shut_down(),
        }
    }

    /// Tokens that died on this process: a cluster node tells the others
    /// (and waits for them) to drop them from their caches.
    pub(super) async fn tokens_revoked(&self, user: &UserId, device: Option<&DeviceId>) {
        if let Self::Cluster(cluster) = self {
            if let Some(link) = cluster.link() {
                super::cluster::tokens::revoke(link, user, device).await;
            }
        }
    }

    /// Where a cluster node drops the tokens other nodes report dead.
    pub(super) fn on_tokens_revoked(&self, forget: ForgetTokens) {
        if let Self::Cluster(cluster) = self {
            match cluster.link() {
                Some(link) => super::cluster::tokens::listen(link.clone(), forget),
                None => tracing::error!("token revocations cannot be heard before the node starts"),
            }
        }
    }

    /// Whether a process-local token cache may be used now: always on a
    /// single node; on a cluster node, while it hears the bus.
    pub(super) fn token_cache_trusted(&self) -> bool {
        match self {
            Self::Single(_) => true,
            Self::Cluster(cluster) => cluster
                .link()
                .is_some_and(|link| super::cluster::tokens::cache_trusted(link)),
        }
    }

    pub(super) fn federation_shards(&self) -> FederationShards {
        match self {
            Self::Single(_) => FederationShards { node: None },
            Self::Cluster(cluster) => FederationShards {
                node: cluster.link().cloned(),
            },
        }
    }

    pub(super) fn health(&self) -> BackendHealth {
        let Self::Cluster(cluster) = self else {
            return BackendHealth::default();
        };
        let Some(link) = cluster.link() else {
            return BackendHealth {
                unavailable: Some("the cluster node is starting".to_owned()),
                report: None,
            };
        };
        BackendHealth {
            unavailable: link.cut_off().then(|| {
                format!(
                    "cut off from the cluster's NATS servers for {} s (lease {} s)",
                    link.silent_for().as_secs(),
                    link.lease().as_secs()
                )
            }),
            // For operators and tests: which node this is, what it owns,
            // and how far it has applied the presence log (per partition);
            // comparing nodes shows replication lag.
            report: Some(serde_json::json!({
                "node": link.name(),
                "owned_partitions": link.owned_partitions(),
                "applied": link.applied().0,
            })),
        }
    }
}

/// Which destinations this process sends federation presence to: all of
/// them on a single node; on a cluster node, those of the partitions it
/// owns (outgoing federation is sharded by destination).
#[derive(Clone)]
pub struct FederationShards {
    node: Option<Arc<ClusterLink>>,
}

impl FederationShards {
    /// Whether this process sends to `destination` now.
    pub fn sends_to(&self, destination: &ServerName) -> bool {
        self.node
            .as_ref()
            .is_none_or(|link| link.sends_to(destination))
    }

    /// States for `destination` were queued in the shared outbox and
    /// another node sends to it: tells that node (best effort).
    pub fn hand_over(&self, destination: &ServerName) {
        if let Some(link) = &self.node {
            link.federation_queued(destination);
        }
    }

    /// News for the senders when the shards they follow move: `None` when
    /// they never move (a single node sends to every destination).
    pub fn news(&self) -> Option<mpsc::UnboundedReceiver<ShardNews>> {
        self.node.as_ref().map(|link| link.federation_news())
    }
}

/// How the presence back end is doing, for the health check.
#[derive(Debug, Default)]
pub struct BackendHealth {
    /// Why this process should not get traffic now, if it should not.
    pub unavailable: Option<String>,
    /// What the back end reports about itself (a cluster node: its name,
    /// partitions and applied log positions).
    pub report: Option<serde_json::Value>,
}
