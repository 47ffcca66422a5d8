//! Catalogue C: start-up restore (`PresenceHandlerInitTestCase`), C1 and
//! C2. (C3, the start-up offline flush with presence disabled, is a
//! server-level job and not ported here.)
//!
//! A restored local user gets a pseudo-device that times out like any other.
//! Our timers fire at their exact deadline, so the restored user goes offline
//! exactly S after the restored sync time instead of on the first 5 s loop
//! pass at ≈ T + 35 s.

use presenced_engine::{EngineConfig, Presence, PresenceState, Timestamp};

use crate::common::*;

/// T: the catalogue advances the clock by 1000 s before the "start".
const START: Timestamp = Timestamp(1_000_000);
const U: &str = "@test:test";

fn restored() -> T {
    let mut t = T::named("test", EngineConfig::default(), START);
    let state = PresenceState {
        presence: Presence::Online,
        last_active_ts: START,
        last_federation_update_ts: START,
        last_user_sync_ts: START,
        currently_active: true,
        ..PresenceState::new(user(U))
    };
    t.engine().restore([(7, state)]);
    t
}

#[test]
fn c1_restored_presence_idles() {
    let mut t = restored();
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(S);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
}

/// C2 ×4: a sync at T + 15 s combines with the pseudo-device until the
/// pseudo-device times out. Checked at T + 35 s as in the catalogue (our
/// pseudo-device is gone at T + 30 s + 1 ms).
#[test]
fn c2_restored_presence_online_after_sync() {
    use Presence::*;
    let rows = [
        (Busy, Busy, Busy),
        (Online, Online, Online),
        (Unavailable, Online, Unavailable),
        (Offline, Online, Offline),
    ];
    for (set, right_after, at_35) in rows {
        let mut t = restored();
        t.advance(secs(15));
        let counts = t.sync_start(U, "dev-1", set);
        assert_eq!(counts, set != Offline, "{set:?}");
        assert_eq!(t.presence(U), right_after, "{set:?}: right after the sync");
        t.advance(secs(15) + MS);
        assert_eq!(t.presence(U), at_35, "{set:?}: after the pseudo-device");
        t.advance(secs(5) - MS);
        assert_eq!(t.presence(U), at_35, "{set:?}: at T + 35 s");
    }
}
