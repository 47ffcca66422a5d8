//! Who shares rooms with whom in companion mode: the membership changes
//! Synapse pushes as application-service transactions, stored and applied
//! to presence once.
//!
//! A transaction body is `{"events": [...]}` with every event of every
//! room (the registration's `@.*` namespace); only `m.room.member` state
//! events matter here. Each is checked on its own: a bad one is logged
//! and skipped, never a reason to refuse the others, as Synapse would
//! re-send the same transaction forever. The store keeps the newest event
//! of each (room, user) (`store::companion`), and only the changes it
//! kept reach presence, the way presenced's own rooms' changes do
//! (`PresenceService::apply_membership`): a join joins, an invite makes
//! the two meet, a leave, kick, ban or knock leaves. On a cluster node
//! presence hears them through `cluster_changes`, from the store, so every
//! node hears each change once whichever node received it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use presenced_engine::{Membership, Timestamp};
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cluster_changes::ChangeFollower;
use crate::config::Secret;
use crate::presence::PresenceService;
use crate::store::companion::{AppliedMembership, MembershipEvent, RoomMembership};
use crate::store::{blocking, Store, StoreError};

/// The event type that carries memberships.
const MEMBER_EVENT: &str = "m.room.member";

/// The membership feed: the store, the presence driver, and the token
/// Synapse proves itself with. A command run beside the server
/// (`presenced synapse-resync`) has neither: it only stores.
pub struct MembershipFeed {
    store: Arc<dyn Store>,
    presence: Option<PresenceService>,
    hs_token: Option<Secret>,
    /// Cluster mode: presence hears the stored changes in storage order,
    /// this node's and the others' alike, rather than straight after a
    /// store.
    follower: Option<ChangeFollower>,
    /// Changes told to presence since start-up (a change told twice would
    /// count twice).
    told: AtomicU64,
}

/// Why a transaction was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The body is not a transaction (`{"events": [...]}`); 400.
    #[error("{0}")]
    Malformed(String),
    /// The store failed; Synapse will retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking store task panicked or was cancelled.
    #[error("membership store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl MembershipFeed {
    /// A feed writing to `store` and telling `presence`; pushes must carry
    /// `hs_token`.
    pub fn new(store: Arc<dyn Store>, presence: PresenceService, hs_token: Secret) -> Self {
        Self {
            store,
            presence: Some(presence),
            hs_token: Some(hs_token),
            follower: None,
            told: AtomicU64::new(0),
        }
    }

    /// A cluster node's feed: presence hears every stored change after
    /// change number `position` (read before the view seeded presence),
    /// from the store, whichever node stored it. Call
    /// [`cluster_changes::spawn`](super::cluster_changes::spawn) to follow
    /// the other nodes' changes.
    pub fn following_from(mut self, position: i64) -> Self {
        self.follower = Some(ChangeFollower::from(position));
        self
    }

    /// A feed that only stores (a command beside the server, which has no
    /// presence driver and accepts no pushes): the server applies what it
    /// stored to presence at its next start.
    pub fn store_only(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            presence: None,
            hs_token: None,
            follower: None,
            told: AtomicU64::new(0),
        }
    }

    /// Whether `given` is the registration's `hs_token`. Compared as
    /// SHA-256 digests with no early exit, so the time taken says nothing
    /// about how much of a guess was right.
    pub fn hs_token_matches(&self, given: &str) -> bool {
        let Some(hs_token) = &self.hs_token else {
            return false;
        };
        let expected = Sha256::digest(hs_token.expose().as_bytes());
        let given = Sha256::digest(given.as_bytes());
        expected
            .iter()
            .zip(given.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    /// Stores transaction `txn_id` (its body as Synapse sent it) and tells
    /// presence what changed. Returns once the transaction is stored; a
    /// transaction stored before changes nothing. Returns how many
    /// memberships changed.
    pub async fn apply_transaction(&self, txn_id: &str, body: &[u8]) -> Result<usize, FeedError> {
        let events = parse_transaction(body)?;
        let txn_id = txn_id.to_owned();
        let applied = blocking(&self.store, move |s| {
            s.apply_membership_transaction(&txn_id, &events)
        })
        .await??;
        self.tell(&applied).await;
        Ok(applied.len())
    }

    /// Stores memberships read from Synapse's admin API (the bootstrap)
    /// under the same ordering rule, and tells presence what changed.
    pub async fn apply_state(&self, events: Vec<MembershipEvent>) -> Result<usize, FeedError> {
        let applied = blocking(&self.store, move |s| s.upsert_memberships(&events)).await??;
        self.tell(&applied).await;
        Ok(applied.len())
    }

    /// Whether no membership is stored yet (the bootstrap never ran).
    pub async fn is_empty(&self) -> Result<bool, FeedError> {
        Ok(!blocking(&self.store, |s| s.companion_has_memberships()).await??)
    }

    /// How many changes presence has heard from this feed since start-up.
    pub fn changes_told(&self) -> u64 {
        self.told.load(Ordering::Relaxed)
    }

    /// Cluster mode: tells presence the changes any node stored since the
    /// last catch-up, each once and in storage order. Returns how many.
    pub async fn catch_up(&self) -> Result<usize, FeedError> {
        let Some(follower) = &self.follower else {
            return Ok(0);
        };
        (follower)
            .catch_up(&self.store, |changes| self.tell_presence(changes))
            .await
    }

    /// After a store: a single node tells presence what it kept; a cluster
    /// node catches up from the store, which includes what it just kept
    /// (a failed read is retried by the periodic catch-up).
    async fn tell(&self, applied: &[AppliedMembership]) {
        if self.follower.is_none() {
            self.tell_presence(applied);
        } else if let Err(e) = self.catch_up().await {
            tracing::warn!("telling presence the stored membership changes: {e}");
        }
    }

    fn tell_presence(&self, applied: &[AppliedMembership]) {
        let Some(presence) = &self.presence else {
            return;
        };
        self.told.fetch_add(applied.len() as u64, Ordering::Relaxed);
        for change in applied {
            let event = &change.event;
            let (room, user) = (&event.room_id, &event.user_id);
            match presence_change(change.previous, event.membership) {
                Some(PresenceChange::Join) => presence.membership(room, user, Membership::Join),
                Some(PresenceChange::Leave) => presence.membership(room, user, Membership::Leave),
                Some(PresenceChange::Invite) => presence.invite(room, user, &event.sender),
                None => {}
            }
        }
    }
}

/// What a stored change means for presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PresenceChange {
    Join,
    Leave,
    Invite,
}

/// A new event for the same membership (a profile change re-sends
/// `join`) changes nothing; a leave of someone never seen in the room has
/// nothing to undo.
fn presence_change(
    previous: Option<RoomMembership>,
    now: RoomMembership,
) -> Option<PresenceChange> {
    use RoomMembership::*;
    match now {
        _ if previous == Some(now) => None,
        Join => Some(PresenceChange::Join),
        Invite => Some(PresenceChange::Invite),
        Leave | Ban | Knock => match previous {
            Some(Join | Invite) => Some(PresenceChange::Leave),
            _ => None,
        },
    }
}

/// The membership events of a transaction body, bad ones left out (and
/// logged); an error only when the body is not a transaction at all.
pub fn parse_transaction(body: &[u8]) -> Result<Vec<MembershipEvent>, FeedError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FeedError::Malformed(format!("the transaction is not JSON: {e}")))?;
    let events = value
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            FeedError::Malformed("a transaction is an object with an \"events\" array".to_owned())
        })?;
    Ok(membership_events(events, None))
}

/// The valid membership events among `events`; `room` fills in a missing
/// `room_id` (the admin API's room state may leave it out).
pub fn membership_events(events: &[Value], room: Option<&RoomId>) -> Vec<MembershipEvent> {
    events
        .iter()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some(MEMBER_EVENT))
        .filter_map(|e| match membership_event(e, room) {
            Ok(event) => Some(event),
            Err(reason) => {
                let id = e.get("event_id").and_then(Value::as_str).unwrap_or("?");
                tracing::warn!(event_id = id, "skipping a membership event: {reason}");
                None
            }
        })
        .collect()
}

/// One `m.room.member` event, or what is wrong with it.
fn membership_event(event: &Value, room: Option<&RoomId>) -> Result<MembershipEvent, String> {
    let text = |key: &str| event.get(key).and_then(Value::as_str);
    let room_id: OwnedRoomId = match (text("room_id"), room) {
        (Some(id), _) => id.parse().map_err(|e| format!("room_id {id:?}: {e}"))?,
        (None, Some(room)) => room.to_owned(),
        (None, None) => return Err("no room_id".to_owned()),
    };
    let state_key = text("state_key").ok_or("no state_key")?;
    let user_id: OwnedUserId = (state_key.parse())
        .map_err(|e| format!("state_key {state_key:?} is not a user ID: {e}"))?;
    let sender = text("sender").ok_or("no sender")?;
    let sender: OwnedUserId = (sender.parse()).map_err(|e| format!("sender {sender:?}: {e}"))?;
    let event_id = text("event_id").ok_or("no event_id")?;
    let event_id: OwnedEventId =
        (event_id.parse()).map_err(|e| format!("event_id {event_id:?}: {e}"))?;
    let origin_server_ts = (event.get("origin_server_ts").and_then(Value::as_u64))
        .ok_or("no origin_server_ts (a non-negative integer)")?;
    let membership = (event.pointer("/content/membership").and_then(Value::as_str))
        .ok_or("no content.membership")?
        .parse()?;
    Ok(MembershipEvent {
        room_id,
        user_id,
        sender,
        membership,
        origin_server_ts: Timestamp(origin_server_ts),
        event_id,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn member(user: &str, membership: &str, ts: u64) -> Value {
        json!({
            "type": "m.room.member", "room_id": "!r:y.org", "state_key": user,
            "sender": user, "event_id": format!("$e{ts}"), "origin_server_ts": ts,
            "content": {"membership": membership},
        })
    }

    #[test]
    fn only_valid_membership_events_are_kept() {
        let mut no_ts = member("@c:y.org", "join", 3);
        no_ts.as_object_mut().unwrap().remove("origin_server_ts");
        let body = json!({
            "events": [
                member("@a:y.org", "join", 1),
                {"type": "m.room.message", "room_id": "!r:y.org", "sender": "@a:y.org",
                 "event_id": "$m", "origin_server_ts": 2, "content": {"body": "hi"}},
                no_ts,
                member("not a user", "join", 4),
                member("@d:y.org", "joined", 5),
                member("@e:y.org", "ban", 6),
            ],
            "ephemeral": [],
        });
        let events = parse_transaction(body.to_string().as_bytes()).unwrap();
        let kept: Vec<_> = events
            .iter()
            .map(|e| (e.user_id.as_str(), e.membership))
            .collect();
        assert_eq!(
            kept,
            [
                ("@a:y.org", RoomMembership::Join),
                ("@e:y.org", RoomMembership::Ban)
            ]
        );
        assert_eq!(events[0].origin_server_ts, Timestamp(1));
    }

    #[test]
    fn a_body_that_is_not_a_transaction_is_refused() {
        for body in [&b"{"[..], b"[]", b"{\"events\": 3}", b"{}"] {
            assert!(matches!(
                parse_transaction(body),
                Err(FeedError::Malformed(_))
            ));
        }
        assert!(parse_transaction(b"{\"events\": []}").unwrap().is_empty());
    }

    #[test]
    fn the_admin_api_room_fills_a_missing_room_id() {
        let mut event = member("@a:y.org", "join", 1);
        event.as_object_mut().unwrap().remove("room_id");
        let room: OwnedRoomId = "!s:y.org".parse().unwrap();
        let events = membership_events(&[event.clone()], Some(&room));
        assert_eq!(events[0].room_id, room);
        assert!(membership_events(&[event], None).is_empty());
    }

    #[test]
    fn presence_hears_only_real_changes() {
        use RoomMembership::*;
        let join = Some(PresenceChange::Join);
        let leave = Some(PresenceChange::Leave);
        assert_eq!(presence_change(None, Join), join);
        assert_eq!(presence_change(Some(Invite), Join), join);
        assert_eq!(presence_change(Some(Join), Join), None, "a profile change");
        assert_eq!(presence_change(None, Invite), Some(PresenceChange::Invite));
        assert_eq!(presence_change(Some(Join), Ban), leave);
        assert_eq!(
            presence_change(Some(Invite), Leave),
            leave,
            "a rejected invite"
        );
        assert_eq!(presence_change(None, Leave), None);
        assert_eq!(presence_change(Some(Leave), Ban), None);
    }
}
