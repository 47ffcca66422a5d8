//! Issue 12: an open long-poll keeps its device alive whatever else the
//! request does, and its end restarts the device's sync timeout.

use presenced_engine::{EngineConfig, Presence};

use crate::common::*;

const U: &str = "@alice:test";

/// A long-poll much longer than the sync timeout keeps the user online; the
/// user goes offline one sync timeout after it ends, not before.
#[test]
fn long_poll_longer_than_the_sync_timeout() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.sync_end(U, "dev-1");
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(secs(120));
    assert_eq!(t.presence(U), Presence::Online);
    t.sync_end(U, "dev-1");
    t.advance(S);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
}

/// A rate-limited sync keeps the device alive without applying its
/// `set_presence`: the user neither times out during it nor changes state.
#[test]
fn keepalive_sync_counts_as_syncing() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.sync_end(U, "dev-1");
    let now = t.now();
    assert!(t
        .engine()
        .handle_sync_keepalive_start(now, &user(U), Some(device("dev-1"))));
    t.advance(S * 3);
    assert_eq!(t.presence(U), Presence::Online);
    t.sync_end(U, "dev-1");
    t.advance(S);
    assert_eq!(t.presence(U), Presence::Online, "timer restarts at its end");
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
}

/// A keepalive sync of a device with no record (or an offline user) does
/// not bring anyone online, and leaves no record behind.
#[test]
fn keepalive_sync_of_an_offline_user_changes_nothing() {
    let mut t = T::new(EngineConfig::default());
    let before = t.position();
    let now = t.now();
    assert!(t
        .engine()
        .handle_sync_keepalive_start(now, &user(U), Some(device("dev-1"))));
    assert_eq!(t.presence(U), Presence::Offline);
    t.sync_end(U, "dev-1");
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.position(), before, "nothing notifiable happened");
    assert!(t.eng().devices_of(&user(U)).is_empty());
}

/// The device's only long-poll ends at the very millisecond its timer is
/// due: whichever the driver feeds first, the user stays online and goes
/// offline one sync timeout after the end.
#[test]
fn sync_end_at_the_instant_the_timer_fires() {
    for timer_first in [true, false] {
        let mut t = T::new(EngineConfig::default());
        assert!(t.sync_start(U, "dev-1", Presence::Online));
        t.sync_end(U, "dev-1");
        let due = t.eng().poll_timeout().expect("a deadline");
        assert_eq!(due, t.now() + S + MS);
        assert!(t.sync_start(U, "dev-1", Presence::Online));
        // Jump to the deadline without firing it, then feed both inputs at
        // that same instant.
        t.sim.now = due;
        if timer_first {
            t.engine().handle_timeout(due);
            t.sync_end(U, "dev-1");
        } else {
            t.sync_end(U, "dev-1");
            t.engine().handle_timeout(due);
        }
        t.sim.step();
        assert_eq!(t.presence(U), Presence::Online, "timer_first={timer_first}");
        t.advance(S);
        assert_eq!(t.presence(U), Presence::Online, "timer_first={timer_first}");
        t.advance(MS);
        assert_eq!(
            t.presence(U),
            Presence::Offline,
            "timer_first={timer_first}"
        );
    }
}

/// `set_presence=unavailable` long-polls keep the user unavailable, never
/// offline, for as long as they run.
#[test]
fn unavailable_long_poll_keeps_the_user_unavailable() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Unavailable));
    t.advance(S * 5);
    assert_eq!(t.presence(U), Presence::Unavailable);
    t.sync_end(U, "dev-1");
    t.advance(S + MS);
    assert_eq!(t.presence(U), Presence::Offline);
}
