//! The embedded SQLite backend.
//!
//! One writer connection and a few read-only connections (mutex-guarded,
//! picked round-robin, preferring a free one; small enough not to need a
//! pool crate). Room writes are serialised by the room writer thread, so
//! a reader never sees stream position N+1 before N is committed and
//! `/sync` tokens need no gap tracking. Every statement goes through the
//! per-connection statement cache (`prepare_cached`). Calls arrive on
//! tokio's blocking pool (`store::blocking`), never on a runtime thread.
//!
//! Durability: WAL mode with `synchronous = NORMAL`, here and in the
//! presence store's own connection (`store/presence.rs`). A commit is in
//! the WAL (the OS page cache) before the call returns, so an acknowledged
//! PUT survives `kill -9` of the process (`tests/it/crash.rs`), but not a
//! power cut or kernel crash, which can lose the last commits before the
//! next checkpoint `fsync` (`synchronous = FULL` would close that; it is
//! not a config key yet). Checkpoints run on a background thread with
//! their own connection (`sqlite/checkpoint.rs`, PASSIVE every 250 ms), so
//! no commit, and no PUT waiting on one, pays for the checkpoint's
//! `fsync`s; the writers keep SQLite's automatic checkpoint only as a
//! safety net at 20,000 WAL pages. Another process (`presenced
//! register-user`) may write while the server runs; the busy timeout
//! makes the two take turns.
//!
//! Ownership: presenced never writes into a database it did not create;
//! `sqlite/ownership.rs` refuses a file holding other tables (Synapse's
//! `homeserver.db`) before any pragma or migration, and
//! `sqlite/server_name.rs` one made for another server_name.
//!
//! Migrations are the numbered files in `sqlite/migrations/`, applied in
//! order and tracked with `PRAGMA user_version`.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use presenced_engine::Timestamp;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};
use serde_json::Value;

use super::{
    MembershipRow, NewEvent, NewUser, Store, StoreError, StoreResult, StoredEvent, Timeline,
    TokenOwner, TxnKey, UserRecord,
};
use crate::membership::Membership;
use crate::sql_time;

mod checkpoint;
mod companion;
mod outbox;
pub mod ownership;
pub(crate) mod server_name;

pub(crate) use checkpoint::WRITER_AUTOCHECKPOINT_PAGES;

/// Schema migrations, in order; `user_version` counts how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/migrations/0001_initial.sql"),
    include_str!("sqlite/migrations/0002_federation_outbox.sql"),
    include_str!("sqlite/migrations/0003_server_name.sql"),
    include_str!("sqlite/migrations/0004_companion_memberships.sql"),
    include_str!("sqlite/migrations/0005_companion_changes.sql"),
];

/// How many migrations this binary's SQLite schema has (`port-db` wants
/// a file at exactly this version).
pub(crate) const MIGRATION_COUNT: usize = MIGRATIONS.len();

/// The columns `event_from_row` reads, in order.
pub(crate) const EVENT_COLUMNS: &str =
    "stream, event_id, room_id, sender, event_type, state_key, content, \
                             origin_server_ts, txn_device_id, txn_id";

/// Read connections next to the writer: enough for the two cores this
/// runs on plus one waiting on I/O.
const READERS: usize = 3;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    /// The one connection that writes (SQLite has one writer at a time).
    conn: Mutex<Connection>,
    /// Read-only connections (WAL lets them read while the writer writes);
    /// empty for an in-memory database, whose readers use the writer.
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for picking a reader.
    next_reader: AtomicUsize,
    /// Copies the WAL back in the background (file databases only).
    _checkpointer: Option<checkpoint::Checkpointer>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file for `server_name` and
    /// migrates it. A file holding tables presenced did not create
    /// (Synapse's database), or made for another server_name
    /// (`server_name.rs`), is refused before anything is written to it.
    pub fn open(path: &Path, server_name: &ServerName) -> StoreResult<Self> {
        ownership::check(path).map_err(StoreError::Backend)?;
        // Before any pragma or migration, read-only: a refusal changes
        // nothing.
        server_name::check_file(path, server_name)?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
            }
        }
        let conn = Connection::open(path)?;
        let mut store = Self::with_connection(conn)?;
        server_name::record(&mut *store.conn()?, server_name)?;
        // Opened after the writer set WAL mode and migrated the schema.
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(Duration::from_secs(5))?;
            store.readers.push(Mutex::new(reader));
        }
        store._checkpointer = Some(checkpoint::Checkpointer::start(path)?);
        Ok(store)
    }

    /// An in-memory database, for unit tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            _checkpointer: None,
        })
    }

    /// A connection for a read: a free reader if there is one, else the
    /// next one in turn (or the writer, in memory). A read on its own
    /// connection sees every transaction committed before it began.
    fn reader(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        if self.readers.is_empty() {
            return self.conn();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            let reader = &self.readers[(start + i) % self.readers.len()];
            match reader.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let reader = &self.readers[start % self.readers.len()];
        Ok(reader.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn conn(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        // A panic while holding the lock leaves no half-done transaction
        // (rusqlite rolls back on drop), so a poisoned lock is safe to reuse.
        Ok(self.conn.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if done > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: done as i64,
            known: MIGRATIONS.len() as i64,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}

/// A row that no longer parses (hand-edited DB, older bug) is logged and
/// skipped rather than failing the whole request.
pub(crate) fn parse_or_skip<T: FromStr>(what: &str, raw: &str) -> Option<T> {
    match raw.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(what, raw, "skipping unparsable database row");
            None
        }
    }
}

/// Raw event columns, parsed into typed IDs by [`RawEvent::parse`]
/// (both backends read events into it).
pub(crate) struct RawEvent {
    pub(crate) stream: i64,
    pub(crate) event_id: String,
    pub(crate) room_id: String,
    pub(crate) sender: String,
    pub(crate) event_type: String,
    pub(crate) state_key: Option<String>,
    pub(crate) content: String,
    pub(crate) origin_server_ts: i64,
    pub(crate) txn_device_id: Option<String>,
    pub(crate) txn_id: Option<String>,
}

impl RawEvent {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            stream: r.get(0)?,
            event_id: r.get(1)?,
            room_id: r.get(2)?,
            sender: r.get(3)?,
            event_type: r.get(4)?,
            state_key: r.get(5)?,
            content: r.get(6)?,
            origin_server_ts: r.get(7)?,
            txn_device_id: r.get(8)?,
            txn_id: r.get(9)?,
        })
    }

    pub(crate) fn parse(self) -> Option<StoredEvent> {
        let event_id: OwnedEventId = parse_or_skip("event_id", &self.event_id)?;
        let room_id: OwnedRoomId = parse_or_skip("room_id", &self.room_id)?;
        let sender: OwnedUserId = parse_or_skip("sender", &self.sender)?;
        let content: Value = match serde_json::from_str(&self.content) {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!(event_id = %event_id, "skipping event with unparsable content");
                return None;
            }
        };
        let txn = match (self.txn_device_id, self.txn_id) {
            (Some(d), Some(t)) => Some(TxnKey {
                device_id: OwnedDeviceId::from(d),
                txn_id: t,
            }),
            _ => None,
        };
        Some(StoredEvent {
            stream: self.stream,
            event_id,
            room_id,
            sender,
            event_type: self.event_type,
            state_key: self.state_key,
            content,
            origin_server_ts: sql_time::from_column(self.origin_server_ts),
            txn,
        })
    }
}

/// `execute` through the statement cache: the statements are fixed, so
/// each is compiled once per connection.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raws = stmt
        .query_map(params, RawEvent::from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(raws.into_iter().filter_map(RawEvent::parse).collect())
}

fn query_memberships(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<MembershipRow>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raws = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(raws
        .into_iter()
        .filter_map(|(room, user, membership, stream)| {
            Some(MembershipRow {
                room_id: parse_or_skip("room_id", &room)?,
                user_id: parse_or_skip("user_id", &user)?,
                membership: parse_or_skip("membership", &membership)?,
                stream,
            })
        })
        .collect())
}

/// Appends events inside an open transaction; membership events also
/// update `roomid_userid_membership`.
fn insert_events(tx: &Transaction<'_>, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
    let mut streams = Vec::with_capacity(events.len());
    for e in events {
        let content =
            serde_json::to_string(&e.content).map_err(|err| StoreError::Backend(Box::new(err)))?;
        tx.prepare_cached(
            "INSERT INTO events (event_id, room_id, sender, event_type, state_key, content, \
             origin_server_ts, txn_device_id, txn_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            e.event_id.as_str(),
            e.room_id.as_str(),
            e.sender.as_str(),
            e.event_type,
            e.state_key,
            content,
            sql_time::to_column(e.origin_server_ts),
            e.txn.as_ref().map(|t| t.device_id.as_str()),
            e.txn.as_ref().map(|t| t.txn_id.as_str()),
        ])?;
        let stream = tx.last_insert_rowid();
        if e.event_type == "m.room.member" {
            let membership = e
                .content
                .get("membership")
                .and_then(Value::as_str)
                .and_then(|m| Membership::from_str(m).ok());
            if let (Some(state_key), Some(membership)) = (&e.state_key, membership) {
                tx.prepare_cached(
                    "INSERT INTO roomid_userid_membership (room_id, user_id, membership, stream) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (room_id, user_id) \
                     DO UPDATE SET membership = excluded.membership, stream = excluded.stream",
                )?
                .execute(params![
                    e.room_id.as_str(),
                    state_key,
                    membership.as_str(),
                    stream
                ])?;
            }
        }
        streams.push(stream);
    }
    Ok(streams)
}

impl Store for SqliteStore {
    fn create_user(&self, user: &NewUser) -> StoreResult<()> {
        let conn = self.conn()?;
        let result = conn.prepare_cached(
            "INSERT INTO users (user_id, password_hash, admin, created_ts) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(
            params![
                user.user_id.as_str(),
                user.password_hash,
                user.admin,
                sql_time::to_column(user.created_ts)
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::UserInUse)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let conn = self.reader()?;
        let row = query_row(
            &conn,
            "SELECT password_hash, admin, deactivated FROM users WHERE user_id = ?1",
            [user_id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
        Ok(row.map(|(password_hash, admin, deactivated)| UserRecord {
            user_id: user_id.to_owned(),
            password_hash,
            admin,
            deactivated,
        }))
    }

    fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.prepare_cached("UPDATE users SET deactivated = 1 WHERE user_id = ?1")?
            .execute([user_id.as_str()])?;
        tx.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1")?
            .execute([user_id.as_str()])?;
        exec(
            &tx,
            "DELETE FROM devices WHERE user_id = ?1",
            [user_id.as_str()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn local_users(&self) -> StoreResult<Vec<OwnedUserId>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached("SELECT user_id FROM users WHERE deactivated = 0 ORDER BY user_id")?;
        let raw = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(raw
            .iter()
            .filter_map(|id| parse_or_skip("user id", id))
            .collect())
    }

    fn issue_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let now = sql_time::to_column(now);
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        exec(
            &tx,
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, device_id) DO UPDATE SET \
             display_name = COALESCE(excluded.display_name, devices.display_name), \
             last_seen_ts = excluded.last_seen_ts",
            params![user_id.as_str(), device_id.as_str(), display_name, now],
        )?;
        tx.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2")?
            .execute(params![user_id.as_str(), device_id.as_str()])?;
        exec(
            &tx,
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) \
             VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user_id.as_str(), device_id.as_str(), now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn token_owner(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>> {
        let conn = self.reader()?;
        let row: Option<(String, String, bool)> = conn
            .prepare_cached(
                "SELECT t.user_id, t.device_id, u.admin FROM access_tokens t \
                 JOIN users u ON u.user_id = t.user_id \
                 WHERE t.token_hash = ?1 AND u.deactivated = 0",
            )?
            .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(row.and_then(|(user, device, admin)| {
            Some(TokenOwner {
                user_id: parse_or_skip("user_id", &user)?,
                device_id: OwnedDeviceId::from(device),
                admin,
            })
        }))
    }

    fn delete_device(&self, user_id: &UserId, device_id: &DeviceId) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for sql in [
            "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
            "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
        ] {
            exec(&tx, sql, params![user_id.as_str(), device_id.as_str()])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<Vec<OwnedDeviceId>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let devices = tx
            .prepare_cached("SELECT device_id FROM devices WHERE user_id = ?1")?
            .query_map([user_id.as_str()], |r| r.get::<_, String>(0))?
            .map(|d| d.map(OwnedDeviceId::from))
            .collect::<Result<Vec<_>, _>>()?;
        tx.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1")?
            .execute([user_id.as_str()])?;
        exec(
            &tx,
            "DELETE FROM devices WHERE user_id = ?1",
            [user_id.as_str()],
        )?;
        tx.commit()?;
        Ok(devices)
    }

    fn create_room(
        &self,
        room_id: &RoomId,
        creator: &UserId,
        now: Timestamp,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.prepare_cached("INSERT INTO rooms (room_id, creator, created_ts) VALUES (?1, ?2, ?3)")?
            .execute(params![
                room_id.as_str(),
                creator.as_str(),
                sql_time::to_column(now)
            ])?;
        let streams = insert_events(&tx, events)?;
        tx.commit()?;
        Ok(streams)
    }

    fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let streams = insert_events(&tx, events)?;
        tx.commit()?;
        Ok(streams)
    }

    fn event_for_txn(
        &self,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>> {
        let conn = self.reader()?;
        let raw: Option<String> = conn
            .prepare_cached(
                "SELECT event_id FROM events \
                 WHERE sender = ?1 AND txn_device_id = ?2 AND txn_id = ?3",
            )?
            .query_row(params![sender.as_str(), device_id.as_str(), txn_id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(raw.and_then(|r| parse_or_skip("event_id", &r)))
    }

    fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<Option<Membership>> {
        let conn = self.reader()?;
        let raw: Option<String> = conn
            .prepare_cached(
                "SELECT membership FROM roomid_userid_membership \
                 WHERE room_id = ?1 AND user_id = ?2",
            )?
            .query_row(params![room_id.as_str(), user_id.as_str()], |r| r.get(0))
            .optional()?;
        Ok(raw.and_then(|m| parse_or_skip("membership", &m)))
    }

    fn room_memberships(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRow>> {
        let conn = self.reader()?;
        query_memberships(
            &conn,
            "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
             WHERE room_id = ?1 ORDER BY stream",
            [room_id.as_str()],
        )
    }

    fn member_events(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>> {
        let conn = self.reader()?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream IN \
             (SELECT stream FROM roomid_userid_membership WHERE room_id = ?1) ORDER BY stream"
        );
        query_events(&conn, &sql, [room_id.as_str()])
    }

    fn user_memberships(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRow>> {
        let conn = self.reader()?;
        query_memberships(
            &conn,
            "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
             WHERE user_id = ?1 ORDER BY stream",
            [user_id.as_str()],
        )
    }

    fn live_memberships(&self) -> StoreResult<Vec<MembershipRow>> {
        let conn = self.reader()?;
        query_memberships(
            &conn,
            "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
             WHERE membership IN ('invite', 'join') ORDER BY stream",
            [],
        )
    }

    fn room_join_rules(&self) -> StoreResult<Vec<(OwnedRoomId, Option<String>)>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT r.room_id, (SELECT content FROM events \
             WHERE room_id = r.room_id AND event_type = 'm.room.join_rules' \
             AND state_key = '' ORDER BY stream DESC LIMIT 1) FROM rooms r",
        )?;
        let raw = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(raw
            .into_iter()
            .filter_map(|(room, content)| {
                let room = parse_or_skip("room_id", &room)?;
                let rule = content
                    .and_then(|c| serde_json::from_str::<Value>(&c).ok())
                    .and_then(|c| Some(c.get("join_rule")?.as_str()?.to_owned()));
                Some((room, rule))
            })
            .collect())
    }

    fn max_stream(&self) -> StoreResult<i64> {
        let conn = self.reader()?;
        Ok(query_row(
            &conn,
            "SELECT COALESCE(MAX(stream), 0) FROM events",
            [],
            |r| r.get(0),
        )?)
    }

    fn membership_changes(
        &self,
        user_id: &UserId,
        since: i64,
        upto: i64,
    ) -> StoreResult<Vec<MembershipRow>> {
        let conn = self.reader()?;
        query_memberships(
            &conn,
            "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
             WHERE user_id = ?1 AND stream > ?2 AND stream <= ?3 ORDER BY stream",
            params![user_id.as_str(), since, upto],
        )
    }

    fn timeline(
        &self,
        room_id: &RoomId,
        since: Option<i64>,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Timeline> {
        let conn = self.reader()?;
        // Fetch one more than asked for: its presence means "limited".
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ?1 AND stream > ?2 \
             AND stream <= ?3 ORDER BY stream DESC LIMIT ?4"
        );
        let mut events = query_events(
            &conn,
            &sql,
            params![room_id.as_str(), since.unwrap_or(0), upto, fetch],
        )?;
        let limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        Ok(Timeline { events, limited })
    }

    fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<StoredEvent>> {
        let conn = self.reader()?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE room_id = ?1 AND state_key IS NOT NULL \
             AND stream = (SELECT MAX(stream) FROM events e2 WHERE e2.room_id = e.room_id \
             AND e2.event_type = e.event_type AND e2.state_key = e.state_key \
             AND e2.stream <= ?2) ORDER BY stream"
        );
        query_events(&conn, &sql, params![room_id.as_str(), at])
    }

    fn create_filter(&self, user_id: &UserId, filter: &Value) -> StoreResult<String> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let next: i64 = query_row(&tx,
            "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM userid_filterid_filter WHERE user_id = ?1",
            [user_id.as_str()],
            |r| r.get(0),
        )?;
        tx.prepare_cached(
            "INSERT INTO userid_filterid_filter (user_id, filter_id, filter_json) VALUES (?1, ?2, ?3)",
        )?
        .execute(
            params![user_id.as_str(), next, filter.to_string()],
        )?;
        tx.commit()?;
        Ok(next.to_string())
    }

    fn filter(&self, user_id: &UserId, filter_id: &str) -> StoreResult<Option<Value>> {
        let Ok(id) = filter_id.parse::<i64>() else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let raw: Option<String> = query_row(
            &conn,
            "SELECT filter_json FROM userid_filterid_filter WHERE user_id = ?1 AND filter_id = ?2",
            params![user_id.as_str(), id],
            |r| r.get(0),
        )
        .optional()?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }
}
