//! Opening a SQLite store migrated by a newer presenced is refused, as on
//! PostgreSQL (`postgres_open.rs`), and leaves the file as it was.

use presenced_store::sqlite::SqliteStore;
use presenced_store::StoreError;

#[test]
fn a_schema_from_a_newer_presenced_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presenced.db");
    drop(SqliteStore::open(&path, "x.org".try_into().unwrap()).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStore::open(&path, "x.org".try_into().unwrap())
        .err()
        .expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("newer than this presenced"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99, "left as it was");
}
