//! One storage conformance suite, run on both backends: every test below
//! is a function of a [`Db`], called once on a SQLite file and once on a
//! fresh PostgreSQL database (skipped with a message when PostgreSQL is
//! not reachable, a failure under `PRESENCED_REQUIRE_POSTGRES=1`). The
//! same inputs must give the same answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_engine::{Presence, PresenceState, Timestamp};
use presenced_store::companion::{MembershipEvent, RoomMembership};
use presenced_store::membership::Membership;
use presenced_store::postgres::{PgOpenError, PgStore};
use presenced_store::presence::{PresenceStore, SqlitePresenceStore};
use presenced_store::sqlite::SqliteStore;
use presenced_store::testing::{admin_batch, member_event, FreshPgDatabase};
use presenced_store::{NewEvent, NewUser, Store, StoreError, TxnKey};
use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedServerName, OwnedUserId, ServerName};
use serde_json::json;

/// Where a test's data lives; opened (and reopened) as the server opens it.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(Box<FreshPgDatabase>),
}

/// Both stores of one open database.
struct Opened {
    store: Arc<dyn Store>,
    presence: Arc<dyn PresenceStore>,
}

impl Db {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres(name: &str) -> Option<Self> {
        FreshPgDatabase::create(name).map(|db| Self::Postgres(Box::new(db)))
    }

    /// Opens it for `x.org`, the server of the users below.
    fn open(&self) -> Opened {
        self.open_as("x.org").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens it for `server_name`; a refusal is the store's error (on
    /// PostgreSQL, the one inside [`PgOpenError::ServerName`]).
    fn open_as(&self, server_name: &str) -> Result<Opened, StoreError> {
        let name = <&ServerName>::try_from(server_name).unwrap();
        match self {
            Self::Sqlite(dir) => {
                let path = dir.path().join("presenced.db");
                let store = SqliteStore::open(&path, name)?;
                Ok(Opened {
                    store: Arc::new(store),
                    presence: Arc::new(SqlitePresenceStore::open(&path).unwrap()),
                })
            }
            Self::Postgres(db) => {
                // A closed store's lock goes with its session, which the
                // server notices a moment later.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match PgStore::open(&db.opts, name) {
                        Ok(store) => {
                            let store = Arc::new(store);
                            return Ok(Opened {
                                store: store.clone(),
                                presence: store,
                            });
                        }
                        Err(PgOpenError::Locked { .. }) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(PgOpenError::ServerName { mismatch, .. }) => return Err(mismatch),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }

    /// Runs SQL on the closed database, beside the stores.
    fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("presenced.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Self::Postgres(db) => admin_batch(&db.opts, sql).unwrap(),
        }
    }

    /// Makes the database one of before the server_name was recorded:
    /// the same schema without migration 3 (and the later ones, which
    /// the next open applies again).
    fn forget_recorded_name(&self) {
        self.exec(match self {
            Self::Sqlite(_) => {
                "DROP TABLE companion_as_txns; DROP TABLE companion_memberships; \
                 DROP TABLE companion_membership_changes; \
                 DROP TABLE presenced_server_name; PRAGMA user_version = 2;"
            }
            Self::Postgres(_) => {
                "DROP TABLE companion_as_txns; DROP TABLE companion_memberships; \
                 DROP TABLE companion_membership_changes; \
                 DROP TABLE presenced_server_name; \
                 UPDATE presenced_schema_version SET version = 2"
            }
        });
    }

    /// Whether the server_name table exists (a refused open of an old
    /// database must not have migrated it).
    fn has_name_table(&self) -> bool {
        match self {
            Self::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("presenced.db"))
                .unwrap()
                .query_row(
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'presenced_server_name'",
                    [],
                    |r| r.get(0),
                )
                .unwrap(),
            Self::Postgres(db) => {
                // `admin_batch` returns no rows: the answer is an error.
                match admin_batch(
                    &db.opts,
                    "DO $$ BEGIN IF to_regclass('presenced_server_name') IS NOT NULL \
                     THEN RAISE EXCEPTION 'the table exists'; END IF; END $$",
                ) {
                    Ok(()) => false,
                    Err(e) if e.contains("the table exists") => true,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

/// The refusal's names and evidence.
fn mismatch(result: Result<Opened, StoreError>) -> (String, String, String) {
    match result {
        Err(StoreError::ServerNameMismatch {
            found,
            configured,
            evidence,
        }) => (found, configured, evidence),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("opened under another server_name"),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Db::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(db) = super::Db::postgres(stringify!($name)) {
                    super::$name(db);
                }
            } )*
        }
    };
}

conformance!(
    users_are_created_once_and_deactivated,
    tokens_belong_to_one_device_and_go_with_it,
    membership_changes_and_timelines_since_a_position,
    transactions_and_join_rules_are_found,
    timelines_are_limited_from_the_newest_end,
    filters_are_numbered_per_user,
    the_outbox_keeps_the_latest_state_in_its_place,
    a_sent_outbox_entry_replaced_meanwhile_stays,
    presence_keeps_the_latest_state_per_user,
    quiet_saves_keep_positions_and_marks_only_grow,
    forget_deletes_only_states_at_or_before_the_position,
    everything_survives_reopening,
    the_first_server_name_is_kept_and_another_refused,
    an_unrecorded_database_is_judged_by_its_users,
    an_empty_unrecorded_database_takes_the_name_it_is_opened_for,
    companion_transactions_apply_once,
    companion_memberships_keep_the_newest_event,
    companion_bootstrap_and_replay_agree,
    companion_changes_are_numbered_in_storage_order,
);

fn user(id: &str) -> OwnedUserId {
    id.try_into().unwrap()
}

fn room(id: &str) -> OwnedRoomId {
    id.try_into().unwrap()
}

fn new_user(id: &str, admin: bool) -> NewUser {
    NewUser {
        user_id: user(id),
        password_hash: Some(format!("hash-of-{id}")),
        admin,
        created_ts: Timestamp(1_000),
    }
}

fn message(room: &OwnedRoomId, user: &OwnedUserId, body: &str) -> NewEvent {
    NewEvent {
        state_key: None,
        event_type: "m.room.message".to_owned(),
        content: json!({ "body": body }),
        ..member_event(room, user, "join")
    }
}

fn state(id: &str, presence: Presence, msg: Option<&str>) -> PresenceState {
    let mut s = PresenceState::new(user(id));
    s.presence = presence;
    s.status_msg = msg.map(Into::into);
    s.last_active_ts = Timestamp(1_000);
    s
}

fn server(name: &str) -> OwnedServerName {
    name.try_into().unwrap()
}

fn users_are_created_once_and_deactivated(db: Db) {
    let s = db.open().store;
    s.create_user(&new_user("@bob:x.org", false)).unwrap();
    s.create_user(&new_user("@alice:x.org", true)).unwrap();
    assert!(matches!(
        s.create_user(&new_user("@alice:x.org", false)),
        Err(StoreError::UserInUse)
    ));
    let alice = s.user(&user("@alice:x.org")).unwrap().unwrap();
    assert!(alice.admin && !alice.deactivated);
    assert_eq!(alice.password_hash.as_deref(), Some("hash-of-@alice:x.org"));
    assert_eq!(s.user(&user("@nobody:x.org")).unwrap(), None);
    assert_eq!(
        s.local_users().unwrap(),
        [user("@alice:x.org"), user("@bob:x.org")],
        "sorted"
    );
    s.deactivate_user(&user("@bob:x.org")).unwrap();
    assert!(s.user(&user("@bob:x.org")).unwrap().unwrap().deactivated);
    assert_eq!(s.local_users().unwrap(), [user("@alice:x.org")]);
}

fn tokens_belong_to_one_device_and_go_with_it(db: Db) {
    let s = db.open().store;
    let alice = user("@alice:x.org");
    s.create_user(&new_user("@alice:x.org", true)).unwrap();
    let phone: OwnedDeviceId = "PHONE".into();
    let laptop: OwnedDeviceId = "LAPTOP".into();
    s.issue_token(&alice, &phone, Some("Phone"), "t1", Timestamp(5))
        .unwrap();
    s.issue_token(&alice, &laptop, None, "t2", Timestamp(6))
        .unwrap();
    let owner = s.token_owner("t1").unwrap().unwrap();
    assert_eq!(
        (
            owner.user_id.as_str(),
            owner.device_id.as_str(),
            owner.admin
        ),
        ("@alice:x.org", "PHONE", true)
    );
    // A new login on the same device replaces its token.
    s.issue_token(&alice, &phone, None, "t3", Timestamp(7))
        .unwrap();
    assert_eq!(s.token_owner("t1").unwrap(), None);
    assert!(s.token_owner("t3").unwrap().is_some());
    s.delete_device(&alice, &phone).unwrap();
    assert_eq!(s.token_owner("t3").unwrap(), None);
    assert!(s.token_owner("t2").unwrap().is_some());
    s.issue_token(&alice, &phone, None, "t4", Timestamp(8))
        .unwrap();
    let mut gone = s.delete_all_devices(&alice).unwrap();
    gone.sort();
    assert_eq!(gone, [laptop, phone]);
    assert_eq!(s.token_owner("t2").unwrap(), None);
    assert_eq!(s.token_owner("t4").unwrap(), None);
    // A deactivated user's token is not answered.
    s.issue_token(&alice, &OwnedDeviceId::from("D"), None, "t5", Timestamp(9))
        .unwrap();
    s.deactivate_user(&alice).unwrap();
    assert_eq!(s.token_owner("t5").unwrap(), None);
}

fn membership_changes_and_timelines_since_a_position(db: Db) {
    let store = db.open().store;
    let alice = user("@alice:x.org");
    let bob = user("@bob:x.org");
    let r1 = room("!one:x.org");
    let r2 = room("!two:x.org");
    store
        .create_room(
            &r1,
            &alice,
            Timestamp::ZERO,
            &[member_event(&r1, &alice, "join")],
        )
        .unwrap();
    store
        .create_room(
            &r2,
            &alice,
            Timestamp::ZERO,
            &[member_event(&r2, &alice, "join")],
        )
        .unwrap();
    let before_bob = store.max_stream().unwrap();

    store
        .append_events(&[member_event(&r1, &bob, "invite")])
        .unwrap();
    store
        .append_events(&[member_event(&r1, &bob, "join")])
        .unwrap();
    store
        .append_events(&[member_event(&r2, &bob, "invite")])
        .unwrap();
    let streams = store
        .append_events(&[message(&r1, &alice, "one"), message(&r1, &bob, "two")])
        .unwrap();
    assert_eq!(streams.len(), 2);
    assert!(streams[0] < streams[1], "positions grow in order");
    let now = store.max_stream().unwrap();
    assert_eq!(now, streams[1]);

    let changes = store.membership_changes(&bob, before_bob, now).unwrap();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.room_id.as_str(), c.membership))
        .collect();
    assert_eq!(
        summary,
        [
            ("!one:x.org", Membership::Join),
            ("!two:x.org", Membership::Invite)
        ]
    );
    assert!(store.membership_changes(&bob, now, now).unwrap().is_empty());

    store
        .append_events(&[member_event(&r2, &bob, "leave")])
        .unwrap();
    let later = store.max_stream().unwrap();
    let changes = store.membership_changes(&bob, now, later).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].membership, Membership::Leave);

    let join_pos = store
        .user_memberships(&bob)
        .unwrap()
        .iter()
        .find(|m| m.room_id == r1)
        .unwrap()
        .stream;
    let tl = store.timeline(&r1, Some(join_pos), later, 10).unwrap();
    assert!(!tl.limited);
    let bodies: Vec<_> = tl
        .events
        .iter()
        .map(|e| e.content["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two"]);

    let state = store.state_at(&r1, join_pos - 1).unwrap();
    let bob_member = state
        .iter()
        .find(|e| e.state_key.as_deref() == Some("@bob:x.org"))
        .unwrap();
    assert_eq!(bob_member.content["membership"], "invite");
    let state = store.state_at(&r1, later).unwrap();
    let bob_member = state
        .iter()
        .find(|e| e.state_key.as_deref() == Some("@bob:x.org"))
        .unwrap();
    assert_eq!(bob_member.content["membership"], "join");

    assert_eq!(
        store.membership(&r2, &bob).unwrap(),
        Some(Membership::Leave)
    );
    assert_eq!(store.membership(&r2, &user("@carol:x.org")).unwrap(), None);
    assert_eq!(store.room_memberships(&r1).unwrap().len(), 2);
    let members: Vec<_> = store
        .member_events(&r1)
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.state_key.clone().unwrap(),
                e.content["membership"].clone(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("@alice:x.org".to_owned(), json!("join")),
            ("@bob:x.org".to_owned(), json!("join"))
        ]
    );
    let live: Vec<_> = store
        .live_memberships()
        .unwrap()
        .iter()
        .map(|m| (m.room_id.to_string(), m.user_id.to_string(), m.membership))
        .collect();
    assert_eq!(live.len(), 3, "alice twice, bob in r1 (left r2): {live:?}");
}

fn transactions_and_join_rules_are_found(db: Db) {
    let s = db.open().store;
    let alice = user("@alice:x.org");
    let open = room("!open:x.org");
    let plain = room("!plain:x.org");
    let mut rule = message(&open, &alice, "");
    rule.event_type = "m.room.join_rules".to_owned();
    rule.state_key = Some(String::new());
    rule.content = json!({"join_rule": "public"});
    s.create_room(
        &open,
        &alice,
        Timestamp::ZERO,
        &[member_event(&open, &alice, "join"), rule],
    )
    .unwrap();
    s.create_room(
        &plain,
        &alice,
        Timestamp::ZERO,
        &[member_event(&plain, &alice, "join")],
    )
    .unwrap();
    let mut rules = s.room_join_rules().unwrap();
    rules.sort();
    assert_eq!(
        rules,
        [
            (open.clone(), Some("public".to_owned())),
            (plain.clone(), None)
        ]
    );
    let mut sent = message(&open, &alice, "hi");
    sent.txn = Some(TxnKey {
        device_id: "PHONE".into(),
        txn_id: "m1".to_owned(),
    });
    let id = sent.event_id.clone();
    s.append_events(&[sent]).unwrap();
    assert_eq!(
        s.event_for_txn(&alice, &OwnedDeviceId::from("PHONE"), "m1")
            .unwrap(),
        Some(id.clone())
    );
    assert_eq!(
        s.event_for_txn(&alice, &OwnedDeviceId::from("LAPTOP"), "m1")
            .unwrap(),
        None
    );
    let tl = s.timeline(&open, None, s.max_stream().unwrap(), 1).unwrap();
    assert_eq!(tl.events[0].event_id, id);
    assert_eq!(
        tl.events[0].txn,
        Some(TxnKey {
            device_id: "PHONE".into(),
            txn_id: "m1".to_owned()
        })
    );
}

fn timelines_are_limited_from_the_newest_end(db: Db) {
    let s = db.open().store;
    let alice = user("@alice:x.org");
    let r = room("!r:x.org");
    s.create_room(
        &r,
        &alice,
        Timestamp::ZERO,
        &[member_event(&r, &alice, "join")],
    )
    .unwrap();
    let events: Vec<_> = (0..5)
        .map(|i| message(&r, &alice, &format!("m{i}")))
        .collect();
    s.append_events(&events).unwrap();
    let upto = s.max_stream().unwrap();
    let tl = s.timeline(&r, None, upto, 3).unwrap();
    assert!(tl.limited);
    let bodies: Vec<_> = tl
        .events
        .iter()
        .map(|e| e.content["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, ["m2", "m3", "m4"], "the newest three, oldest first");
    let tl = s.timeline(&r, None, upto, 6).unwrap();
    assert!(!tl.limited);
    assert_eq!(tl.events.len(), 6);
    assert!(s
        .timeline(&r, Some(upto), upto, 10)
        .unwrap()
        .events
        .is_empty());
}

fn filters_are_numbered_per_user(db: Db) {
    let s = db.open().store;
    let (alice, bob) = (user("@alice:x.org"), user("@bob:x.org"));
    let f = json!({"presence": {"types": []}});
    assert_eq!(s.create_filter(&alice, &f).unwrap(), "0");
    assert_eq!(s.create_filter(&alice, &json!({})).unwrap(), "1");
    assert_eq!(s.create_filter(&bob, &json!({})).unwrap(), "0");
    assert_eq!(s.filter(&alice, "0").unwrap(), Some(f));
    assert_eq!(s.filter(&bob, "1").unwrap(), None);
    assert_eq!(s.filter(&alice, "not-a-number").unwrap(), None);
}

fn the_outbox_keeps_the_latest_state_in_its_place(db: Db) {
    let store = db.open().store;
    let b = server("b.test");
    store
        .queue_presence(&[
            (
                b.clone(),
                state("@x:a.test", Presence::Online, Some("first")),
            ),
            (b.clone(), state("@y:a.test", Presence::Online, None)),
            (server("c.test"), state("@x:a.test", Presence::Online, None)),
        ])
        .unwrap();
    store
        .queue_presence(&[(
            b.clone(),
            state("@x:a.test", Presence::Unavailable, Some("second")),
        )])
        .unwrap();
    let pending = store.pending_presence(&b, 10).unwrap();
    let users: Vec<&str> = pending.iter().map(|e| e.state.user_id.as_str()).collect();
    assert_eq!(users, ["@x:a.test", "@y:a.test"], "x keeps its place");
    assert_eq!(pending[0].state.presence, Presence::Unavailable);
    assert_eq!(pending[0].state.status_msg.as_deref(), Some("second"));
    assert_eq!(pending[0].state.last_active_ts, Timestamp(1_000));
    assert!(
        pending[0].seq > pending[1].seq,
        "a replaced entry gets a new seq"
    );
    assert_eq!(store.outbox_len().unwrap(), 3);
    let mut destinations = store.outbox_destinations().unwrap();
    destinations.sort();
    assert_eq!(destinations, [b.clone(), server("c.test")]);
    assert_eq!(store.pending_presence(&b, 1).unwrap().len(), 1, "limit");
    // The same user twice in one batch: the later state, the first place.
    store
        .queue_presence(&[
            (
                server("d.test"),
                state("@z:a.test", Presence::Online, Some("a")),
            ),
            (server("d.test"), state("@w:a.test", Presence::Online, None)),
            (
                server("d.test"),
                state("@z:a.test", Presence::Offline, Some("b")),
            ),
        ])
        .unwrap();
    let d = store.pending_presence(&server("d.test"), 10).unwrap();
    let summary: Vec<_> = d
        .iter()
        .map(|e| (e.state.user_id.as_str(), e.state.status_msg.as_deref()))
        .collect();
    assert_eq!(summary, [("@z:a.test", Some("b")), ("@w:a.test", None)]);
}

fn a_sent_outbox_entry_replaced_meanwhile_stays(db: Db) {
    let store = db.open().store;
    let b = server("b.test");
    store
        .queue_presence(&[
            (b.clone(), state("@x:a.test", Presence::Online, None)),
            (b.clone(), state("@y:a.test", Presence::Online, None)),
        ])
        .unwrap();
    let sent: Vec<_> = store
        .pending_presence(&b, 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.state.user_id, e.seq))
        .collect();
    store
        .queue_presence(&[(b.clone(), state("@x:a.test", Presence::Offline, None))])
        .unwrap();
    assert_eq!(store.remove_sent_presence(&b, &sent).unwrap(), 1);
    let left = store.pending_presence(&b, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state.user_id.as_str(), "@x:a.test");
    assert_eq!(left[0].state.presence, Presence::Offline);
    assert_eq!(store.remove_sent_presence(&b, &[]).unwrap(), 0);
}

fn presence_keeps_the_latest_state_per_user(db: Db) {
    let p = db.open().presence;
    let mut full = state("@a:x.org", Presence::Unavailable, Some("away"));
    full.last_federation_update_ts = Timestamp(7);
    full.last_user_sync_ts = Timestamp(8);
    full.currently_active = true;
    p.persist(&[
        (5, full.clone()),
        (6, state("@b:x.org", Presence::Online, None)),
    ])
    .unwrap();
    // An older position never overwrites a newer one; within one batch the
    // later of two equal positions wins.
    p.persist(&[(4, state("@a:x.org", Presence::Offline, None))])
        .unwrap();
    p.persist(&[
        (9, state("@b:x.org", Presence::Offline, Some("one"))),
        (9, state("@b:x.org", Presence::Offline, Some("two"))),
        (8, state("@b:x.org", Presence::Online, Some("old"))),
    ])
    .unwrap();
    let loaded = p.load().unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0], (5, full), "every field, ordered by position");
    assert_eq!(loaded[1].0, 9);
    assert_eq!(loaded[1].1.status_msg.as_deref(), Some("two"));
}

fn quiet_saves_keep_positions_and_marks_only_grow(db: Db) {
    let p = db.open().presence;
    p.persist(&[(5, state("@a:x.org", Presence::Online, None))])
        .unwrap();
    let mut quiet = state("@a:x.org", Presence::Online, None);
    quiet.last_active_ts = Timestamp(99);
    p.save_quiet(&[quiet, state("@new:x.org", Presence::Offline, None)])
        .unwrap();
    let loaded = p.load().unwrap();
    let a = loaded
        .iter()
        .find(|(_, s)| s.user_id == "@a:x.org")
        .unwrap();
    assert_eq!((a.0, a.1.last_active_ts), (5, Timestamp(99)));
    let new = loaded
        .iter()
        .find(|(_, s)| s.user_id == "@new:x.org")
        .unwrap();
    assert_eq!(new.0, 0);
    p.persist_marks(&[(user("@a:x.org"), 10), (user("@b:x.org"), 3)])
        .unwrap();
    p.persist_marks(&[(user("@a:x.org"), 7), (user("@b:x.org"), 4)])
        .unwrap();
    let mut marks = p.load_marks().unwrap();
    marks.sort();
    assert_eq!(marks, [(user("@a:x.org"), 10), (user("@b:x.org"), 4)]);
}

fn forget_deletes_only_states_at_or_before_the_position(db: Db) {
    let p = db.open().presence;
    p.persist(&[
        (3, state("@old:r.org", Presence::Online, None)),
        (5, state("@back:r.org", Presence::Online, None)),
    ])
    .unwrap();
    p.forget(&[
        (user("@old:r.org"), 3),
        (user("@back:r.org"), 4),
        (user("@never:r.org"), 0),
    ])
    .unwrap();
    let left: Vec<String> = p
        .load()
        .unwrap()
        .into_iter()
        .map(|(_, s)| s.user_id.to_string())
        .collect();
    assert_eq!(left, ["@back:r.org"]);
}

fn everything_survives_reopening(db: Db) {
    let alice = user("@alice:x.org");
    let r = room("!r:x.org");
    {
        let opened = db.open();
        opened
            .store
            .create_user(&new_user("@alice:x.org", true))
            .unwrap();
        opened
            .store
            .issue_token(&alice, &OwnedDeviceId::from("D"), None, "tok", Timestamp(1))
            .unwrap();
        opened
            .store
            .create_room(
                &r,
                &alice,
                Timestamp::ZERO,
                &[member_event(&r, &alice, "join")],
            )
            .unwrap();
        opened
            .store
            .create_filter(&alice, &json!({"a": 1}))
            .unwrap();
        opened
            .store
            .queue_presence(&[(
                server("b.test"),
                state("@alice:x.org", Presence::Online, None),
            )])
            .unwrap();
        opened
            .presence
            .persist(&[(42, state("@alice:x.org", Presence::Online, Some("hi")))])
            .unwrap();
        opened
            .presence
            .persist_marks(&[(alice.clone(), 40)])
            .unwrap();
    }
    // Reopening runs no migration twice and finds everything.
    let opened = db.open();
    let s = &opened.store;
    assert!(s.user(&alice).unwrap().unwrap().admin);
    assert!(s.token_owner("tok").unwrap().is_some());
    assert_eq!(s.membership(&r, &alice).unwrap(), Some(Membership::Join));
    assert_eq!(s.filter(&alice, "0").unwrap(), Some(json!({"a": 1})));
    assert_eq!(s.outbox_len().unwrap(), 1);
    let loaded = opened.presence.load().unwrap();
    assert_eq!(loaded[0].0, 42);
    assert_eq!(loaded[0].1.status_msg.as_deref(), Some("hi"));
    assert_eq!(opened.presence.load_marks().unwrap(), [(alice, 40)]);
    // New events continue after the old ones.
    let before = s.max_stream().unwrap();
    let after = s
        .append_events(&[message(&r, &user("@alice:x.org"), "x")])
        .unwrap();
    assert!(after[0] > before);
}

fn the_first_server_name_is_kept_and_another_refused(db: Db) {
    let alice = user("@alice:x.org");
    {
        let opened = db.open();
        opened
            .store
            .create_user(&new_user("@alice:x.org", false))
            .unwrap();
        opened
            .store
            .issue_token(&alice, &OwnedDeviceId::from("D"), None, "tok", Timestamp(1))
            .unwrap();
    }
    let (found, configured, evidence) = mismatch(db.open_as("y.org"));
    assert_eq!((found.as_str(), configured.as_str()), ("x.org", "y.org"));
    assert!(evidence.contains("recorded"), "{evidence}");
    // With every user gone the record alone still decides.
    db.exec("DELETE FROM access_tokens; DELETE FROM devices; DELETE FROM users");
    mismatch(db.open_as("y.org"));
    // The first name opens it as before.
    db.open();
}

fn an_unrecorded_database_is_judged_by_its_users(db: Db) {
    {
        let opened = db.open();
        opened
            .store
            .create_user(&new_user("@alice:x.org", false))
            .unwrap();
        opened
            .store
            .create_user(&new_user("@bob:x.org", false))
            .unwrap();
    }
    db.forget_recorded_name();
    let (found, configured, evidence) = mismatch(db.open_as("y.org"));
    assert_eq!((found.as_str(), configured.as_str()), ("x.org", "y.org"));
    assert!(evidence.contains("@alice:x.org"), "{evidence}");
    // Refused before the migrations: the database is as it was.
    assert!(!db.has_name_table());
    // A name the users' ends with is another name.
    mismatch(db.open_as("org"));
    // Its own name opens it, migrates it and records the name, which
    // then holds without the users.
    let opened = db.open();
    assert!(opened.store.user(&user("@bob:x.org")).unwrap().is_some());
    drop(opened);
    assert!(db.has_name_table());
    db.exec("DELETE FROM users");
    let (found, _, evidence) = mismatch(db.open_as("y.org"));
    assert_eq!(found, "x.org");
    assert!(evidence.contains("recorded"), "{evidence}");
}

fn an_empty_unrecorded_database_takes_the_name_it_is_opened_for(db: Db) {
    drop(db.open());
    db.forget_recorded_name();
    // No user says otherwise: y.org is recorded, and x.org refused.
    drop(db.open_as("y.org").unwrap_or_else(|e| panic!("{e}")));
    let (found, configured, _) = mismatch(db.open_as("x.org"));
    assert_eq!((found.as_str(), configured.as_str()), ("y.org", "x.org"));
}

/// A membership event of `user` in `room` at `ts` (ms), sent by `user`.
fn member_at(
    room_id: &str,
    user_id: &str,
    m: RoomMembership,
    ts: u64,
    id: &str,
) -> MembershipEvent {
    MembershipEvent {
        room_id: room(room_id),
        user_id: user(user_id),
        sender: user(user_id),
        membership: m,
        origin_server_ts: Timestamp(ts),
        event_id: id.try_into().unwrap(),
    }
}

/// The stored view, reduced to who is joined where.
fn joined(store: &dyn Store) -> Vec<(String, String)> {
    store
        .companion_joined()
        .unwrap()
        .into_iter()
        .map(|(r, u)| (r.to_string(), u.to_string()))
        .collect()
}

fn companion_transactions_apply_once(db: Db) {
    let s = db.open().store;
    assert!(!s.companion_has_memberships().unwrap());
    let events = [
        member_at("!r:y.org", "@bob:y.org", RoomMembership::Join, 10, "$b1"),
        member_at("!r:y.org", "@alice:x.org", RoomMembership::Join, 11, "$a1"),
    ];
    let applied = s.apply_membership_transaction("t1", &events).unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[0].event, events[0]);
    assert_eq!(applied[0].previous, None);
    assert!(s.companion_has_memberships().unwrap());
    // Synapse re-sends a transaction it saw no answer to: nothing again,
    // even with other content under the same id.
    let leave = [member_at(
        "!r:y.org",
        "@bob:y.org",
        RoomMembership::Leave,
        20,
        "$b2",
    )];
    assert!(s
        .apply_membership_transaction("t1", &leave)
        .unwrap()
        .is_empty());
    assert_eq!(
        joined(&*s),
        [
            ("!r:y.org".to_owned(), "@alice:x.org".to_owned()),
            ("!r:y.org".to_owned(), "@bob:y.org".to_owned())
        ]
    );
    // A transaction of no memberships still counts as seen.
    assert!(s
        .apply_membership_transaction("t2", &[])
        .unwrap()
        .is_empty());
    assert!(s
        .apply_membership_transaction("t2", &leave)
        .unwrap()
        .is_empty());
    let applied = s.apply_membership_transaction("t3", &leave).unwrap();
    assert_eq!(applied[0].previous, Some(RoomMembership::Join));
    assert_eq!(
        joined(&*s),
        [("!r:y.org".to_owned(), "@alice:x.org".to_owned())]
    );
    // Kept across a restart.
    drop(s);
    let s = db.open().store;
    assert!(s
        .apply_membership_transaction("t3", &events)
        .unwrap()
        .is_empty());
    assert_eq!(joined(&*s).len(), 1);
}

fn companion_memberships_keep_the_newest_event(db: Db) {
    let s = db.open().store;
    let join = member_at("!r:y.org", "@bob:y.org", RoomMembership::Join, 100, "$m");
    s.upsert_memberships(std::slice::from_ref(&join)).unwrap();
    // Older: ignored. The same event again: ignored.
    let old_leave = member_at("!r:y.org", "@bob:y.org", RoomMembership::Leave, 99, "$z");
    assert!(s
        .upsert_memberships(&[old_leave, join.clone()])
        .unwrap()
        .is_empty());
    assert_eq!(joined(&*s).len(), 1);
    // Equal times: the larger event ID wins, whichever comes first.
    let tie_low = member_at("!r:y.org", "@bob:y.org", RoomMembership::Ban, 100, "$a");
    assert!(s.upsert_memberships(&[tie_low]).unwrap().is_empty());
    let tie_high = member_at("!r:y.org", "@bob:y.org", RoomMembership::Ban, 100, "$n");
    let applied = s.upsert_memberships(&[tie_high]).unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].previous, Some(RoomMembership::Join));
    assert!(joined(&*s).is_empty());
    // Within one batch each event compares with the one before it.
    let batch = [
        member_at("!q:y.org", "@c:y.org", RoomMembership::Invite, 5, "$1"),
        member_at("!q:y.org", "@c:y.org", RoomMembership::Join, 7, "$2"),
        member_at("!q:y.org", "@c:y.org", RoomMembership::Leave, 6, "$3"),
    ];
    let applied = s.upsert_memberships(&batch).unwrap();
    let kept: Vec<_> = applied
        .iter()
        .map(|a| (a.event.membership, a.previous))
        .collect();
    assert_eq!(
        kept,
        [
            (RoomMembership::Invite, None),
            (RoomMembership::Join, Some(RoomMembership::Invite))
        ]
    );
    assert_eq!(
        joined(&*s),
        [("!q:y.org".to_owned(), "@c:y.org".to_owned())]
    );
}

fn companion_bootstrap_and_replay_agree(db: Db) {
    let s = db.open().store;
    // The bootstrap read the current state: bob left at 300.
    let state = [
        member_at("!r:y.org", "@alice:y.org", RoomMembership::Join, 100, "$a1"),
        member_at("!r:y.org", "@bob:y.org", RoomMembership::Leave, 300, "$b3"),
    ];
    assert_eq!(s.upsert_memberships(&state).unwrap().len(), 2);
    // Then Synapse replays the history in batches: bob's old join must
    // not bring him back; a change newer than the bootstrap applies.
    let replay = [
        member_at("!r:y.org", "@alice:y.org", RoomMembership::Join, 100, "$a1"),
        member_at("!r:y.org", "@bob:y.org", RoomMembership::Join, 200, "$b2"),
    ];
    assert!(s
        .apply_membership_transaction("1", &replay)
        .unwrap()
        .is_empty());
    let later = [member_at(
        "!r:y.org",
        "@bob:y.org",
        RoomMembership::Join,
        400,
        "$b4",
    )];
    assert_eq!(
        s.apply_membership_transaction("2", &later).unwrap().len(),
        1
    );
    assert_eq!(
        joined(&*s),
        [
            ("!r:y.org".to_owned(), "@alice:y.org".to_owned()),
            ("!r:y.org".to_owned(), "@bob:y.org".to_owned())
        ]
    );
}

fn companion_changes_are_numbered_in_storage_order(db: Db) {
    let s = db.open().store;
    assert_eq!(s.companion_change_position().unwrap(), 0);
    assert!(s.companion_changes_after(0, 10).unwrap().is_empty());
    let txn = [
        member_at("!r:y.org", "@bob:y.org", RoomMembership::Join, 10, "$b1"),
        member_at("!r:y.org", "@alice:x.org", RoomMembership::Join, 11, "$a1"),
    ];
    s.apply_membership_transaction("t1", &txn).unwrap();
    // A copy of the transaction, and an event older than the view's, are
    // not changes: nothing is numbered for them.
    s.apply_membership_transaction("t1", &txn).unwrap();
    let stale = member_at("!r:y.org", "@bob:y.org", RoomMembership::Leave, 5, "$b0");
    assert!(s.upsert_memberships(&[stale]).unwrap().is_empty());
    // An invite keeps its inviter, a leave what it replaced.
    let mut invite = member_at(
        "!q:y.org",
        "@carol:x.org",
        RoomMembership::Invite,
        12,
        "$c1",
    );
    invite.sender = user("@alice:x.org");
    let leave = member_at("!r:y.org", "@bob:y.org", RoomMembership::Leave, 13, "$b2");
    s.upsert_memberships(&[invite.clone(), leave.clone()])
        .unwrap();
    let all = s.companion_changes_after(0, 10).unwrap();
    let numbers: Vec<i64> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(all[0].1.event, txn[0]);
    assert_eq!(all[0].1.previous, None);
    assert_eq!(all[2].1.event, invite);
    assert_eq!(all[3].1.event, leave);
    assert_eq!(all[3].1.previous, Some(RoomMembership::Join));
    assert_eq!(s.companion_change_position().unwrap(), 4);
    // From a position, at most `limit`.
    let page: Vec<i64> = s
        .companion_changes_after(1, 2)
        .unwrap()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(page, [2, 3]);
    // Kept across a restart, and numbering goes on after them.
    drop(s);
    let s = db.open().store;
    assert_eq!(s.companion_change_position().unwrap(), 4);
    let rejoin = member_at("!r:y.org", "@bob:y.org", RoomMembership::Join, 14, "$b3");
    s.apply_membership_transaction("t2", &[rejoin]).unwrap();
    let after = s.companion_changes_after(4, 10).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, 5);
    assert_eq!(after[0].1.previous, Some(RoomMembership::Leave));
}
