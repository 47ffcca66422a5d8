//! Whether an SQLite file is presenced's to write.
//!
//! Synapse's generated config names a `homeserver.db`; pointed at Synapse's
//! own file, presenced must not add a single table to it. So before any
//! pragma or migration the file is opened read-only and its tables are
//! compared with the ones presenced creates: any other table means the file
//! belongs to someone else.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::MIGRATIONS;

/// Tables the presence store (`store/presence.rs`) creates in the same
/// file, outside the migrations (a test checks this list stays complete).
const PRESENCE_STORE_TABLES: &[&str] = &["presence_userid_state", "presence_full_marks"];

/// The file holds tables presenced did not create.
#[derive(Debug)]
pub struct ForeignDatabase {
    /// The SQLite file.
    pub path: PathBuf,
    /// A few of the tables that are not presenced's.
    pub tables: Vec<String>,
    /// How many tables are not presenced's.
    pub count: usize,
}

impl fmt::Display for ForeignDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let synapse = self
            .tables
            .iter()
            .any(|t| t == "schema_version" || t == "event_json");
        write!(
            f,
            "{} is not presenced's database: it holds {} table(s) presenced did not create ({}{}){}. \
             presenced keeps its own database and never writes into another program's, so nothing \
             was changed. Point presenced at a new file with database.args.database, or remove \
             that key to use data_dir/presenced.db",
            self.path.display(),
            self.count,
            self.tables.join(", "),
            if self.count > self.tables.len() { ", ..." } else { "" },
            if synapse { ", which looks like Synapse's" } else { "" },
        )
    }
}

impl std::error::Error for ForeignDatabase {}

/// Checks the file at `path` without writing to it. A missing or empty
/// file is fine (presenced will create its tables there), and so is one
/// holding only presenced's tables, of this version or an older one.
pub fn check(path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(conn) = open_existing_read_only(path)? else {
        return Ok(());
    };
    let ours = presenced_tables()?;
    let foreign: Vec<String> = table_names(&conn)?
        .into_iter()
        .filter(|t| !ours.contains(t))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Box::new(ForeignDatabase {
        path: path.to_owned(),
        count: foreign.len(),
        tables: foreign.into_iter().take(5).collect(),
    }))
}

/// The tables of a database presenced made from nothing: the migrations
/// run on an in-memory database, plus the presence store's tables.
/// The file at `path` on a read-only connection, to be judged without
/// writing to it; `None` when it is missing or empty (nothing to judge).
pub(crate) fn open_existing_read_only(path: &Path) -> rusqlite::Result<Option<Connection>> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(None);
    }
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map(Some)
}

fn presenced_tables() -> rusqlite::Result<HashSet<String>> {
    let conn = Connection::open_in_memory()?;
    for sql in MIGRATIONS {
        conn.execute_batch(sql)?;
    }
    let mut tables: HashSet<String> = table_names(&conn)?.into_iter().collect();
    tables.extend(PRESENCE_STORE_TABLES.iter().map(|t| (*t).to_owned()));
    Ok(tables)
}

/// User tables, in name order (SQLite's own `sqlite_*` tables left out).
pub(crate) fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get(0))?;
    names.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::SqlitePresenceStore;
    use crate::sqlite::SqliteStore;

    #[test]
    fn a_database_presenced_made_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("presenced.db");
        check(&path).unwrap();
        drop(SqliteStore::open(&path, "x.org".try_into().unwrap()).unwrap());
        drop(SqlitePresenceStore::open(&path).unwrap());
        // Every table there, the presence store's included, is known.
        check(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let ours = presenced_tables().unwrap();
        for table in table_names(&conn).unwrap() {
            assert!(ours.contains(&table), "{table} is missing from the list");
        }
    }

    #[test]
    fn another_programs_tables_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("homeserver.db");
        let conn = Connection::open(&path).unwrap();
        // presenced's own tables borrow Synapse's names (`events`, `users`),
        // so those alone prove nothing; these are Synapse's alone.
        conn.execute_batch(
            "CREATE TABLE schema_version (lock TEXT, version INTEGER);
             CREATE TABLE event_json (event_id TEXT);
             CREATE TABLE events (event_id TEXT);",
        )
        .unwrap();
        drop(conn);
        let err = check(&path).unwrap_err().to_string();
        assert!(
            err.contains("schema_version") && err.contains("event_json"),
            "{err}"
        );
        assert!(err.contains("2 table(s)"), "{err}");
        assert!(
            err.contains("Synapse") && err.contains("database.args.database"),
            "{err}"
        );
    }
}
