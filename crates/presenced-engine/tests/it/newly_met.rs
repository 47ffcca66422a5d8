//! Issue 12 / spec §10.4: a join or an invite shows the users it introduces
//! their current presence in the next incremental sync, on both sides of an
//! invite, and through a router route in a room that does not count.

use std::collections::HashSet;

use presenced_engine::{EngineConfig, Interest, Presence};

use crate::common::*;

const ROOM: &str = "!room:test";
const ALICE: &str = "@alice:test";
const BOB: &str = "@bob:test";
const CAROL: &str = "@carol:test";

fn invite(t: &mut T, invitee: &str, inviter: &str) {
    let now = t.now();
    t.engine()
        .handle_invite(now, &room(ROOM), &user(invitee), &user(inviter));
    t.sim.step();
}

/// The inviter (and every joined member) sees the invitee's current
/// presence, and the invitee sees the inviter's; nobody else gains anything.
#[test]
fn invite_shows_both_sides() {
    let mut t = T::new(EngineConfig::default());
    t.join(ROOM, ALICE);
    t.join(ROOM, CAROL);
    t.put(ALICE, Some("a"), Presence::Online, Some("inviting"));
    t.put(BOB, Some("b"), Presence::Unavailable, Some("away"));
    let (_, alice_token) = t.sync(ALICE, None, &Interest::None);
    let (_, bob_token) = t.sync(BOB, None, &Interest::None);
    let (_, carol_token) = t.sync(CAROL, None, &Interest::None);
    t.wait(ALICE);
    t.wait(BOB);

    invite(&mut t, BOB, ALICE);
    let woken: HashSet<String> = t.woken().into_iter().collect();
    assert!(woken.contains(ALICE) && woken.contains(BOB), "{woken:?}");

    let (states, _) = t.sync(ALICE, Some(alice_token), &Interest::None);
    assert_eq!(ids(&states), names(&[BOB]));
    assert_eq!(states[0].presence, Presence::Unavailable);
    assert_eq!(states[0].status_msg.as_deref(), Some("away"));
    let (states, _) = t.sync(BOB, Some(bob_token), &Interest::None);
    assert_eq!(ids(&states), names(&[ALICE]));
    assert_eq!(states[0].status_msg.as_deref(), Some("inviting"));
    assert_eq!(t.sync_ids(CAROL, Some(carol_token)), names(&[BOB]));

    // Once: the next tokens are past the invite, and an invite is not a
    // shared room, so Bob's later changes do not reach Alice.
    let (_, alice_token) = t.sync(ALICE, Some(alice_token), &Interest::None);
    t.put(BOB, Some("b"), Presence::Online, None);
    assert_eq!(t.sync_ids(ALICE, Some(alice_token)), Vec::<String>::new());
    assert!(!t.can_see(ALICE, BOB));
}

/// An invite to a room that does not count (excluded) reveals nothing
/// unless a router route lets the users see each other.
#[test]
fn invite_to_an_excluded_room_needs_a_route() {
    let config = config(|c| {
        c.exclude_rooms_from_presence = [room(ROOM)].into();
    });
    let mut t = T::new(config);
    t.join(ROOM, ALICE);
    t.put(BOB, Some("b"), Presence::Online, None);
    let (_, token) = t.sync(ALICE, None, &Interest::None);
    invite(&mut t, BOB, ALICE);
    assert_eq!(t.sync_ids(ALICE, Some(token)), Vec::<String>::new());
    let routed = Interest::Users([user(BOB)].into());
    let (states, _) = t.sync(ALICE, Some(token), &routed);
    assert_eq!(ids(&states), names(&[BOB]));
}

/// A join into an excluded room shows the joiner's current presence (even
/// offline, which initial syncs leave out) to a member routed to see them,
/// and to no one else; the joiner sees the routed members.
#[test]
fn join_through_a_router_route() {
    let config = config(|c| {
        c.exclude_rooms_from_presence = [room(ROOM)].into();
    });
    let mut t = T::new(config);
    t.join(ROOM, ALICE);
    t.join(ROOM, CAROL);
    t.put(ALICE, Some("a"), Presence::Online, None);
    let alice_sees_bob = Interest::Users([user(BOB)].into());
    let bob_sees_alice = Interest::Users([user(ALICE)].into());
    let (states, alice_token) = t.sync(ALICE, None, &alice_sees_bob);
    assert_eq!(ids(&states), names(&[ALICE]), "offline Bob is left out");
    let (_, carol_token) = t.sync(CAROL, None, &Interest::None);
    let (_, bob_token) = t.sync(BOB, None, &bob_sees_alice);

    t.join(ROOM, BOB);
    let (states, _) = t.sync(ALICE, Some(alice_token), &alice_sees_bob);
    assert_eq!(ids(&states), names(&[BOB]));
    assert_eq!(states[0].presence, Presence::Offline);
    assert_eq!(t.sync_ids(CAROL, Some(carol_token)), Vec::<String>::new());
    let (states, _) = t.sync(BOB, Some(bob_token), &bob_sees_alice);
    assert_eq!(ids(&states), names(&[ALICE]));
}

/// A join into an eligible room still shows each side the other, as before.
#[test]
fn join_shows_both_sides() {
    let mut t = T::new(EngineConfig::default());
    t.join(ROOM, ALICE);
    t.put(ALICE, Some("a"), Presence::Online, None);
    t.put(BOB, Some("b"), Presence::Online, None);
    let (_, alice_token) = t.sync(ALICE, None, &Interest::None);
    let (_, bob_token) = t.sync(BOB, None, &Interest::None);
    t.join(ROOM, BOB);
    assert_eq!(t.sync_ids(ALICE, Some(alice_token)), names(&[BOB]));
    assert_eq!(t.sync_ids(BOB, Some(bob_token)), names(&[ALICE]));
}

/// An inviter who left before the invitee synced is not shown.
#[test]
fn inviter_who_left_is_not_shown() {
    let mut t = T::new(EngineConfig::default());
    t.join(ROOM, ALICE);
    let (_, token) = t.sync(BOB, None, &Interest::None);
    invite(&mut t, BOB, ALICE);
    t.leave(ROOM, ALICE);
    assert_eq!(t.sync_ids(BOB, Some(token)), Vec::<String>::new());
}
