//! Catalogue K: incremental interest (`PresenceGetNewEventsStreamTestCase`),
//! and the stream rules of our engine: the change-log fallback, the
//! no-progress guard and `Interest::All` incremental syncs.

use presenced_engine::{EngineConfig, Interest, Presence};

use crate::common::*;

const U1: &str = "@user1:test";
const U2: &str = "@user2:test";
const U3: &str = "@user3:test";

/// K1: own updates and co-members' updates, not strangers'.
#[test]
fn k1_incremental_interest() {
    let mut t = T::new(EngineConfig::default());
    t.join("!a:test", U1);
    t.join("!a:test", U2);
    t.join("!b:test", U3);
    let p = t.position();
    for u in [U1, U2, U3] {
        t.put(u, Some("dev"), Presence::Online, None);
    }
    assert_eq!(t.sync_ids(U2, Some(p)), names(&[U1, U2]));
}

/// K2: an excluded room does not make user1 visible; a second, normal room
/// does. Setting online again is not notifiable and adds no stream entry.
#[test]
fn k2_incremental_interest_excluded_room() {
    let mut t = T::new(config(|c| {
        c.exclude_rooms_from_presence = [room("!x:test")].into_iter().collect();
    }));
    t.join("!x:test", U1);
    t.join("!x:test", U2);
    let p = t.position();
    t.put(U1, Some("dev"), Presence::Online, None);
    assert!(t.sync_ids(U2, Some(p)).is_empty());

    t.join("!y:test", U1);
    t.join("!y:test", U2);
    let p = t.position();
    t.put(U1, Some("dev"), Presence::Online, None);
    assert_eq!(t.position(), p, "re-setting online is not notifiable");
    assert!(t.sync_ids(U2, Some(p)).is_empty());
    t.put(U1, Some("dev"), Presence::Unavailable, None);
    assert_eq!(t.position(), p + 1);
    assert_eq!(t.sync_ids(U2, Some(p)), names(&[U1]));
}

/// A token at the current position gets nothing (no-progress guard), and the
/// same token back.
#[test]
fn since_current_position_returns_nothing() {
    let mut t = T::new(EngineConfig::default());
    t.join("!a:test", U1);
    t.join("!a:test", U2);
    t.put(U1, Some("d"), Presence::Online, None);
    t.put(U2, Some("d"), Presence::Online, None);
    let p = t.position();
    for interest in [Interest::None, Interest::All] {
        let (states, next) = t.sync(U2, Some(p), &interest);
        assert!(states.is_empty(), "{interest:?}");
        assert_eq!(next, p);
    }
    // One step back sees the last change.
    assert_eq!(t.sync_ids(U2, Some(p - 1)), names(&[U2]));
}

/// `Interest::All` incremental: every update since the token, local and
/// remote, own included, without any rooms (W1/W4 fixed).
#[test]
fn interest_all_incremental_sees_every_update() {
    let mut t = T::new(EngineConfig::default());
    t.put("@early:test", Some("d"), Presence::Online, None);
    let p = t.position();
    t.put("@observer:test", Some("d"), Presence::Online, None);
    t.put("@a:test", Some("d"), Presence::Unavailable, None);
    t.remote("other.org", "@r:other.org", Presence::Online, None);
    t.put("@b:test", Some("d"), Presence::Online, None);
    t.put("@b:test", Some("d"), Presence::Offline, None);
    let (states, next) = t.sync("@observer:test", Some(p), &Interest::All);
    assert_eq!(
        ids(&states),
        names(&["@observer:test", "@a:test", "@r:other.org", "@b:test"])
    );
    // Current states, offline included in incremental syncs, one per user.
    let b = states.iter().find(|s| s.user_id == "@b:test").unwrap();
    assert_eq!(b.presence, Presence::Offline);
    assert_eq!(next, t.position());
    // Without the router's ALL, the observer sees only themself.
    assert_eq!(
        t.sync_ids("@observer:test", Some(p)),
        names(&["@observer:test"])
    );
    // A user with no slot at all.
    let (states, _) = t.sync("@nobody:test", Some(p), &Interest::All);
    assert_eq!(states.len(), 4);
}

/// With a tiny change log, tokens older than the log still get exactly the
/// right answer, for room co-members and for `Interest::All`.
#[test]
fn change_log_fallback_is_exact() {
    for capacity in [1, 2, 3, 1000] {
        let mut t = T::new(config(|c| c.change_log_capacity = capacity));
        // A big room, so that the log path is preferred when it can answer.
        for i in 0..20 {
            t.join("!big:test", &format!("@m{i}:test"));
        }
        t.join("!big:test", U1);
        t.join("!big:test", U2);
        t.join("!other:test", U3);
        t.put("@m0:test", Some("d"), Presence::Online, None);
        let p0 = t.position();
        t.put(U1, Some("d"), Presence::Online, None);
        t.put(U3, Some("d"), Presence::Online, None);
        let p1 = t.position();
        t.put("@m5:test", Some("d"), Presence::Unavailable, None);
        t.remote("other.org", "@r:other.org", Presence::Online, None);
        t.put(U3, Some("d"), Presence::Unavailable, None);
        t.put(U1, Some("d"), Presence::Online, Some("msg"));

        assert_eq!(
            t.sync_ids(U2, Some(p0)),
            names(&[U1, "@m5:test"]),
            "capacity {capacity}"
        );
        assert_eq!(
            t.sync_ids(U2, Some(p1)),
            names(&[U1, "@m5:test"]),
            "capacity {capacity}"
        );
        assert_eq!(
            t.sync_ids(U3, Some(p0)),
            names(&[U3]),
            "capacity {capacity}"
        );
        let all = |since| ids(&t.sync(U2, Some(since), &Interest::All).0);
        assert_eq!(
            all(p0),
            names(&[U1, U3, "@m5:test", "@r:other.org"]),
            "capacity {capacity}"
        );
        assert_eq!(
            all(p1),
            names(&[U1, U3, "@m5:test", "@r:other.org"]),
            "capacity {capacity}"
        );
        let last = t.position() - 1;
        assert_eq!(ids(&t.sync(U2, Some(last), &Interest::All).0), names(&[U1]));
        // A token from just before m0's change.
        assert_eq!(
            t.sync_ids(U2, Some(p0 - 1)),
            names(&[U1, "@m0:test", "@m5:test"]),
            "capacity {capacity}"
        );
        // A token from before the joins: every co-member (not U2 itself) is new to U2.
        assert_eq!(t.sync_ids(U2, Some(0)).len(), 21, "capacity {capacity}");
    }
}

/// Every notifiable change is persisted at its own position before anyone
/// is told; the stream positions are consecutive.
#[test]
fn persisted_in_stream_order() {
    let mut t = T::new(EngineConfig::default());
    let p = t.position();
    for i in 0..5 {
        t.put(
            &format!("@user_{i}:test"),
            Some("d"),
            Presence::Online,
            Some("I'm online!"),
        );
    }
    let rows: Vec<(u64, String)> = t
        .persisted()
        .iter()
        .map(|(pos, s)| (*pos, s.user_id.to_string()))
        .collect();
    let expected: Vec<(u64, String)> = (0..5)
        .map(|i| (p + 1 + i, format!("@user_{i}:test")))
        .collect();
    assert_eq!(rows, expected);
}
