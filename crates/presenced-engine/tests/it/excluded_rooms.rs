//! Catalogue J: excluded rooms (`PresenceExcludeRoomsTestCase`), J1, J3 and
//! J4 as black-box equivalents (the exclusion list is configuration; J2 is
//! config parsing, server-level).

use presenced_engine::{EngineConfig, Interest, Presence};

use crate::common::*;

const U1: &str = "@user1:test";
const U2: &str = "@user2:test";
const X: &str = "!x:test";
const Y: &str = "!y:test";

fn excluding(rooms: &[&str]) -> EngineConfig {
    config(|c| c.exclude_rooms_from_presence = rooms.iter().map(|r| room(r)).collect())
}

/// J1: user2 shares only the excluded room X with user1: user1's changes
/// neither wake nor reach user2; user1 always gets their own presence. A
/// shared non-excluded room Y restores both.
#[test]
fn j1_excluded_rooms_not_routed() {
    let mut t = T::new(excluding(&[X]));
    t.join(X, U1);
    t.join(X, U2);
    let (_, token) = t.sync(U2, None, &Interest::None);
    t.wait(U1);
    t.wait(U2);
    t.put(U1, Some("d"), Presence::Online, None);
    assert_eq!(t.woken(), vec![U1.to_owned()]);
    assert!(t.sync_ids(U2, Some(token)).is_empty());
    assert_eq!(t.sync_ids(U1, None), names(&[U1]));

    t.join(Y, U1);
    t.join(Y, U2);
    let (_, token) = t.sync(U2, None, &Interest::None);
    t.clear();
    t.wait(U1);
    t.wait(U2);
    t.put(U1, Some("d"), Presence::Unavailable, None);
    assert_eq!(
        names(&t.woken().iter().map(String::as_str).collect::<Vec<_>>()),
        names(&[U1, U2])
    );
    assert_eq!(t.sync_ids(U2, Some(token)), names(&[U1]));
}

/// Both rooms excluded: user1 is still told about themself.
#[test]
fn j1_all_rooms_excluded_still_own_presence() {
    let mut t = T::new(excluding(&[X, Y]));
    t.join(X, U1);
    t.join(Y, U1);
    let (_, token) = t.sync(U1, None, &Interest::None);
    t.wait(U1);
    t.put(U1, Some("d"), Presence::Online, None);
    assert_eq!(t.woken(), vec![U1.to_owned()]);
    assert_eq!(t.sync_ids(U1, Some(token)), names(&[U1]));
    assert_eq!(t.sync_ids(U1, None), names(&[U1]));
}

/// J3: visibility (`GET /presence`) ignores excluded rooms.
#[test]
fn j3_is_visible_respects_excluded_rooms() {
    // Without exclusion, a shared room makes them visible.
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", U1);
    t.join("!r:test", U2);
    assert!(t.can_see(U1, U2));

    let mut t = T::new(excluding(&["!r:test"]));
    t.join("!r:test", U1);
    t.join("!r:test", U2);
    assert!(!t.can_see(U1, U2));
    t.join("!r2:test", U1);
    t.join("!r2:test", U2);
    assert!(t.can_see(U1, U2));
}

/// J4: a remote server sharing only an excluded room gets no presence for
/// user1 (neither on join nor on changes); one sharing a normal room does.
#[test]
fn j4_interested_remotes_respect_excluded_rooms() {
    let mut t = T::new(excluding(&[X]));
    t.put(U1, Some("d"), Presence::Online, None);
    t.join(X, U1);
    t.join(X, "@far:excluded.org");
    assert!(t.sends().is_empty());
    t.put(U1, Some("d"), Presence::Online, Some("changed"));
    assert!(t.sends().is_empty());

    t.join(Y, U1);
    t.join(Y, "@far:normal.org");
    assert_eq!(t.sends(), vec![("normal.org".to_owned(), names(&[U1]))]);
    t.clear();
    t.put(U1, Some("d"), Presence::Online, Some("again"));
    assert_eq!(t.sends(), vec![("normal.org".to_owned(), names(&[U1]))]);
}

/// `explain` names excluded shared rooms as ineligible.
#[test]
fn explain_lists_excluded_room_as_ineligible() {
    let mut t = T::new(excluding(&[X]));
    t.join(X, U1);
    t.join(X, U2);
    t.join(Y, U1);
    t.join(Y, U2);
    let v = t.eng().explain(&user(U1), &user(U2));
    assert!(!v.same_user);
    assert_eq!(v.shared_rooms, vec![room(Y)]);
    assert_eq!(v.ineligible_shared_rooms, vec![room(X)]);
    assert!(v.visible());
}
