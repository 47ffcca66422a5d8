//! Storage: every SQL statement of the server, behind traits ([`Store`],
//! [`outbox::OutboxStore`], [`companion::CompanionStore`],
//! [`presence::PresenceStore`]).
//!
//! Architecture invariant: only this folder writes SQL (the only one that
//! may use `rusqlite`); it holds no policy, reads no clock, and imports
//! only the leaves (`config`, `util`).
//!
//! [`Store`] is a plain synchronous trait: the SQLite backend
//! (`store::sqlite`) answers from a connection held behind a mutex, and the
//! async code calls it through [`blocking`] (`Homeserver::db`,
//! `AppState::db`), which runs the call on tokio's blocking pool. A
//! PostgreSQL backend can implement the same trait later. Callers pass
//! timestamps in.

pub mod companion;
pub mod membership;
pub mod outbox;
pub mod port;
pub mod postgres;
pub mod presence;
pub(crate) mod server_name;
mod sql_time;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use presenced_engine::Timestamp;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;

use crate::membership::Membership;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create_user` found the user ID taken.
    #[error("user id already taken")]
    UserInUse,
    /// The database was migrated by a newer presenced (`user_version` or
    /// `presenced_schema_version` beyond this binary's migrations).
    #[error(
        "the database has schema version {found}, newer than this presenced knows ({known}); \
         run the newer presenced, or restore a backup"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// The database was made for another `server_name` (see
    /// `server_name.rs`): opening it under this one would keep old tokens
    /// working as the old user IDs and mix two servers' users.
    #[error(
        "this database belongs to server_name {found} ({evidence}), but the config says \
         server_name: {configured}. A server_name cannot change under existing data: its \
         user IDs, rooms and tokens all carry the old one. Set server_name back to {found}, \
         or start {configured} on a fresh data_dir (SQLite) or an empty PostgreSQL \
         database; nothing was changed"
    )]
    ServerNameMismatch {
        /// The name the database holds.
        found: String,
        /// The configured name.
        configured: String,
        /// How the database says so: recorded, or a stored user's ID.
        evidence: String,
    },
    /// The backend failed (I/O, SQL, a poisoned lock).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The full user ID.
    pub user_id: OwnedUserId,
    /// PHC-format password hash; `None` for password-less accounts.
    pub password_hash: Option<String>,
    /// Server admin.
    pub admin: bool,
    /// Creation time.
    pub created_ts: Timestamp,
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The full user ID.
    pub user_id: OwnedUserId,
    /// PHC-format password hash.
    pub password_hash: Option<String>,
    /// Server admin.
    pub admin: bool,
    /// Deactivated accounts cannot log in and have no tokens.
    pub deactivated: bool,
}

/// Who an access token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device the token was issued to.
    pub device_id: OwnedDeviceId,
    /// Whether the user is a server admin.
    pub admin: bool,
}

/// Identifies a client transaction for idempotent sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnKey {
    /// The sending device.
    pub device_id: OwnedDeviceId,
    /// The client's transaction ID.
    pub txn_id: String,
}

/// A committed room event as a cluster node follows it: what the room
/// facts in memory need (members, join rule, positions), not its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailedEvent {
    /// Its stream position.
    pub stream: i64,
    /// The room.
    pub room_id: OwnedRoomId,
    /// Who sent it (the inviter, for an invite).
    pub sender: OwnedUserId,
    /// Set for a membership event: whose membership, and the new one.
    pub membership: Option<(OwnedUserId, Membership)>,
    /// Set for the room's create event: whether its join rule is public.
    pub created_public: Option<bool>,
}

/// An event to append to a room's timeline.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Globally unique event ID.
    pub event_id: OwnedEventId,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The sender.
    pub sender: OwnedUserId,
    /// `m.room.message`, `m.room.member`, ...
    pub event_type: String,
    /// Present for state events.
    pub state_key: Option<String>,
    /// The event content.
    pub content: Value,
    /// Creation time.
    pub origin_server_ts: Timestamp,
    /// The client transaction this event answers, if any.
    pub txn: Option<TxnKey>,
}

/// An event read back from the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Stream position.
    pub stream: i64,
    /// Event ID.
    pub event_id: OwnedEventId,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The sender.
    pub sender: OwnedUserId,
    /// Event type.
    pub event_type: String,
    /// Present for state events.
    pub state_key: Option<String>,
    /// The content.
    pub content: Value,
    /// Creation time.
    pub origin_server_ts: Timestamp,
    /// The transaction it was sent with, if any.
    pub txn: Option<TxnKey>,
}

/// A user's current membership of one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRow {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The member.
    pub user_id: OwnedUserId,
    /// Current membership.
    pub membership: Membership,
    /// Stream position of the membership event.
    pub stream: i64,
}

/// A slice of a room's timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Events in stream order, oldest first.
    pub events: Vec<StoredEvent>,
    /// True when older events in the range were left out by the limit.
    pub limited: bool,
}

/// Everything presenced stores, minus presence (added by the engine wiring).
/// The federation presence outbox is its own trait ([`outbox::OutboxStore`]),
/// and so is companion mode's membership view
/// ([`companion::CompanionStore`]); every store implements both.
///
/// Writes that belong together are one method, so each is one transaction.
pub trait Store: outbox::OutboxStore + companion::CompanionStore + Send + Sync + 'static {
    // --- accounts -------------------------------------------------------

    /// Creates a user; `StoreError::UserInUse` when the ID exists.
    fn create_user(&self, user: &NewUser) -> StoreResult<()>;
    /// Reads a user.
    fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;
    /// Marks a user deactivated and deletes their devices and tokens.
    fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()>;
    /// Every account that is not deactivated, in user-ID order (the
    /// `ServerWide` router's directory of local users).
    fn local_users(&self) -> StoreResult<Vec<OwnedUserId>>;

    // --- devices and tokens ---------------------------------------------

    /// Creates or refreshes a device and gives it a new token, replacing any
    /// token the device had (a login with an existing device ID logs the old
    /// session out, as the spec says).
    fn issue_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Who holds the token with this hash (deactivated users hold none).
    fn token_owner(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>>;
    /// Deletes a device and its tokens.
    fn delete_device(&self, user_id: &UserId, device_id: &DeviceId) -> StoreResult<()>;
    /// Deletes every device and token of a user; returns the device IDs.
    fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<Vec<OwnedDeviceId>>;

    // --- rooms and timeline ---------------------------------------------

    /// Creates a room and appends its initial events, in one transaction.
    fn create_room(
        &self,
        room_id: &RoomId,
        creator: &UserId,
        now: Timestamp,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>>;
    /// Appends events in one transaction and returns their stream positions.
    /// `m.room.member` events also update the current membership.
    fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>>;
    /// The event a transaction already produced, if it was sent before.
    fn event_for_txn(
        &self,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>>;
    /// A user's current membership of a room.
    fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<Option<Membership>>;
    /// Every current membership row of a room.
    fn room_memberships(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRow>>;
    /// The current `m.room.member` events of a room.
    fn member_events(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>>;
    /// Every current membership row of a user (any membership).
    fn user_memberships(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRow>>;
    /// Every current invite and join of every room, in stream order (at
    /// start-up: the joins seed the presence engine, and both fill the
    /// server's member map).
    fn live_memberships(&self) -> StoreResult<Vec<MembershipRow>>;
    /// Every room with the `join_rule` of its current `m.room.join_rules`
    /// event (`None`: no such event, or no string in it).
    fn room_join_rules(&self) -> StoreResult<Vec<(OwnedRoomId, Option<String>)>>;

    // --- what /sync needs ---------------------------------------------------

    /// The highest stream position written so far (0 when empty).
    fn max_stream(&self) -> StoreResult<i64>;

    /// Room events committed after stream position `after`, in stream
    /// order, at most `limit` (cluster mode: every node follows the room
    /// writes of the others). Only PostgreSQL has them in commit order.
    fn room_events_after(&self, after: i64, limit: usize) -> StoreResult<Vec<TailedEvent>> {
        let _ = (after, limit);
        Err(StoreError::Backend(
            "following other writers' room events needs PostgreSQL".into(),
        ))
    }
    /// Rooms whose membership for this user changed in `(since, upto]`,
    /// with the membership as it stands now: joins, invites and leaves
    /// for an incremental sync.
    fn membership_changes(
        &self,
        user_id: &UserId,
        since: i64,
        upto: i64,
    ) -> StoreResult<Vec<MembershipRow>>;
    /// A room's events in `(since, upto]` (`since = None`: from the start),
    /// the newest `limit` of them.
    fn timeline(
        &self,
        room_id: &RoomId,
        since: Option<i64>,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Timeline>;
    /// The room state as of stream position `at`: the latest event of each
    /// `(type, state_key)` at or before it.
    fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<StoredEvent>>;

    // --- filters ------------------------------------------------------------

    /// Stores a filter and returns its ID.
    fn create_filter(&self, user_id: &UserId, filter: &Value) -> StoreResult<String>;
    /// Reads a filter back.
    fn filter(&self, user_id: &UserId, filter_id: &str) -> StoreResult<Option<Value>>;
}

/// Runs a store call on tokio's blocking pool (SQLite calls block); the
/// outer error is a panicked or cancelled task.
pub async fn blocking<T, E, F>(
    store: &std::sync::Arc<dyn Store>,
    f: F,
) -> Result<Result<T, E>, tokio::task::JoinError>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
{
    let store = std::sync::Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&*store)).await
}
