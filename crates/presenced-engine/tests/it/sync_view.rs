//! What a syncing user sees, waiting-sync wake-ups, `GET` visibility
//! (`can_see`, W4) and `explain`, and the `max_room_size` limit.

use std::collections::HashSet;

use presenced_engine::{EngineConfig, Interest, Presence};

use crate::common::*;

const A: &str = "@a:test";
const B: &str = "@b:test";
const C: &str = "@c:test";
const STRANGER: &str = "@stranger:test";

/// A change by a room co-member wakes the waiting sync exactly once, even
/// through two shared rooms; a stranger's change wakes nobody.
#[test]
fn wake_on_co_member_change_once() {
    let mut t = T::new(EngineConfig::default());
    t.join("!one:test", A);
    t.join("!one:test", B);
    t.join("!two:test", A);
    t.join("!two:test", B);
    t.join("!three:test", STRANGER);
    t.wait(B);
    t.put(STRANGER, Some("d"), Presence::Online, None);
    assert!(t.woken().is_empty());
    t.put(A, Some("d"), Presence::Online, None);
    assert_eq!(t.woken(), vec![B.to_owned()]);
    // Each wake unregisters: a second change wakes nobody until re-registered.
    t.clear();
    t.put(A, Some("d"), Presence::Unavailable, None);
    assert!(t.woken().is_empty());
    t.wait(B);
    t.put(A, Some("d"), Presence::Online, None);
    assert_eq!(t.woken(), vec![B.to_owned()]);
}

/// A non-notifiable update wakes nobody; a cancelled wait is not woken.
#[test]
fn no_wake_without_notification_or_after_cancel() {
    let mut t = T::new(EngineConfig::default());
    t.join("!one:test", A);
    t.join("!one:test", B);
    assert!(t.sync_start(A, "d", Presence::Online));
    t.wait(B);
    t.advance(secs(10));
    t.sync_end(A, "d");
    assert!(t.woken().is_empty());
    t.engine().cancel_wait(&user(B));
    t.put(A, Some("d"), Presence::Busy, None);
    assert!(t.woken().is_empty());
}

/// `max_room_size`: a room above the limit makes nobody see anybody (sync,
/// `can_see`, wake-ups); at the limit it does.
#[test]
fn max_room_size_limits_visibility() {
    let mut t = T::new(config(|c| c.max_room_size = Some(2)));
    t.join("!small:test", A);
    t.join("!small:test", B);
    t.join("!big:test", A);
    t.join("!big:test", B);
    t.join("!big:test", C);
    t.put(A, Some("d"), Presence::Online, None);
    t.put(B, Some("d"), Presence::Online, None);
    t.put(C, Some("d"), Presence::Online, None);
    // The 2-member room counts, the 3-member room does not.
    assert!(t.can_see(A, B));
    assert!(!t.can_see(A, C));
    assert!(!t.can_see(C, B));
    assert_eq!(t.sync_ids(A, None), names(&[A, B]));
    assert_eq!(t.sync_ids(C, None), names(&[C]));
    let p = t.position();
    t.wait(A);
    t.wait(C);
    t.put(B, Some("d"), Presence::Unavailable, None);
    assert_eq!(t.woken(), vec![A.to_owned()]);
    assert_eq!(t.sync_ids(A, Some(p)), names(&[B]));
    assert!(t.sync_ids(C, Some(p)).is_empty());
    let v = t.eng().explain(&user(A), &user(C));
    assert!(v.shared_rooms.is_empty());
    assert_eq!(v.ineligible_shared_rooms, vec![room("!big:test")]);
    assert!(!v.visible());
}

/// Federation too: an oversized room sends nothing to its servers.
#[test]
fn max_room_size_limits_federation() {
    let mut t = T::new(config(|c| c.max_room_size = Some(2)));
    t.join("!big:test", A);
    t.join("!big:test", B);
    t.join("!big:test", "@r:other.org");
    t.clear();
    t.put(A, Some("d"), Presence::Online, None);
    assert!(t.sends().is_empty());
}

/// W4: a user the router lets see another may also `GET` their presence.
#[test]
fn can_see_with_routing_interest() {
    let mut t = T::new(EngineConfig::default());
    t.put(A, Some("d"), Presence::Online, None);
    t.put(B, Some("d"), Presence::Online, None);
    let eng = t.eng();
    let (a, b, s) = (user(A), user(B), user(STRANGER));
    assert!(!eng.can_see(&a, &b, &Interest::None));
    assert!(eng.can_see(&a, &a, &Interest::None));
    assert!(eng.can_see(&a, &b, &Interest::All));
    let only_b = Interest::Users(HashSet::from([b.clone()]));
    assert!(eng.can_see(&a, &b, &only_b));
    assert!(!eng.can_see(&a, &s, &only_b));
    // Unknown users, too.
    assert!(eng.can_see(&user("@ghost:test"), &user("@other:x.org"), &Interest::All));
    assert!(!eng.can_see(&user("@ghost:test"), &user("@other:x.org"), &Interest::None));
}

/// Router-named users (`Interest::Users`) appear in snapshots and
/// incremental syncs without a shared room.
#[test]
fn interest_users_in_sync() {
    let mut t = T::new(EngineConfig::default());
    t.put(B, Some("d"), Presence::Online, None);
    t.put(STRANGER, Some("d"), Presence::Online, None);
    let only_b = Interest::Users(HashSet::from([user(B)]));
    let (states, p) = t.sync(A, None, &only_b);
    assert_eq!(ids(&states), names(&[B]));
    t.put(B, Some("d"), Presence::Unavailable, None);
    t.put(STRANGER, Some("d"), Presence::Unavailable, None);
    assert_eq!(ids(&t.sync(A, Some(p), &only_b).0), names(&[B]));
}

#[test]
fn explain_reasons() {
    let mut t = T::new(EngineConfig::default());
    t.join("!one:test", A);
    t.join("!one:test", B);
    t.join("!two:test", A);
    t.join("!two:test", B);
    let v = t.eng().explain(&user(A), &user(B));
    let rooms: HashSet<_> = v.shared_rooms.iter().cloned().collect();
    assert_eq!(rooms, HashSet::from([room("!one:test"), room("!two:test")]));
    assert!(v.ineligible_shared_rooms.is_empty());
    assert!(v.visible());
    let me = t.eng().explain(&user(A), &user(A));
    assert!(me.same_user);
    assert!(me.visible());
    let none = t.eng().explain(&user(A), &user(STRANGER));
    assert!(!none.visible());
    assert!(none.shared_rooms.is_empty());
    t.leave("!one:test", B);
    assert_eq!(
        t.eng().explain(&user(A), &user(B)).shared_rooms,
        vec![room("!two:test")]
    );
    t.leave("!two:test", B);
    assert!(!t.can_see(A, B));
}

/// Initial syncs leave offline users out; incremental syncs include them.
#[test]
fn offline_in_snapshots_and_increments() {
    let mut t = T::new(EngineConfig::default());
    t.join("!one:test", A);
    t.join("!one:test", B);
    t.put(B, Some("d"), Presence::Online, None);
    let (states, p) = t.sync(A, None, &Interest::None);
    assert_eq!(ids(&states), names(&[B]));
    t.put(B, Some("d"), Presence::Offline, None);
    assert!(t.sync_ids(A, None).is_empty());
    let (states, _) = t.sync(A, Some(p), &Interest::None);
    assert_eq!(ids(&states), names(&[B]));
    assert_eq!(states[0].presence, Presence::Offline);
    // include_offline_users_on_sync: offline users in snapshots too.
    let view = t.eng().sync_view(&user(A), None, true, &Interest::None);
    let got: Vec<_> = view.states.iter().map(|s| s.user_id.to_string()).collect();
    assert_eq!(
        names(&got.iter().map(String::as_str).collect::<Vec<_>>()),
        names(&[A, B])
    );
}

/// Large rooms (over 64 members) keep their own change log and waiter
/// list; the answers must be the same as for small rooms.
mod large_rooms {
    use super::*;

    const BIG: &str = "!big:test";
    const N: usize = 70;

    fn member(i: usize) -> String {
        format!("@m{i}:test")
    }

    fn big_room(t: &mut T) {
        for i in 0..N {
            t.join(BIG, &member(i));
        }
    }

    /// A sync registered while the room was small is still woken once
    /// after the room grew large; strangers wake nobody.
    #[test]
    fn wake_registered_before_growth() {
        let mut t = T::new(EngineConfig::default());
        t.join(BIG, A);
        t.wait(A);
        big_room(&mut t);
        // Joins wake the room's waiting syncs (new co-members to show).
        t.clear();
        t.wait(A);
        t.put(STRANGER, Some("d"), Presence::Online, None);
        assert!(t.woken().is_empty());
        t.put(&member(3), Some("d"), Presence::Online, None);
        assert_eq!(t.woken(), vec![A.to_owned()]);
        t.clear();
        t.put(&member(4), Some("d"), Presence::Online, None);
        assert!(t.woken().is_empty());
        t.wait(A);
        t.put(&member(5), Some("d"), Presence::Online, None);
        assert_eq!(t.woken(), vec![A.to_owned()]);
    }

    #[test]
    fn incremental_sync_in_large_room() {
        let mut t = T::new(EngineConfig::default());
        big_room(&mut t);
        t.join(BIG, A);
        t.join("!other:test", STRANGER);
        let p = t.position();
        t.put(&member(1), Some("d"), Presence::Online, None);
        t.put(STRANGER, Some("d"), Presence::Online, None);
        let q = t.position();
        t.put(&member(2), Some("d"), Presence::Unavailable, None);
        t.put(&member(1), Some("d"), Presence::Online, Some("x"));
        assert_eq!(t.sync_ids(A, Some(p)), names(&["@m1:test", "@m2:test"]));
        assert_eq!(t.sync_ids(A, Some(q)), names(&["@m1:test", "@m2:test"]));
        // A token from before the room grew large: members are scanned (A
        // itself is unchanged and not a new co-member of itself).
        assert_eq!(t.sync_ids(A, Some(3)).len(), N);
    }

    /// A member who left is no longer visible, even through the room's log
    /// of changes made while they were a member.
    #[test]
    fn leaver_not_visible_through_room_log() {
        let mut t = T::new(EngineConfig::default());
        big_room(&mut t);
        t.join(BIG, A);
        let p = t.position();
        t.put(B, Some("d"), Presence::Online, None);
        t.join(BIG, B);
        t.put(B, Some("d"), Presence::Unavailable, None);
        t.put(&member(1), Some("d"), Presence::Online, None);
        t.leave(BIG, B);
        assert!(!t.can_see(A, B));
        assert_eq!(t.sync_ids(A, Some(p)), names(&["@m1:test"]));
    }

    /// Same for small rooms (the member scan), for comparison.
    #[test]
    fn leaver_not_visible_small_room() {
        let mut t = T::new(EngineConfig::default());
        t.join("!small:test", A);
        let p = t.position();
        t.join("!small:test", B);
        t.put(B, Some("d"), Presence::Unavailable, None);
        t.leave("!small:test", B);
        assert!(!t.can_see(A, B));
        assert!(t.sync_ids(A, Some(p)).is_empty());
    }
}
