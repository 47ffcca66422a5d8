//! Where presence is stored: the latest notified state of each user, with
//! its stream position, so a restart resumes the stream and the states.

use std::path::Path;
use std::sync::Mutex;

use presenced_engine::{Presence, PresenceState, StreamPos, Timestamp};
use ruma_common::OwnedUserId;
use rusqlite::{params, Connection};

/// Storage for presence; the SQLite implementation is the default, a
/// PostgreSQL one can implement the same trait.
pub trait PresenceStore: Send + Sync {
    /// Stores notified states at their positions (latest per user wins).
    fn persist(&self, states: &[(StreamPos, PresenceState)]) -> Result<(), StoreFailure>;
    /// Stores states that changed without a notification (timestamps), at
    /// shutdown: their stream positions stay as they were.
    fn save_quiet(&self, states: &[PresenceState]) -> Result<(), StoreFailure>;
    /// Every stored state with its position.
    fn load(&self) -> Result<Vec<(StreamPos, PresenceState)>, StoreFailure>;
    /// Stores full-presence marks (a later mark of a user replaces an
    /// earlier one).
    fn persist_marks(&self, marks: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure>;
    /// Every stored full-presence mark.
    fn load_marks(&self) -> Result<Vec<(OwnedUserId, StreamPos)>, StoreFailure>;
    /// Deletes the state of each user stored at or before the position
    /// given (remote users the engine forgot; a newer state stays).
    fn forget(&self, users: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure>;
}

pub mod group;

/// A storage failure (logged by the driver; presence keeps flowing).
#[derive(Clone, Debug, thiserror::Error)]
#[error("presence store: {message}")]
pub struct StoreFailure {
    message: String,
    refusal: bool,
}

impl StoreFailure {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            refusal: false,
        }
    }

    /// The backend refused a value of the write (PostgreSQL's data and
    /// constraint errors, SQLite's constraint, size and type errors), as
    /// opposed to failing as a whole (unreachable, timed out, disk full).
    pub fn refusal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            refusal: true,
        }
    }

    /// Whether writing the rows one by one may get the others through
    /// ([`group::GroupCommit`]).
    pub fn is_refusal(&self) -> bool {
        self.refusal
    }
}

/// Presence in an SQLite database (its own connection, its own table).
pub struct SqlitePresenceStore {
    conn: Mutex<Connection>,
}

impl SqlitePresenceStore {
    /// Opens (and creates if needed) the presence table in the database file.
    pub fn open(path: &Path) -> Result<Self, StoreFailure> {
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             -- As the main store: a commit is in the WAL before the PUT is
             -- answered, so it survives kill -9; no fsync per commit (only
             -- at checkpoints), so a power cut may lose the last ones.
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS presence_userid_state (
                 user_id TEXT PRIMARY KEY,
                 stream_pos INTEGER NOT NULL,
                 presence TEXT NOT NULL,
                 last_active_ts INTEGER NOT NULL,
                 last_federation_update_ts INTEGER NOT NULL,
                 last_user_sync_ts INTEGER NOT NULL,
                 status_msg TEXT,
                 currently_active INTEGER NOT NULL
             );
             -- Module API send_local_online_presence_to: syncs whose token
             -- is at or before stream_pos get one full snapshot.
             CREATE TABLE IF NOT EXISTS presence_full_marks (
                 user_id TEXT PRIMARY KEY,
                 stream_pos INTEGER NOT NULL
             );",
        )
        .map_err(fail)?;
        // The server's store checkpoints in the background (see
        // `store::sqlite::checkpoint`); this is only the safety net.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            crate::sqlite::WRITER_AUTOCHECKPOINT_PAGES,
        )
        .map_err(fail)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

/// Runs `body` in a transaction whose `BEGIN` and `COMMIT` are cached
/// statements: the presence writer commits up to a thousand times a second,
/// and rusqlite's `transaction()` parses both anew each time.
fn in_transaction(
    conn: &Connection,
    body: impl FnOnce(&Connection) -> Result<(), StoreFailure>,
) -> Result<(), StoreFailure> {
    conn.prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .map_err(fail)?;
    let done = body(conn).and_then(|()| {
        conn.prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(fail)
    });
    if done.is_err() && !conn.is_autocommit() {
        // Leave the connection usable for the next batch.
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

fn fail(e: impl std::fmt::Display) -> StoreFailure {
    StoreFailure::new(e.to_string())
}

/// A failed row write: a refusal when SQLite refused that row's values.
fn row_failed(e: rusqlite::Error) -> StoreFailure {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    match e.sqlite_error_code() {
        Some(ConstraintViolation | TooBig | TypeMismatch) => StoreFailure::refusal(e.to_string()),
        _ => fail(e),
    }
}

/// Runs `sql`, an upsert of one `presence_userid_state` row whose eight
/// parameters are the columns in table order, for each state at its
/// position; a failed row is turned into the caller's error by `row_error`.
fn upsert_states<'a>(
    conn: &Connection,
    sql: &str,
    rows: impl IntoIterator<Item = (StreamPos, &'a PresenceState)>,
    row_error: fn(rusqlite::Error) -> StoreFailure,
) -> Result<(), StoreFailure> {
    let mut upsert = conn.prepare_cached(sql).map_err(fail)?;
    for (pos, s) in rows {
        upsert
            .execute(params![
                s.user_id.as_str(),
                pos as i64,
                s.presence.as_str(),
                s.last_active_ts.0 as i64,
                s.last_federation_update_ts.0 as i64,
                s.last_user_sync_ts.0 as i64,
                s.status_msg.as_deref(),
                s.currently_active,
            ])
            .map_err(row_error)?;
    }
    Ok(())
}

impl PresenceStore for SqlitePresenceStore {
    fn persist(&self, states: &[(StreamPos, PresenceState)]) -> Result<(), StoreFailure> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        in_transaction(&conn, |tx| {
            upsert_states(
                tx,
                "INSERT INTO presence_userid_state VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(user_id) DO UPDATE SET stream_pos = excluded.stream_pos,
                   presence = excluded.presence, last_active_ts = excluded.last_active_ts,
                   last_federation_update_ts = excluded.last_federation_update_ts,
                   last_user_sync_ts = excluded.last_user_sync_ts,
                   status_msg = excluded.status_msg, currently_active = excluded.currently_active
                 WHERE excluded.stream_pos >= presence_userid_state.stream_pos",
                states.iter().map(|(pos, s)| (*pos, s)),
                row_failed,
            )
        })
    }

    fn save_quiet(&self, states: &[PresenceState]) -> Result<(), StoreFailure> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(fail)?;
        // A new row gets position 0 (?2); an existing one keeps its own.
        upsert_states(
            &tx,
            "INSERT INTO presence_userid_state VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(user_id) DO UPDATE SET
               presence = excluded.presence, last_active_ts = excluded.last_active_ts,
               last_federation_update_ts = excluded.last_federation_update_ts,
               last_user_sync_ts = excluded.last_user_sync_ts,
               status_msg = excluded.status_msg, currently_active = excluded.currently_active",
            states.iter().map(|s| (0, s)),
            fail,
        )?;
        tx.commit().map_err(fail)
    }

    fn load(&self) -> Result<Vec<(StreamPos, PresenceState)>, StoreFailure> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut query = conn
            .prepare("SELECT user_id, stream_pos, presence, last_active_ts, last_federation_update_ts, last_user_sync_ts, status_msg, currently_active FROM presence_userid_state ORDER BY stream_pos")
            .map_err(fail)?;
        let rows = query
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    [
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ],
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, bool>(7)?,
                ))
            })
            .map_err(fail)?;
        let mut states = Vec::new();
        for row in rows {
            let (user, pos, presence, ts, msg, active) = row.map_err(fail)?;
            // A bad row is logged and skipped, never a panic.
            let (Ok(user_id), Some(presence)) = (
                OwnedUserId::try_from(user.as_str()),
                Presence::parse(&presence),
            ) else {
                tracing::warn!(%user, "skipping unreadable stored presence row");
                continue;
            };
            let mut state = PresenceState::new(user_id);
            state.presence = presence;
            state.last_active_ts = Timestamp(ts[0] as u64);
            state.last_federation_update_ts = Timestamp(ts[1] as u64);
            state.last_user_sync_ts = Timestamp(ts[2] as u64);
            state.status_msg = presenced_engine::presence::status_msg(msg.as_deref());
            state.currently_active = active;
            states.push((pos as StreamPos, state));
        }
        Ok(states)
    }

    fn persist_marks(&self, marks: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(fail)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO presence_full_marks VALUES (?1, ?2)
                     ON CONFLICT(user_id) DO UPDATE SET stream_pos = excluded.stream_pos
                     WHERE excluded.stream_pos > presence_full_marks.stream_pos",
                )
                .map_err(fail)?;
            for (user, at) in marks {
                upsert
                    .execute(params![user.as_str(), *at as i64])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    fn forget(&self, users: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(fail)?;
        {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM presence_userid_state WHERE user_id = ?1 AND stream_pos <= ?2",
                )
                .map_err(fail)?;
            for (user, pos) in users {
                delete
                    .execute(params![user.as_str(), *pos as i64])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    fn load_marks(&self) -> Result<Vec<(OwnedUserId, StreamPos)>, StoreFailure> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut query = conn
            .prepare("SELECT user_id, stream_pos FROM presence_full_marks")
            .map_err(fail)?;
        let rows = query
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(fail)?;
        let mut marks = Vec::new();
        for row in rows {
            let (user, at) = row.map_err(fail)?;
            match OwnedUserId::try_from(user.as_str()) {
                Ok(user_id) => marks.push((user_id, at as StreamPos)),
                Err(_) => tracing::warn!(%user, "skipping unreadable full-presence mark"),
            }
        }
        Ok(marks)
    }
}

// Behaviour tests: `tests/conformance.rs` (the same on both backends).
