//! Catalogue E: configurable timers (`PresenceConfigurableTimersTestCase`)
//! with granularity 2 min, sync timeout 3 min, idle timeout 20 min. Our
//! timers fire at the exact deadline, so where Synapse needs "+ pump 5 s" we
//! check the millisecond before and at the deadline as well.

use presenced_engine::{EngineConfig, Presence};

use crate::common::*;

const U: &str = "@test:test";

fn cfg() -> EngineConfig {
    config(|c| {
        c.last_active_granularity = secs(120);
        c.sync_online_timeout = secs(180);
        c.idle_timeout = secs(1200);
    })
}

/// E2: offline 3 min after the sync ended, not 30 s.
#[test]
fn e2_sync_online_timeout() {
    let mut t = T::new(cfg());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.sync_end(U, "dev-1");
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(secs(65));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(secs(180) - secs(65));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
}

/// E3: unavailable 20 min after the activity of a sync left open.
#[test]
fn e3_idle_timeout() {
    let mut t = T::new(cfg());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.advance(secs(605));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(secs(1200) - secs(605));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Unavailable);
}

/// E4: currently_active lasts 2 min.
#[test]
fn e4_last_active_granularity() {
    let mut t = T::new(cfg());
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    t.sync_end(U, "dev-1");
    assert!(t.state(U).currently_active);
    t.advance(secs(95));
    assert_eq!(t.presence(U), Presence::Online);
    assert!(t.state(U).currently_active);
    t.advance(secs(120) - secs(95) - MS);
    assert!(t.state(U).currently_active);
    t.advance(MS);
    assert!(!t.state(U).currently_active);
    t.advance(secs(155) - secs(120));
    assert_eq!(t.presence(U), Presence::Online);
    assert!(!t.state(U).currently_active);
}
