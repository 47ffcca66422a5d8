//! Opening a PostgreSQL store: migrations, the one-writer lock, and the
//! clear errors (unreachable, refused, not ours, schema from the future).

use presenced_store::postgres::{PgConnectOptions, PgOpenError, PgStore};
use presenced_store::testing::{admin_batch, FreshPgDatabase};
use ruma_common::ServerName;

/// The server_name every store here is opened for.
fn name() -> &'static ServerName {
    "x.org".try_into().unwrap()
}

#[test]
fn a_second_store_on_the_same_database_is_refused_until_the_first_closes() {
    let Some(db) = FreshPgDatabase::create("double_open") else {
        return;
    };
    let first = PgStore::open(&db.opts, name()).unwrap();
    let err = PgStore::open(&db.opts, name())
        .err()
        .expect("second open refused");
    assert!(matches!(err, PgOpenError::Locked { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("another presenced"), "{text}");
    assert!(text.contains(&db.opts.dbname), "{text}");
    drop(first);
    // The lock goes with the first store's session.
    let mut reopened = None;
    for _ in 0..50 {
        match PgStore::open(&db.opts, name()) {
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
    let err = PgStore::open(&opts, name()).err().expect("unreachable");
    let text = err.to_string();
    assert!(matches!(err, PgOpenError::Unreachable { .. }), "{text}");
    assert!(
        text.contains("host 127.0.0.1, port 1, database nowhere"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_missing_database_is_a_refusal_that_hides_the_password() {
    let Some(db) = FreshPgDatabase::create("refused") else {
        return;
    };
    let missing = PgStore::open(
        &PgConnectOptions {
            password: Some("wrong-password-xyz".to_owned()),
            ..db.opts.with_dbname("presenced_no_such_db")
        },
        name(),
    )
    .err()
    .expect("missing database refused");
    let text = missing.to_string();
    assert!(matches!(missing, PgOpenError::Refused { .. }), "{text}");
    assert!(text.contains("database presenced_no_such_db"), "{text}");
    assert!(text.contains("3D000"), "{text}");
    assert!(!text.contains("wrong-password-xyz"), "{text}");
}

#[test]
fn a_schema_from_a_newer_presenced_is_refused() {
    let Some(db) = FreshPgDatabase::create("future_schema") else {
        return;
    };
    drop(PgStore::open(&db.opts, name()).unwrap());
    admin_batch(
        &db.opts,
        "UPDATE presenced_schema_version SET version = 999",
    )
    .unwrap();
    let err = PgStore::open(&db.opts, name()).err().expect("refused");
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
    let err = PgStore::open(&db.opts, name()).err().expect("refused");
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

/// This machine's PostgreSQL trusts every local login, so a wrong password
/// cannot be shown against it: a listener that speaks the start of the
/// PostgreSQL protocol asks for a password and refuses it with
/// `28P01`, as a server with password authentication does.
#[test]
fn a_refused_password_names_the_database_and_not_the_password() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        conn.read_exact(&mut startup).unwrap();
        // AuthenticationCleartextPassword.
        conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
        let mut tag = [0u8; 1];
        conn.read_exact(&mut tag).unwrap();
        conn.read_exact(&mut len).unwrap();
        let mut password = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        conn.read_exact(&mut password).unwrap();
        let mut fields = Vec::new();
        for (code, text) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"syn\""),
        ] {
            fields.push(code);
            fields.extend_from_slice(text.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut reply = vec![b'E'];
        reply.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        reply.extend_from_slice(&fields);
        conn.write_all(&reply).unwrap();
        String::from_utf8_lossy(&password).into_owned()
    });
    let opts = PgConnectOptions {
        host: "127.0.0.1".to_owned(),
        port,
        user: "syn".to_owned(),
        password: Some("wrong-horse-battery".to_owned()),
        dbname: "synapse".to_owned(),
        sslmode: "disable".to_owned(),
        ..PgConnectOptions::default()
    };
    let err = PgStore::open(&opts, name()).err().expect("refused");
    let sent = server.join().unwrap();
    assert!(sent.contains("wrong-horse-battery"), "the client sent it");
    let text = err.to_string();
    assert!(matches!(err, PgOpenError::Refused { .. }), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains("28P01"), "{text}");
    assert!(
        text.contains(&format!(
            "host 127.0.0.1, port {port}, database synapse, user syn"
        )),
        "{text}"
    );
    assert!(!text.contains("wrong-horse-battery"), "{text}");
}

#[test]
fn every_way_of_opening_refuses_another_server_name() {
    let Some(db) = FreshPgDatabase::create("shared_name") else {
        return;
    };
    let other: &ServerName = "y.org".try_into().unwrap();
    let refused = |result: Result<PgStore, PgOpenError>| match result {
        Err(PgOpenError::ServerName { mismatch, .. }) => {
            let text = mismatch.to_string();
            assert!(text.contains("belongs to server_name x.org"), "{text}");
            assert!(text.contains("server_name: y.org"), "{text}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("opened under another server_name"),
    };
    // Cluster nodes share the database: the first records x.org, a node
    // configured as y.org is refused, and another x.org node still joins
    // (the refusal let the migration lock go).
    let first = PgStore::open_shared(&db.opts, name()).unwrap();
    refused(PgStore::open_shared(&db.opts, other));
    let second = PgStore::open_shared(&db.opts, name()).unwrap();
    drop((first, second));
    // A single server, and a command beside one, are refused too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let server = loop {
        match PgStore::open(&db.opts, name()) {
            Ok(s) => break s,
            Err(PgOpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    };
    refused(PgStore::open_beside_server(&db.opts, other));
    drop(server);
}
