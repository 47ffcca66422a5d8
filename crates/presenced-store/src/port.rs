//! `presenced port-db`: a SQLite database copied into an empty PostgreSQL
//! one, the operator's way from the embedded default to production (what
//! Synapse's `synapse_port_db` is for Synapse).
//!
//! All or nothing: every table is copied in one PostgreSQL transaction,
//! the row counts are compared inside it, and only then is it committed;
//! any failure leaves the target as empty as it was, so the command can
//! simply be run again. The target is opened as a server opens it
//! ([`PgStore::open`]: the one-writer lock, the ownership check, the
//! server_name check and record, the migrations), so a presenced running
//! on it makes the port refuse, and the lock is held until the copy is
//! committed. The SQLite file is only read; its server_name (recorded, or
//! judged by its users) must be the config's, checked before the target
//! is opened. The signing key and the rest of `data_dir` are not touched.
//!
//! Columns are copied by name, each converted to the PostgreSQL column's
//! type as `information_schema` gives it (SQLite's 0/1 flags become
//! `BOOLEAN`), so a new column needs no change here.
//!
//! Text holding U+0000, which SQLite stores and PostgreSQL refuses (older
//! presenced let clients write it: status messages, device names,
//! transaction IDs), is copied with each NUL replaced by U+FFFD, counted
//! per column and reported. Replaced rather than removed: removing could
//! turn two distinct keys into one (a device `a\0` beside a device `a`)
//! and fail the whole port on a duplicate key, and U+FFFD is the usual
//! mark for a character that could not be kept, visible to whoever reads
//! the text. JSON columns are `TEXT` on both sides and serde_json writes
//! the escape `\u0000`, never the raw character, so they are copied as
//! they are (any raw NUL in one would be replaced the same way).

use std::path::Path;

use ruma_common::ServerName;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::postgres::{
    connect_client, error_chain, PgConnectOptions, PgOpenError, PgStore, TABLES,
};

/// The tables to copy, in an order that satisfies the foreign keys
/// (`TABLES` is in that order). The schema version is the target's own,
/// and so is its server_name: opening the target recorded the source's
/// (checked equal to the config's first).
fn copy_order() -> impl Iterator<Item = &'static str> {
    TABLES
        .iter()
        .copied()
        .filter(|t| *t != "presenced_schema_version" && *t != "presenced_server_name")
}

/// Rows per `INSERT` (10 columns × 1,000 stays far below PostgreSQL's
/// 65,535 parameters).
const CHUNK: usize = 1_000;

/// What was copied: each table and its row count (checked equal on both
/// sides).
#[derive(Debug, Default)]
pub struct PortReport {
    /// `(table, rows)` in copy order.
    pub tables: Vec<(String, u64)>,
    /// `(table, column, values)`: text values with U+0000, copied with
    /// each NUL replaced by U+FFFD.
    pub nul_replaced: Vec<(String, String, u64)>,
}

/// What a NUL in SQLite text becomes in PostgreSQL.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// Why a port did not happen (the target is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The SQLite file cannot be used.
    #[error("SQLite database {path}: {reason}")]
    Source { path: String, reason: String },
    /// The target could not be opened (unreachable, locked, not ours...).
    #[error(transparent)]
    Target(#[from] PgOpenError),
    /// The target already holds data.
    #[error(
        "port-db copies into an empty database, but {table} already has {rows} rows in \
         PostgreSQL {target}; use a new database (createdb) or empty this one"
    )]
    NotEmpty {
        table: String,
        rows: i64,
        target: String,
    },
    /// Copying failed; nothing was committed.
    #[error("copying {table} failed, nothing was committed: {reason}")]
    Copy { table: String, reason: String },
    /// The counts differ after the copy; nothing was committed.
    #[error(
        "{table}: {sqlite} rows in SQLite but {postgres} in PostgreSQL; nothing was committed"
    )]
    Mismatch {
        table: String,
        sqlite: u64,
        postgres: u64,
    },
}

/// Copies `sqlite_path`, a database of `server_name`, into the empty
/// PostgreSQL database `target`, which keeps that name.
pub fn port_sqlite_to_postgres(
    sqlite_path: &Path,
    target: &PgConnectOptions,
    server_name: &ServerName,
    progress: &mut dyn FnMut(&str),
) -> Result<PortReport, PortError> {
    let source = open_source(sqlite_path, server_name)?;
    // Held until the end: the lock keeps a presenced from starting on the
    // target while it is being filled. Opened for the source's name, so a
    // target made for another one is refused, and an empty one records it.
    let _store = PgStore::open(target, server_name)?;
    // The copy runs on a runtime of its own, on this thread: it reads
    // SQLite between PostgreSQL round trips, and a rusqlite connection may
    // not cross threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PortError::Copy {
            table: "-".to_owned(),
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let mut client = connect_client(target).await?;
        copy_all(&source, &mut client, target, progress).await
    })
}

fn open_source(path: &Path, server_name: &ServerName) -> Result<Connection, PortError> {
    let source_err = |reason: String| PortError::Source {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(source_err("no such file".to_owned()));
    }
    crate::sqlite::ownership::check(path).map_err(|e| source_err(e.to_string()))?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| source_err(e.to_string()))?;
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| source_err(e.to_string()))?;
    let known = crate::sqlite::MIGRATION_COUNT;
    if version != known {
        return Err(source_err(format!(
            "schema version {version}, this presenced knows {known}: start this presenced on \
             it once (or use the presenced that wrote it) before porting"
        )));
    }
    // The file's own name (recorded, or judged by its users) must be the
    // config's, which the target is opened for.
    crate::sqlite::server_name::check(&conn, server_name).map_err(|e| source_err(e.to_string()))?;
    Ok(conn)
}

async fn copy_all(
    source: &Connection,
    client: &mut Client,
    target: &PgConnectOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PortReport, PortError> {
    let failed = |table: &str, reason: String| PortError::Copy {
        table: table.to_owned(),
        reason,
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| failed("-", error_chain(&e)))?;
    for table in copy_order() {
        let rows: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(|e| failed(table, error_chain(&e)))?
            .get(0);
        if rows > 0 {
            return Err(PortError::NotEmpty {
                table: table.to_owned(),
                rows,
                target: target.describe(),
            });
        }
    }
    let mut report = PortReport::default();
    for table in copy_order() {
        let (copied, replaced) = copy_table(source, &tx, table)
            .await
            .map_err(|reason| failed(table, reason))?;
        let in_postgres: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(|e| failed(table, error_chain(&e)))?
            .get(0);
        if in_postgres as u64 != copied {
            return Err(PortError::Mismatch {
                table: table.to_owned(),
                sqlite: copied,
                postgres: in_postgres as u64,
            });
        }
        progress(&format!("{table}: {copied} rows"));
        for (column, values) in replaced {
            progress(&format!(
                "{table}.{column}: {values} values held U+0000 (NUL), which PostgreSQL cannot \
                 store; each NUL was replaced by U+FFFD"
            ));
            report.nul_replaced.push((table.to_owned(), column, values));
        }
        report.tables.push((table.to_owned(), copied));
    }
    // New events continue after the copied stream positions.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('events', 'stream'), \
         GREATEST((SELECT COALESCE(MAX(stream), 0) FROM events), 1), \
         (SELECT COUNT(*) > 0 FROM events))",
        &[],
    )
    .await
    .map_err(|e| failed("events", error_chain(&e)))?;
    // And new application-service transactions after the copied ones.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('companion_as_txns', 'seq'), \
         GREATEST((SELECT COALESCE(MAX(seq), 0) FROM companion_as_txns), 1), \
         (SELECT COUNT(*) > 0 FROM companion_as_txns))",
        &[],
    )
    .await
    .map_err(|e| failed("companion_as_txns", error_chain(&e)))?;
    tx.commit()
        .await
        .map_err(|e| failed("-", error_chain(&e)))?;
    Ok(report)
}

/// Copies one table; returns how many rows SQLite had (0 for a table the
/// file does not have: the presence tables appear at the first start) and,
/// per column that had any, how many text values had a NUL replaced.
async fn copy_table(
    source: &Connection,
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<(u64, Vec<(String, u64)>), String> {
    let exists: bool = source
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if !exists {
        return Ok((0, Vec::new()));
    }
    let columns: Vec<(String, String)> = tx
        .query(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .map_err(|e| error_chain(&e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let mut select = source
        .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
        .map_err(|e| e.to_string())?;
    let mut rows = select.query([]).map_err(|e| e.to_string())?;
    let mut chunk: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut in_chunk = 0;
    let mut copied = 0u64;
    let mut replaced = vec![0u64; columns.len()];
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        for (i, (name, pg_type)) in columns.iter().enumerate() {
            let mut value: SqlValue = row.get(i).map_err(|e| e.to_string())?;
            if replace_nul(&mut value) {
                replaced[i] += 1;
            }
            chunk.push(convert(value, pg_type).map_err(|e| format!("column {name}: {e}"))?);
        }
        in_chunk += 1;
        copied += 1;
        if in_chunk == CHUNK {
            insert_chunk(tx, table, &names, &chunk, in_chunk).await?;
            chunk.clear();
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        insert_chunk(tx, table, &names, &chunk, in_chunk).await?;
    }
    let replaced = columns
        .into_iter()
        .zip(replaced)
        .filter(|(_, n)| *n > 0)
        .map(|((name, _), n)| (name, n))
        .collect();
    Ok((copied, replaced))
}

/// Replaces each U+0000 of a text value by [`NUL_REPLACEMENT`]; whether
/// there was one.
fn replace_nul(value: &mut SqlValue) -> bool {
    match value {
        SqlValue::Text(s) if s.contains('\0') => {
            *s = s.replace('\0', &NUL_REPLACEMENT.to_string());
            true
        }
        _ => false,
    }
}

/// One SQLite value as the PostgreSQL column's type.
fn convert(value: SqlValue, pg_type: &str) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    Ok(match (pg_type, value) {
        ("bigint", SqlValue::Null) => Box::new(None::<i64>),
        ("bigint", SqlValue::Integer(n)) => Box::new(n),
        ("boolean", SqlValue::Null) => Box::new(None::<bool>),
        ("boolean", SqlValue::Integer(n)) => Box::new(n != 0),
        ("text", SqlValue::Null) => Box::new(None::<String>),
        ("text", SqlValue::Text(s)) => Box::new(s),
        ("text", SqlValue::Integer(n)) => Box::new(n.to_string()),
        (ty, v) => return Err(format!("cannot store SQLite {v:?} as PostgreSQL {ty}")),
    })
}

async fn insert_chunk(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    names: &[&str],
    values: &[Box<dyn ToSql + Sync + Send>],
    rows: usize,
) -> Result<(), String> {
    let width = names.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        tuples.join(", ")
    );
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
    tx.execute(&sql, &params)
        .await
        .map(drop)
        .map_err(|e| error_chain(&e))
}
