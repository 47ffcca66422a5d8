//! `GroupCommit`: the writes of several writers in one commit, where a row
//! the backend refuses fails only its own writer and the others' rows are
//! stored. On PostgreSQL with a real refusal (U+0000 in `TEXT`); SQLite
//! stores any text, so there the refusal comes from a wrapper that refuses
//! as PostgreSQL does, in front of a real SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use presenced_engine::{Presence, PresenceState, StreamPos, Timestamp};
use presenced_store::postgres::PgStore;
use presenced_store::presence::group::GroupCommit;
use presenced_store::presence::{PresenceStore, SqlitePresenceStore, StoreFailure};
use presenced_store::testing::FreshPgDatabase;
use ruma_common::OwnedUserId;

fn user(id: &str) -> OwnedUserId {
    id.try_into().unwrap()
}

fn state(id: &str, msg: &str) -> PresenceState {
    let mut s = PresenceState::new(user(id));
    s.presence = Presence::Online;
    s.status_msg = Some(msg.into());
    s.last_active_ts = Timestamp(1_000);
    s
}

type Share = Vec<(StreamPos, PresenceState)>;

/// What a writer sends: two states of its own user, or (the bad writer)
/// one the backend refuses.
fn share_of(writer: usize) -> Share {
    let id = format!("@w{writer}:x.org");
    if writer == BAD {
        return vec![(40, state(&id, "bad\u{0}msg"))];
    }
    vec![
        (writer as StreamPos * 2, state(&id, "first")),
        (writer as StreamPos * 2 + 1, state(&id, "second")),
    ]
}

const WRITERS: usize = 6;
const BAD: usize = 3;

/// Six writer threads hand their shares in at once (as PUTs do to the
/// presence writer), one of them with a row the backend refuses; one
/// commit stores them all.
fn commit_concurrent_writers(store: &dyn PresenceStore) -> Vec<Result<(), StoreFailure>> {
    let shares: Arc<Mutex<Vec<(usize, Share)>>> = Arc::default();
    let ready = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (shares, ready) = (shares.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                shares.lock().unwrap().push((w, share_of(w)));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut arrived = std::mem::take(&mut *shares.lock().unwrap());
    arrived.sort_by_key(|(w, _)| *w);
    let mut group = GroupCommit::default();
    for (_, share) in arrived {
        group.add(share, Vec::new(), Vec::new());
    }
    group.commit(store)
}

/// Only the bad writer failed, with a refusal; every other writer's
/// latest state is stored; the bad row is not.
fn assert_only_the_bad_writer_failed(
    store: &dyn PresenceStore,
    outcome: &[Result<(), StoreFailure>],
) {
    for (w, result) in outcome.iter().enumerate() {
        if w == BAD {
            let e = result.as_ref().expect_err("the NUL writer must fail");
            assert!(e.is_refusal(), "{e}");
        } else {
            assert!(result.is_ok(), "writer {w} failed: {result:?}");
        }
    }
    let stored = store.load().unwrap();
    let mut users: Vec<(String, String)> = stored
        .iter()
        .map(|(_, s)| {
            let msg = s.status_msg.as_deref().unwrap_or_default();
            (s.user_id.to_string(), msg.to_owned())
        })
        .collect();
    users.sort();
    let expected: Vec<(String, String)> = (0..WRITERS)
        .filter(|w| *w != BAD)
        .map(|w| (format!("@w{w}:x.org"), "second".to_owned()))
        .collect();
    assert_eq!(users, expected);
}

#[test]
fn postgres_a_refused_row_fails_only_its_writer() {
    let Some(db) = FreshPgDatabase::create("group_commit_refusal") else {
        return;
    };
    let x_org: &ruma_common::ServerName = "x.org".try_into().unwrap();
    let store = PgStore::open(&db.opts, x_org).unwrap();
    // The refusal is PostgreSQL's own, and known for one.
    let alone = store.persist(&[(1, state("@solo:x.org", "a\u{0}b"))]);
    assert!(
        alone.as_ref().is_err_and(StoreFailure::is_refusal),
        "{alone:?}"
    );

    let outcome = commit_concurrent_writers(&store);
    assert_only_the_bad_writer_failed(&store, &outcome);
}

/// A real SQLite store behind a wrapper that refuses U+0000 in a status
/// message as PostgreSQL does (SQLite itself stores it), counting writes.
struct RefusesNul {
    inner: SqlitePresenceStore,
    persists: AtomicUsize,
    down: bool,
}

impl PresenceStore for RefusesNul {
    fn persist(&self, states: &[(StreamPos, PresenceState)]) -> Result<(), StoreFailure> {
        self.persists.fetch_add(1, Ordering::Relaxed);
        if self.down {
            return Err(StoreFailure::new("connection refused"));
        }
        let nul = states
            .iter()
            .any(|(_, s)| s.status_msg.as_deref().is_some_and(|m| m.contains('\0')));
        if nul {
            return Err(StoreFailure::refusal("invalid byte sequence: 0x00"));
        }
        self.inner.persist(states)
    }
    fn save_quiet(&self, states: &[PresenceState]) -> Result<(), StoreFailure> {
        self.inner.save_quiet(states)
    }
    fn load(&self) -> Result<Vec<(StreamPos, PresenceState)>, StoreFailure> {
        self.inner.load()
    }
    fn persist_marks(&self, marks: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        self.inner.persist_marks(marks)
    }
    fn load_marks(&self) -> Result<Vec<(OwnedUserId, StreamPos)>, StoreFailure> {
        self.inner.load_marks()
    }
    fn forget(&self, users: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        self.inner.forget(users)
    }
}

fn refuses_nul(dir: &tempfile::TempDir, down: bool) -> RefusesNul {
    RefusesNul {
        inner: SqlitePresenceStore::open(&dir.path().join("presenced.db")).unwrap(),
        persists: AtomicUsize::new(0),
        down,
    }
}

#[test]
fn sqlite_a_refused_row_fails_only_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = refuses_nul(&dir, false);
    let outcome = commit_concurrent_writers(&store);
    assert_only_the_bad_writer_failed(&store, &outcome);
    // One grouped write, then one per user (6 writers, 6 users).
    assert_eq!(store.persists.load(Ordering::Relaxed), 1 + WRITERS);
}

#[test]
fn a_superseded_state_shares_the_fate_of_the_row_that_replaced_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = refuses_nul(&dir, false);
    let mut group = GroupCommit::default();
    // Writer 0's state of @a is replaced by writer 1's later NUL one.
    group.add(vec![(1, state("@a:x.org", "fine"))], Vec::new(), Vec::new());
    group.add(
        vec![(2, state("@a:x.org", "x\u{0}"))],
        Vec::new(),
        Vec::new(),
    );
    group.add(vec![(3, state("@b:x.org", "ok"))], Vec::new(), Vec::new());
    let outcome = group.commit(&store);
    assert!(outcome[0].is_err() && outcome[1].is_err(), "{outcome:?}");
    assert!(outcome[2].is_ok(), "{outcome:?}");
    let stored: Vec<String> = store
        .load()
        .unwrap()
        .into_iter()
        .map(|(_, s)| s.user_id.to_string())
        .collect();
    assert_eq!(stored, ["@b:x.org"]);
}

#[test]
fn a_backend_that_is_down_fails_the_group_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = refuses_nul(&dir, true);
    let outcome = commit_concurrent_writers(&store);
    assert!(outcome.iter().all(Result::is_err), "{outcome:?}");
    assert_eq!(
        store.persists.load(Ordering::Relaxed),
        1,
        "no row-by-row retries"
    );
}
