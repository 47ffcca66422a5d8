//! The per-server cap on remote users learnt from federation (W9/W10 fixed;
//! Synapse keeps every remote user it is told about, forever).

use presenced_engine::{Engine, EngineConfig, Interest, Presence, RemotePresence, Timestamp};

use crate::common::{config, secs, server, user, T};

/// A server that keeps at most `cap` room-less users per remote server.
fn capped(cap: usize) -> T {
    T::new(config(|c| c.max_remote_users_per_server = cap))
}

fn known(t: &T, u: &str) -> bool {
    t.eng().presence_of(&user(u)).is_some()
}

/// Offline users go first, then the least recently updated.
#[test]
fn offline_users_are_forgotten_first_then_the_oldest() {
    let mut t = capped(3);
    t.remote("r.org", "@a:r.org", Presence::Online, None);
    t.advance(secs(1));
    t.remote("r.org", "@b:r.org", Presence::Offline, None);
    t.advance(secs(1));
    t.remote("r.org", "@c:r.org", Presence::Online, None);
    t.advance(secs(1));

    // d is new: b (offline, though newer than a) makes room.
    assert_eq!(t.remote("r.org", "@d:r.org", Presence::Online, None), 1);
    assert!(!known(&t, "@b:r.org"));
    assert!(known(&t, "@a:r.org") && known(&t, "@c:r.org") && known(&t, "@d:r.org"));

    // No offline user left: a, updated longest ago, goes for e.
    t.advance(secs(1));
    t.remote("r.org", "@e:r.org", Presence::Online, None);
    assert!(!known(&t, "@a:r.org"));

    // An update counts as recent: c refreshed, so d goes for f.
    t.advance(secs(1));
    t.remote("r.org", "@c:r.org", Presence::Unavailable, None);
    t.advance(secs(1));
    t.remote("r.org", "@f:r.org", Presence::Online, None);
    assert!(!known(&t, "@d:r.org"));
    assert!(known(&t, "@c:r.org") && known(&t, "@e:r.org") && known(&t, "@f:r.org"));
    assert_eq!(t.eng().stats().remote_evicted, 3);

    // A forgotten user may come back; they are simply new again.
    t.advance(secs(1));
    t.remote("r.org", "@a:r.org", Presence::Online, Some("back"));
    assert_eq!(t.status("@a:r.org").as_deref(), Some("back"));
}

/// An update for a known user never evicts anyone.
#[test]
fn updates_of_known_users_evict_nobody() {
    let mut t = capped(2);
    t.remote("r.org", "@a:r.org", Presence::Online, None);
    t.remote("r.org", "@b:r.org", Presence::Online, None);
    for _ in 0..5 {
        t.advance(secs(1));
        t.remote("r.org", "@a:r.org", Presence::Unavailable, None);
        t.remote("r.org", "@b:r.org", Presence::Online, None);
    }
    assert!(known(&t, "@a:r.org") && known(&t, "@b:r.org"));
    assert_eq!(t.eng().stats().remote_evicted, 0);
}

/// The cap is per server: one server cannot push out another's users.
#[test]
fn the_cap_is_per_server() {
    let mut t = capped(2);
    t.remote("good.org", "@g1:good.org", Presence::Online, None);
    t.remote("good.org", "@g2:good.org", Presence::Online, None);
    for i in 0..50 {
        t.remote(
            "noisy.org",
            &format!("@n{i}:noisy.org"),
            Presence::Online,
            None,
        );
    }
    assert!(known(&t, "@g1:good.org") && known(&t, "@g2:good.org"));
    let noisy = (0..50)
        .filter(|i| known(&t, &format!("@n{i}:noisy.org")))
        .count();
    assert_eq!(noisy, 2);
    assert_eq!(t.eng().stats().users_tracked, 4);
}

/// Remote room members are held by the membership index: they do not
/// count against the cap and are never forgotten.
#[test]
fn room_members_do_not_count_and_stay() {
    let mut t = capped(2);
    t.join("!room:test", "@local:test");
    t.join("!room:test", "@member:r.org");
    t.remote("r.org", "@member:r.org", Presence::Online, None);
    t.advance(secs(1));
    t.remote("r.org", "@x:r.org", Presence::Online, None);
    t.advance(secs(1));
    t.remote("r.org", "@y:r.org", Presence::Online, None);
    t.advance(secs(1));
    t.remote("r.org", "@z:r.org", Presence::Online, None);
    // x made room for z; the member, updated before everyone, stays.
    assert!(known(&t, "@member:r.org"));
    assert_eq!(t.presence("@member:r.org"), Presence::Online);
    assert!(!known(&t, "@x:r.org") && known(&t, "@y:r.org") && known(&t, "@z:r.org"));

    // Once the member leaves every room, they count like anyone else: the
    // next new user pushes out the member (oldest) and then y.
    t.leave("!room:test", "@member:r.org");
    t.advance(secs(1));
    t.remote("r.org", "@w:r.org", Presence::Online, None);
    assert_eq!(
        [
            known(&t, "@member:r.org"),
            known(&t, "@y:r.org"),
            known(&t, "@z:r.org"),
            known(&t, "@w:r.org")
        ],
        [false, false, true, true]
    );
}

/// However many distinct users a server names, the engine's memory stays
/// bounded: forgotten users' slots are reused.
#[test]
fn memory_stays_bounded_under_a_flood_of_users() {
    // A small change log, full after the warm-up, so what is measured is
    // the user tables (the log's own bound is its capacity).
    let mut engine = Engine::new(
        config(|c| {
            c.max_remote_users_per_server = 100;
            c.change_log_capacity = 1_000;
        }),
        server("test"),
        0,
    );
    let flood = |engine: &mut Engine, from: usize, to: usize| {
        for chunk in (from..to).collect::<Vec<_>>().chunks(50) {
            let now = Timestamp(1_000_000 + chunk[0] as u64);
            let entries = chunk.iter().map(|i| RemotePresence {
                user_id: user(&format!("@u{i}:flood.org")),
                presence: Presence::Online,
                last_active_ago: Some(0),
                currently_active: Some(true),
                status_msg: Some("x".repeat(100)),
            });
            engine.handle_remote_presence(now, &server("flood.org"), entries);
            while engine.poll_output().is_some() {}
        }
    };
    flood(&mut engine, 0, 2_000);
    let after_warmup = engine.memory_bytes();
    flood(&mut engine, 2_000, 20_000);
    let after_flood = engine.memory_bytes();
    assert_eq!(engine.stats().users_tracked, 100);
    assert_eq!(
        engine.stats().timers,
        100,
        "forgotten users' timers are gone"
    );
    // Within 10% (user ids get a digit longer).
    assert!(
        after_flood <= after_warmup + after_warmup / 10,
        "{after_warmup} -> {after_flood}"
    );
}

/// A forgotten user's old stream entries do not show up under the id of
/// the user who reuses the slot, and the newcomer is seen.
#[test]
fn reused_slots_do_not_confuse_syncs() {
    let mut t = capped(1);
    let start = t.position();
    t.remote("r.org", "@old:r.org", Presence::Online, Some("old"));
    t.advance(secs(1));
    t.remote("r.org", "@new:r.org", Presence::Unavailable, Some("new"));
    assert!(!known(&t, "@old:r.org"));
    // An observer routed everything (PRESENCE_ALL_USERS) syncing from
    // before both changes sees only the user the engine still holds.
    let (states, _) = t.sync("@observer:test", Some(start), &Interest::All);
    let seen: Vec<(String, Option<String>)> = states
        .iter()
        .map(|s| {
            (
                s.user_id.to_string(),
                s.status_msg.as_deref().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("@new:r.org".to_owned(), Some("new".to_owned()))]
    );
    let (snapshot, _) = t.sync("@observer:test", None, &Interest::All);
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].user_id, user("@new:r.org"));
}

/// A restore of more stored remote users than the cap keeps the cap.
#[test]
fn restore_applies_the_cap() {
    let mut source = capped(1000);
    for i in 0..10 {
        source.advance(secs(1));
        source.remote("r.org", &format!("@u{i}:r.org"), Presence::Online, None);
    }
    let stored = source.persisted().to_vec();
    let mut engine = Engine::new(
        config(|c| c.max_remote_users_per_server = 3),
        server("test"),
        0,
    );
    engine.restore(stored);
    assert_eq!(engine.stats().users_tracked, 3);
    // The three most recently updated survive.
    for i in 7..10 {
        assert!(
            engine.presence_of(&user(&format!("@u{i}:r.org"))).is_some(),
            "u{i}"
        );
    }
}

/// The engine's defaults: 10 000 per server.
#[test]
fn default_cap() {
    assert_eq!(EngineConfig::default().max_remote_users_per_server, 10_000);
}

/// Each forgotten user is handed to the driver with the last position its
/// state was stored at, so storage can drop it (and only that state).
#[test]
fn forgotten_users_are_handed_out_for_storage() {
    let mut t = capped(1);
    t.remote("r.org", "@a:r.org", Presence::Online, None);
    let stored_at = t.persisted().last().map(|(pos, _)| *pos).unwrap();
    t.advance(secs(1));
    t.remote("r.org", "@b:r.org", Presence::Online, None);
    assert_eq!(
        t.sim.servers[0].forgotten,
        vec![(user("@a:r.org"), stored_at)]
    );
}
