//! Catalogue I: presence pushed on room joins (`PresenceJoinTestCase`),
//! observed as `Output::Send`. The clock is at 10¹² s so that "last active
//! 0" is far more than 7 days ago. Remote users are members of other
//! servers joining the room.

use presenced_engine::{EngineConfig, Presence, Timestamp};

use crate::common::*;

const ROOM: &str = "!room:server";

fn harness() -> T {
    T::named(
        "server",
        EngineConfig::default(),
        Timestamp(1_000_000_000_000_000),
    )
}

/// Every send as (destination, states), with states compared whole.
fn sends_of(t: &T) -> Vec<(String, Vec<presenced_engine::PresenceState>)> {
    t.sent_states()
        .iter()
        .map(|(d, s)| (d.to_string(), s.clone()))
        .collect()
}

#[test]
fn i1_remote_joins() {
    let mut t = harness();
    t.join(ROOM, "@test:server");
    t.join(ROOM, "@test2:server");
    t.put("@test2:server", Some("dev-1"), Presence::Online, None);
    assert_eq!(t.presence("@test:server"), Presence::Offline);
    t.clear();

    t.join(ROOM, "@alice:server2");
    // @test's default offline state (inactive > 7 days, no message) is
    // filtered out.
    let test2 = t.state("@test2:server");
    assert_eq!(test2.presence, Presence::Online);
    assert_eq!(
        sends_of(&t),
        vec![("server2".to_owned(), vec![test2.clone()])]
    );

    t.clear();
    t.join(ROOM, "@bob:server3");
    // server2 already has it and is not sent again.
    assert_eq!(sends_of(&t), vec![("server3".to_owned(), vec![test2])]);
}

#[test]
fn i2_remote_gets_presence_when_local_user_joins() {
    let mut t = harness();
    t.join(ROOM, "@test:server");
    t.put("@test:server", Some("dev-1"), Presence::Online, None);
    t.put("@test2:server", Some("dev-1"), Presence::Online, None);
    t.join(ROOM, "@alice:server2");
    t.join(ROOM, "@bob:server3");
    t.clear();

    t.join(ROOM, "@test2:server");
    let test2 = t.state("@test2:server");
    assert_eq!(test2.presence, Presence::Online);
    // One send per destination, each with exactly @test2's current state.
    assert_eq!(
        sends_of(&t),
        vec![
            ("server2".to_owned(), vec![test2.clone()]),
            ("server3".to_owned(), vec![test2]),
        ]
    );
}

/// The staleness filter lets through an offline user with a message or
/// recent activity (spec §12 step 4).
#[test]
fn join_staleness_filter() {
    let mut t = harness();
    t.join(ROOM, "@stale:server");
    t.join(ROOM, "@msg:server");
    t.join(ROOM, "@recent:server");
    t.put(
        "@msg:server",
        Some("d"),
        Presence::Offline,
        Some("gone fishing"),
    );
    t.put("@recent:server", Some("d"), Presence::Online, None);
    t.put("@recent:server", Some("d"), Presence::Offline, None);
    t.clear();
    t.join(ROOM, "@alice:server2");
    assert_eq!(
        t.sends(),
        vec![(
            "server2".to_owned(),
            names(&["@msg:server", "@recent:server"])
        )]
    );
}

/// A server that already shares another room with the local users is not
/// sent their presence again when it joins one more room (W19).
#[test]
fn no_resend_to_server_sharing_another_room() {
    let mut t = harness();
    t.join("!a:server", "@test:server");
    t.join("!b:server", "@test:server");
    t.put("@test:server", Some("d"), Presence::Online, None);
    t.join("!a:server", "@alice:server2");
    t.clear();
    t.join("!b:server", "@carol:server2");
    assert!(t.sends().is_empty());
}

/// Newly sharing a room, a local user is shown the other's current presence
/// once at their next incremental sync, and is woken.
#[test]
fn join_shows_presence_of_new_co_members() {
    let mut t = harness();
    t.put("@a:server", Some("d"), Presence::Online, Some("hello"));
    t.join(ROOM, "@a:server");
    t.sync_start("@b:server", "d", Presence::Online);
    let (_, token) = t.sync("@b:server", None, &presenced_engine::Interest::None);
    t.wait("@b:server");
    t.clear();
    t.join(ROOM, "@b:server");
    assert_eq!(t.woken(), vec!["@b:server".to_owned()]);
    let (states, next) = t.sync("@b:server", Some(token), &presenced_engine::Interest::None);
    assert_eq!(ids(&states), names(&["@a:server"]));
    assert_eq!(states[0].status_msg.as_deref(), Some("hello"));
    assert!(t.sync_ids("@b:server", Some(next)).is_empty());
}

/// When a server's last member leaves, it gets no more presence.
#[test]
fn server_left_gets_nothing() {
    let mut t = harness();
    t.join(ROOM, "@test:server");
    t.join(ROOM, "@alice:server2");
    t.join(ROOM, "@carol:server2");
    t.put("@test:server", Some("d"), Presence::Online, None);
    assert_eq!(
        t.sends(),
        vec![("server2".to_owned(), names(&["@test:server"]))]
    );
    t.leave(ROOM, "@alice:server2");
    t.clear();
    t.put("@test:server", Some("d"), Presence::Unavailable, None);
    assert_eq!(
        t.sends(),
        vec![("server2".to_owned(), names(&["@test:server"]))]
    );
    t.leave(ROOM, "@carol:server2");
    t.clear();
    t.put("@test:server", Some("d"), Presence::Online, None);
    assert!(t.sends().is_empty());
}
