//! `port-db` and text SQLite holds but PostgreSQL refuses: an SQLite
//! database written by an older presenced, with U+0000 in a status
//! message, a device name and a queued federation status message, ports
//! with each NUL replaced by U+FFFD, counted per column.

use presenced_engine::{Presence, PresenceState, Timestamp};
use presenced_store::outbox::OutboxStore;
use presenced_store::port::{port_sqlite_to_postgres, NUL_REPLACEMENT};
use presenced_store::presence::{PresenceStore, SqlitePresenceStore};
use presenced_store::sqlite::SqliteStore;
use presenced_store::testing::FreshPgDatabase;
use presenced_store::{NewUser, Store};
use ruma_common::{OwnedServerName, OwnedUserId};

fn server_name() -> &'static ruma_common::ServerName {
    "x.org".try_into().unwrap()
}

#[test]
fn text_with_nul_ports_with_each_nul_replaced_and_counted() {
    let Some(db) = FreshPgDatabase::create("port_nul") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presenced.db");
    let alice: OwnedUserId = "@alice:x.org".try_into().unwrap();
    {
        let store = SqliteStore::open(&path, server_name()).unwrap();
        store
            .create_user(&NewUser {
                user_id: alice.clone(),
                password_hash: None,
                admin: false,
                created_ts: Timestamp(1),
            })
            .unwrap();
        let device: &ruma_common::DeviceId = "PHONE".into();
        store
            .issue_token(&alice, device, Some("ph\u{0}ne"), "hash", Timestamp(2))
            .unwrap();
        let mut state = PresenceState::new(alice.clone());
        state.presence = Presence::Online;
        state.status_msg = Some("a\u{0}b\u{0}".into());
        state.last_active_ts = Timestamp(3);
        let remote: OwnedServerName = "remote.example".try_into().unwrap();
        store.queue_presence(&[(remote, state.clone())]).unwrap();
        let presence = SqlitePresenceStore::open(&path).unwrap();
        presence.persist(&[(7, state)]).unwrap();
    }

    let mut lines = Vec::new();
    let report = port_sqlite_to_postgres(&path, &db.opts, server_name(), &mut |l| {
        lines.push(l.to_owned())
    })
    .unwrap_or_else(|e| panic!("port failed: {e}"));
    let mut replaced = report.nul_replaced.clone();
    replaced.sort();
    let expected = [
        ("destination_presence_outbox", "status_msg", 1),
        ("devices", "display_name", 1),
        ("presence_userid_state", "status_msg", 1),
    ]
    .map(|(t, c, n)| (t.to_owned(), c.to_owned(), n));
    assert_eq!(replaced, expected, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("devices.display_name: 1 values held U+0000")),
        "{lines:#?}"
    );

    // In PostgreSQL, as reported.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (name, msg, queued): (String, String, String) = runtime.block_on(async {
        let o = &db.opts;
        let (client, conn) = tokio_postgres::Config::new()
            .host(&o.host)
            .port(o.port)
            .user(&o.user)
            .dbname(&o.dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let one = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one(sql, &[])
                    .await
                    .unwrap()
                    .get::<_, String>(0)
            }
        };
        (
            one("SELECT display_name FROM devices").await,
            one("SELECT status_msg FROM presence_userid_state").await,
            one("SELECT status_msg FROM destination_presence_outbox").await,
        )
    });
    let r = NUL_REPLACEMENT;
    assert_eq!(name, format!("ph{r}ne"));
    assert_eq!(msg, format!("a{r}b{r}"));
    assert_eq!(queued, format!("a{r}b{r}"));
}
