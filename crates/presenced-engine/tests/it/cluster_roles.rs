//! Cluster mode's two roles per user (design `scale-out.md` §5.4): owned
//! (state machine, timers, persistence, federation here) and replicated
//! (another node owns the user; its states are applied as they arrive and
//! only wake this node's watchers).

use presenced_engine::{EngineConfig, Presence, PresenceState, Timestamp};

use crate::common::*;

const A: &str = "@alice:test";
const B: &str = "@bob:test";

/// Alice and Bob share a room with a remote member, so an owned change of
/// theirs would be sent over federation.
fn two_members() -> T {
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", A);
    t.join("!r:test", B);
    t.join("!r:test", "@carol:remote");
    t.clear();
    t
}

fn online(user_id: &str, at: Timestamp) -> PresenceState {
    PresenceState {
        presence: Presence::Online,
        last_active_ts: at,
        last_user_sync_ts: at,
        currently_active: true,
        ..PresenceState::new(user(user_id))
    }
}

#[test]
fn a_replicated_state_wakes_watchers_and_does_nothing_else() {
    let mut t = two_members();
    t.wait(B);
    let before = t.position();
    let now = t.now();
    t.engine().handle_replicated_state(online(A, now));
    t.sim.step();
    assert_eq!(t.presence(A), Presence::Online);
    assert_eq!(t.woken(), names(&[B]), "Bob's long-poll is woken");
    assert_eq!(
        t.sync_ids(B, Some(before)),
        names(&[A]),
        "and his sync sees Alice"
    );
    assert!(
        t.persisted().is_empty(),
        "the owner persisted it, not this node"
    );
    assert!(t.sends().is_empty(), "the owner sends it over federation");
    assert_eq!(
        t.eng().poll_timeout(),
        None,
        "no timer for a replicated user"
    );
    assert!(!t.eng().is_owned(&user(A)));
    // The same state again is no change.
    let at = t.position();
    t.engine().handle_replicated_state(online(A, now));
    t.sim.step();
    assert_eq!(t.position(), at);
}

#[test]
fn a_replicated_user_never_times_out_here() {
    let mut t = two_members();
    let now = t.now();
    t.engine().handle_replicated_state(online(A, now));
    t.sim.step();
    t.advance(secs(3600));
    assert_eq!(
        t.presence(A),
        Presence::Online,
        "the owner decides when Alice idles"
    );
}

#[test]
fn client_inputs_for_a_replicated_user_are_ignored_and_counted() {
    let mut t = two_members();
    let now = t.now();
    t.engine().handle_replicated_state(online(A, now));
    t.sim.step();
    t.put(A, Some("dev"), Presence::Unavailable, Some("away"));
    assert_eq!(t.presence(A), Presence::Online);
    assert!(!t.sync_start(A, "dev", Presence::Online));
    assert_eq!(t.eng().stats().replicated_inputs_ignored, 2);
}

#[test]
fn owning_a_user_rearms_its_timers_from_the_replica() {
    let mut t = two_members();
    let now = t.now();
    t.engine().handle_replicated_state(online(A, now));
    t.sim.step();
    t.advance(secs(10));
    // This node takes Alice's partition over.
    t.engine().handle_own([user(A)]);
    assert!(t.eng().is_owned(&user(A)));
    assert!(t.eng().poll_timeout().is_some(), "her timers run here now");
    // The pseudo-device times out like after a restart (spec §8.2): 30 s
    // after the replicated sync time, not after the takeover.
    t.advance(secs(20));
    assert_eq!(t.presence(A), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(A), Presence::Offline);
    let persisted: Vec<_> = t.persisted().iter().map(|(_, s)| s.presence).collect();
    assert_eq!(persisted, [Presence::Offline], "the owner persists");
    assert!(!t.sends().is_empty(), "and sends over federation");
    // And takes client inputs again.
    t.put(A, Some("dev"), Presence::Online, None);
    assert_eq!(t.presence(A), Presence::Online);
}

#[test]
fn giving_a_user_up_drops_devices_and_timers_and_keeps_the_state() {
    let mut t = two_members();
    assert!(t.sync_start(A, "dev", Presence::Online));
    assert!(t.eng().poll_timeout().is_some());
    t.engine().handle_disown([user(A)]);
    assert_eq!(t.eng().poll_timeout(), None);
    assert_eq!(
        t.presence(A),
        Presence::Online,
        "the replica keeps her state"
    );
    t.advance(secs(3600));
    assert_eq!(t.presence(A), Presence::Online);
    // Owned again later: timers come back.
    t.engine().handle_own([user(A)]);
    assert!(t.eng().poll_timeout().is_some());
}
