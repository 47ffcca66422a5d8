//! The SQLite side of `server_name.rs`: what a file says about its
//! server, read without writing (so a refused open, and `port-db`'s
//! read-only source, change nothing), and the first open's record.

use std::path::Path;
use std::time::Duration;

use ruma_common::ServerName;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::server_name::{Evidence, Verdict};
use crate::StoreResult;

/// Reads the evidence; works on any presenced file, of any schema
/// version, and on a new empty one.
pub(crate) fn evidence(conn: &Connection, configured: &ServerName) -> StoreResult<Evidence> {
    if has_table(conn, "presenced_server_name")? {
        let recorded: Option<String> = conn
            .query_row(
                "SELECT server_name FROM presenced_server_name WHERE one = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(name) = recorded {
            return Ok(Evidence::Recorded(name));
        }
    }
    if !has_table(conn, "users")? {
        return Ok(Evidence::Nothing);
    }
    // The text after the first `:` is the server part (a localpart has
    // none); compared exactly, as IDs are.
    let foreign: Option<String> = conn
        .query_row(
            "SELECT user_id FROM users \
             WHERE substr(user_id, instr(user_id, ':') + 1) <> ?1 ORDER BY user_id LIMIT 1",
            [configured.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(foreign.map_or(Evidence::Nothing, Evidence::ForeignUser))
}

/// Judges the file without writing to it.
pub(crate) fn check(conn: &Connection, configured: &ServerName) -> StoreResult<Verdict> {
    evidence(conn, configured)?.judge(configured)
}

/// Judges the file at `path` on a read-only connection, before the store
/// opens its writer: closing a writer would checkpoint the WAL a stopped
/// server left into the file, so a refusal would still change it. A
/// missing or empty file has nothing to say.
pub(crate) fn check_file(path: &Path, configured: &ServerName) -> StoreResult<()> {
    let Some(conn) = super::ownership::open_existing_read_only(path)? else {
        return Ok(());
    };
    conn.busy_timeout(Duration::from_secs(5))?;
    check(&conn, configured).map(drop)
}

/// After the migrations: judges again and records the configured name if
/// none is, in one write transaction (so two processes opening a new file
/// at once cannot record two names).
pub(crate) fn record(conn: &mut Connection, configured: &ServerName) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if check(&tx, configured)? == Verdict::Record {
        tx.execute(
            "INSERT INTO presenced_server_name (one, server_name) VALUES (1, ?1)",
            [configured.as_str()],
        )?;
        tx.commit()?;
        tracing::info!(server_name = %configured, "recorded the database's server_name");
    }
    Ok(())
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}
