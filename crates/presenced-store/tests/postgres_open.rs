//! Opening a PostgreSQL store: migrations, the one-writer lock, and the
//! clear errors (unreachable, refused, not ours, schema from the future).

use presenced_store::postgres::{PgConnectOptions, PgOpenError, PgStore};
use presenced_store::testing::{admin_batch, FreshPgDatabase};

#[test]
fn a_second_store_on_the_same_database_is_refused_until_the_first_closes() {
    let Some(db) = FreshPgDatabase::create("double_open") else {
        return;
    };
    let first = PgStore::open(&db.opts).unwrap();
    let err = PgStore::open(&db.opts).err().expect("second open refused");
    assert!(matches!(err, PgOpenError::Locked { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("another presenced"), "{text}");
    assert!(text.contains(&db.opts.dbname), "{text}");
    drop(first);
    // The lock goes with the first store's session.
    let mut reopened = None;
    for _ in 0..50 {
        match PgStore::open(&db.opts) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(PgOpenError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(reopened.is_some(), "lock released when the store closed");
}

#[test]
fn unreachable_server_names_host_port_and_database_but_not_the_password() {
    let opts = PgConnectOptions {
        host: "127.0.0.1".to_owned(),
        port: 1, // nothing listens on port 1
        password: Some("hunter2-secret".to_owned()),
        dbname: "nowhere".to_owned(),
        ..PgConnectOptions::default()
    };
    let err = PgStore::open(&opts).err().expect("unreachable");
    let text = err.to_string();
    assert!(matches!(err, PgOpenError::Unreachable { .. }), "{text}");
    assert!(
        text.contains("host 127.0.0.1, port 1, database nowhere"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn wrong_password_and_missing_database_are_refusals_that_hide_the_password() {
    let Some(db) = FreshPgDatabase::create("refused") else {
        return;
    };
    let role = format!("{}_role", db.opts.dbname);
    admin_batch(
        &db.opts,
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'right-password'"),
    )
    .unwrap();
    // Trust auth on this machine lets any password in over TCP; what must
    // hold everywhere is that a refusal names the database and not the
    // password. A missing database is refused by every server.
    let missing = PgStore::open(&PgConnectOptions {
        password: Some("wrong-password-xyz".to_owned()),
        ..db.opts.with_dbname("presenced_no_such_db")
    })
    .err()
    .expect("missing database refused");
    let text = missing.to_string();
    assert!(matches!(missing, PgOpenError::Refused { .. }), "{text}");
    assert!(text.contains("database presenced_no_such_db"), "{text}");
    assert!(!text.contains("wrong-password-xyz"), "{text}");
    admin_batch(&db.opts, &format!("DROP ROLE {role}")).unwrap();
}

#[test]
fn a_schema_from_a_newer_presenced_is_refused() {
    let Some(db) = FreshPgDatabase::create("future_schema") else {
        return;
    };
    drop(PgStore::open(&db.opts).unwrap());
    admin_batch(
        &db.opts,
        "UPDATE presenced_schema_version SET version = 999",
    )
    .unwrap();
    let err = PgStore::open(&db.opts).err().expect("refused");
    assert!(
        matches!(err, PgOpenError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("newer than this presenced"),
        "{err}"
    );
}

#[test]
fn a_database_with_foreign_tables_is_refused_untouched() {
    let Some(db) = FreshPgDatabase::create("not_ours") else {
        return;
    };
    admin_batch(&db.opts, "CREATE TABLE event_json (event_id TEXT)").unwrap();
    let err = PgStore::open(&db.opts).err().expect("refused");
    assert!(matches!(err, PgOpenError::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("event_json"), "{err}");
    // Nothing was created next to the foreign table.
    admin_batch(
        &db.opts,
        "DO $$ BEGIN IF (SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema()) <> 1 THEN \
         RAISE EXCEPTION 'presenced wrote into a foreign database'; END IF; END $$",
    )
    .unwrap();
}
