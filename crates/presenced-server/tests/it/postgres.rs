//! PostgreSQL from the operator's side, with the real binary: a second
//! presenced on the same database is refused, an unreachable database is
//! named (never its password), and `port-db` moves a populated SQLite
//! server to PostgreSQL with tokens, rooms, presence and the outbox intact.
//! Each test makes its own database (skipped with a message when no
//! PostgreSQL answers, a failure under `PRESENCED_REQUIRE_POSTGRES=1`).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use presenced_server::store::outbox::OutboxStore;
use presenced_server::store::postgres::PgStore;
use presenced_server::store::sqlite::SqliteStore;
use presenced_server::store::testing::FreshPgDatabase;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, sqlite_only};
use crate::ops::{generous, get_presence, presence_of, put_presence, shared_room, sync};

fn presenced() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presenced"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    database: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "server_name: test.local\nlisteners: [{{port: {port}, bind_addresses: [127.0.0.1]}}]\n\
             data_dir: {}\nregistration_shared_secret: s\nlog: {{level: warn}}\n{database}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Synapse's shape, as an operator writes it.
fn psycopg2_block(db: &FreshPgDatabase) -> String {
    let o = &db.opts;
    format!(
        "database:\n  name: psycopg2\n  args:\n    user: {}\n    dbname: {}\n    host: {}\n    \
         port: {}\n    sslmode: disable\n    cp_min: 1\n    cp_max: 4\n",
        o.user, o.dbname, o.host, o.port
    )
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "presenced did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_presenced_on_the_same_database_is_refused() {
    let Some(db) = FreshPgDatabase::create("double_start") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let first_config = write_config(dir.path(), "a.yaml", p1, &psycopg2_block(&db));
    let second_config = write_config(dir.path(), "b.yaml", p2, &psycopg2_block(&db));
    let mut first = presenced()
        .arg("--config")
        .arg(&first_config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_up(p1);
    let second = presenced()
        .arg("--config")
        .arg(&second_config)
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success());
    let err = stderr(&second);
    assert!(err.contains("another presenced is already using"), "{err}");
    assert!(
        err.contains(&format!("database {}", db.opts.dbname)) && err.contains("port"),
        "{err}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p2)).is_err(),
        "the second one never listened"
    );
}

#[test]
fn an_unreachable_database_stops_start_up_naming_it_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "c.yaml",
        free_port(),
        &format!(
            "database:\n  name: psycopg2\n  args:\n    user: syn\n    password: pa55-w0rd-xyz\n    \
             dbname: matrix\n    host: 127.0.0.1\n    port: {port}\n    connect_timeout: 2\n"
        ),
    );
    let out = presenced().arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("host 127.0.0.1, port {port}, database matrix")),
        "{err}"
    );
    assert!(!err.contains("pa55-w0rd-xyz"), "{err}");
    assert!(
        !dir.path().join("data").join("presenced.db").exists(),
        "nothing fell back to SQLite"
    );
}

#[tokio::test]
async fn port_db_moves_a_sqlite_server_to_postgres_with_everything_intact() {
    let Some(db) = FreshPgDatabase::create("port_db") else {
        return;
    };
    // A server on SQLite with users, a room, presence and queued
    // federation presence.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_owned();
    let on_sqlite = {
        let data_dir = data_dir.clone();
        spawn_app_with(move |c| {
            generous(c);
            sqlite_only(c);
            c.data_dir = data_dir;
        })
        .await
    };
    let alice = on_sqlite.register("alice").await;
    let bob = on_sqlite.register("bob").await;
    let room = shared_room(&on_sqlite, &alice, &bob).await;
    put_presence(
        &on_sqlite,
        &alice,
        json!({"presence": "online", "status_msg": "moving house"}),
    )
    .await;
    let sqlite_file = data_dir.join("presenced.db");
    {
        let store = SqliteStore::open(&sqlite_file, "test.local".try_into().unwrap()).unwrap();
        let mut state =
            presenced_engine::PresenceState::new(alice.user_id.as_str().try_into().unwrap());
        state.presence = presenced_engine::Presence::Online;
        store
            .queue_presence(&[("remote.example".try_into().unwrap(), state)])
            .unwrap();
    }
    // Stopped as an operator would before porting.
    on_sqlite.state.presence.shut_down();
    on_sqlite.state.presence.flush_to_own_store();

    let dir = tempfile::tempdir().unwrap();
    let target = write_config(dir.path(), "pg.yaml", free_port(), &psycopg2_block(&db));
    let out = presenced()
        .args(["port-db", "--sqlite-database"])
        .arg(&sqlite_file)
        .arg("--postgres-config")
        .arg(&target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("users: 2 rows"), "{stdout}");
    assert!(
        stdout.contains("destination_presence_outbox: 1 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("counts checked"), "{stdout}");

    // A second port into the now filled database is refused.
    let again = presenced()
        .args(["port-db", "--sqlite-database"])
        .arg(&sqlite_file)
        .arg("--postgres-config")
        .arg(&target)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("empty database"),
        "{}",
        stderr(&again)
    );

    // The same users on PostgreSQL, with their old tokens.
    let url = db.url();
    let on_pg = spawn_app_with(move |c| {
        generous(c);
        c.database.url = Some(url);
    })
    .await;
    let (status, body) = on_pg
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id.as_str());
    // The room and its members, and alice's presence.
    let (status, members) = on_pg
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                crate::helpers::enc(&room)
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(
        members["joined"].get(alice.user_id.as_str()).is_some(),
        "{members}"
    );
    let (status, presence) = get_presence(&on_pg, &bob, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{presence}");
    assert_eq!(presence["presence"], "online");
    assert_eq!(presence["status_msg"], "moving house");
    let body = sync(&on_pg, &bob, "set_presence=offline&timeout=0").await;
    assert!(body["rooms"]["join"].get(&room).is_some(), "{body}");
    assert!(presence_of(&body, &alice.user_id).is_some(), "{body}");
    // The queued federation presence is still queued.
    let beside = PgStore::open_beside_server(&db.opts, "test.local".try_into().unwrap()).unwrap();
    let pending = beside
        .pending_presence(
            <&ruma_common::ServerName>::try_from("remote.example").unwrap(),
            10,
        )
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state.user_id.as_str(), alice.user_id);
    // New room events continue after the copied ones.
    let (status, sent) = on_pg
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                crate::helpers::enc(&room)
            ),
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "after the move"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
}
