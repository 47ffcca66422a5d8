//! The single-node back end: one process holds every user's presence and
//! commits what the engine asks to store to this server's database.
//!
//! Inputs go straight to the local engine; `PUT /presence` answers once
//! its commit is done (the writer groups commits, [`writer`]). A sync
//! token is the engine's own stream position.

mod sync;
mod writer;

use std::sync::Arc;

use presenced_engine::{Presence, PresenceState, RemotePresence, StreamPos};
use ruma_common::{DeviceId, OwnedUserId, ServerName, UserId};
use tokio::sync::oneshot;

use self::writer::{spawn_persist_thread, PersistJob};
use super::token::PresenceToken;
use super::{PresenceService, PresenceWriteError, SyncEffect, SyncPresence, SyncRequest};
use crate::store::presence::{PresenceStore, StoreFailure};

/// The single-node back end: the presence writer and its store.
pub(super) struct SingleNode {
    persist_tx: std::sync::mpsc::Sender<PersistJob>,
    /// The store the writer thread commits to, for the shutdown flush.
    store: Arc<dyn PresenceStore>,
}

impl SingleNode {
    /// Starts the presence writer over `store`.
    pub(super) fn start(store: Arc<dyn PresenceStore>) -> Self {
        Self {
            persist_tx: spawn_persist_thread(store.clone()),
            store,
        }
    }

    /// Queues a commit; the receiver answers once it is done (or failed).
    fn queue(
        &self,
        states: Vec<(StreamPos, PresenceState)>,
        marks: Vec<(OwnedUserId, StreamPos)>,
        forget: Vec<(OwnedUserId, StreamPos)>,
    ) -> oneshot::Receiver<bool> {
        let (done, committed) = oneshot::channel();
        let _ = self.persist_tx.send(PersistJob {
            states,
            marks,
            forget,
            done,
        });
        committed
    }

    /// The engine's `Persist`: notified states, committed in groups.
    pub(super) fn persist(
        &self,
        states: Vec<(StreamPos, PresenceState)>,
    ) -> Option<oneshot::Receiver<bool>> {
        Some(self.queue(states, Vec::new(), Vec::new()))
    }

    /// The engine's `PersistFullPresence`. Nobody waits for this commit:
    /// the module call that caused it has no answer to hold back.
    pub(super) fn persist_marks(&self, users: Vec<OwnedUserId>, at: StreamPos) {
        let marks = users.into_iter().map(|u| (u, at)).collect();
        self.queue(Vec::new(), marks, Vec::new());
    }

    /// The engine's `Forget`: remote users dropped to keep within the cap.
    pub(super) fn forget(&self, forget: Vec<(OwnedUserId, StreamPos)>) {
        self.queue(Vec::new(), Vec::new(), forget);
    }

    /// `PUT /presence`: answered once its commit is done.
    pub(super) async fn set_presence(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
        presence: Presence,
        status_msg: Option<&str>,
    ) -> Result<(), PresenceWriteError> {
        let ((), stored) = service
            .drive_durable(|e, now| e.handle_set_presence(now, user, device, presence, status_msg));
        for committed in stored {
            if committed.await != Ok(true) {
                return Err(StoreFailure::new("presence change not stored").into());
            }
        }
        Ok(())
    }

    pub(super) fn activity(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
    ) {
        service.drive(|e, now| e.handle_activity(now, user, device));
    }

    pub(super) fn deactivate(&self, service: &PresenceService, user: &UserId) {
        service.drive(|e, now| e.handle_deactivate(now, user));
    }

    pub(super) fn module_set(
        &self,
        service: &PresenceService,
        users: Vec<(OwnedUserId, Presence, Option<String>)>,
    ) {
        service.drive(|e, now| e.set_presence_for_users(now, users));
    }

    pub(super) fn remote_presence(
        &self,
        service: &PresenceService,
        origin: &ServerName,
        entries: Vec<RemotePresence>,
    ) -> usize {
        service.drive(|e, now| e.handle_remote_presence(now, origin, entries))
    }

    /// Whether the device now counts as syncing.
    pub(super) fn start_syncing(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
        effect: SyncEffect,
    ) -> bool {
        match effect {
            SyncEffect::None => false,
            SyncEffect::KeepAlive => {
                service.drive(|e, now| e.handle_sync_keepalive_start(now, user, device))
            }
            SyncEffect::Set(p) => service.drive(|e, now| e.handle_sync_start(now, user, device, p)),
        }
    }

    pub(super) fn end_sync(
        &self,
        service: &PresenceService,
        user: &UserId,
        device: Option<&DeviceId>,
    ) {
        service.drive(|e, now| e.handle_sync_end(now, user, device));
    }

    pub(super) async fn sync(
        &self,
        service: &PresenceService,
        request: SyncRequest<'_>,
    ) -> SyncPresence {
        sync::sync(service, request).await
    }

    /// The engine's position: a single node's token.
    pub(super) fn token(&self, service: &PresenceService) -> PresenceToken {
        PresenceToken::Local(service.position())
    }

    /// Shutdown: every state (timestamps that changed without a
    /// notification included) goes to the database.
    pub(super) fn shut_down(&self, service: &PresenceService) {
        service.flush(&*self.store);
    }
}
