//! Catalogue F9 and F10: two devices of one user, all 16 rows of each table
//! (monolith variant; the worker variant is topology and not ported).
//! Busy is enabled (the engine always accepts it).

use presenced_engine::{EngineConfig, Presence};

use crate::common::*;

use Presence::{Busy as Bu, Offline as Of, Online as On, Unavailable as Un};

const U: &str = "@test:test";

/// (d1, d2, both, dev-1 idled, dev-2 idled)
const F9: [(Presence, Presence, Presence, Presence, Presence); 16] = [
    (Bu, Bu, Bu, Bu, Bu),
    (On, On, On, On, Un),
    (Un, Un, Un, Un, Un),
    (Of, Of, Of, Of, Of),
    (Bu, On, Bu, Bu, Bu),
    (Bu, Un, Bu, Bu, Bu),
    (Bu, Of, Bu, Bu, Bu),
    (On, Un, On, Un, Un),
    (On, Of, On, Un, Un),
    (Un, Of, Un, Un, Un),
    (On, Bu, Bu, Bu, Bu),
    (Un, Bu, Bu, Bu, Bu),
    (Of, Bu, Bu, Bu, Bu),
    (Un, On, On, On, Un),
    (Of, On, On, On, Un),
    (Of, Un, Un, Un, Un),
];

/// (d1, d2, both, dev-1 gone); after dev-2 is gone too: always offline.
const F10: [(Presence, Presence, Presence, Presence); 16] = [
    (Bu, Bu, Bu, Bu),
    (On, On, On, On),
    (Un, Un, Un, Un),
    (Of, Of, Of, Of),
    (Bu, On, Bu, Bu),
    (Bu, Un, Bu, Bu),
    (Bu, Of, Bu, Bu),
    (On, Un, On, Un),
    (On, Of, On, Of),
    (Un, Of, Un, Of),
    (On, Bu, Bu, Bu),
    (Un, Bu, Bu, Bu),
    (Of, Bu, Bu, Bu),
    (Un, On, On, On),
    (Of, On, On, On),
    (Of, Un, Un, Un),
];

/// F9 `test_set_presence_from_syncing_multi_device` (syncs never closed).
/// The catalogue's check times (0.01–0.1 s past each idle threshold) work
/// as they are: our idle timers fire exactly I + 1 ms after the activity.
#[test]
fn f9_set_presence_from_syncing_multi_device() {
    for (row, &(d1, d2, both, dev1_idled, dev2_idled)) in F9.iter().enumerate() {
        let mut t = T::new(EngineConfig::default());
        assert_eq!(t.sync_start(U, "dev-1", d1), d1 != Of, "row {row}");
        t.advance(I / 2 + millis(100));
        assert_eq!(t.sync_start(U, "dev-2", d2), d2 != Of, "row {row}");
        assert_eq!(t.presence(U), both, "row {row}: both");
        t.advance(I / 2 + millis(10));
        assert_eq!(t.presence(U), dev1_idled, "row {row}: dev-1 idled");
        t.advance(I / 2 + millis(100));
        assert_eq!(t.presence(U), dev2_idled, "row {row}: dev-2 idled");
    }
}

/// F10 `test_set_presence_from_non_syncing_multi_device`: syncs end, devices
/// time out S (busy: B) after the end of their sync.
#[test]
fn f10_set_presence_from_non_syncing_multi_device() {
    for (row, &(d1, d2, both, dev1_gone)) in F10.iter().enumerate() {
        let mut t = T::new(EngineConfig::default());
        let c1 = t.sync_start(U, "dev-1", d1);
        let c2 = t.sync_start(U, "dev-2", d2);
        assert_eq!((c1, c2), (d1 != Of, d2 != Of), "row {row}");
        assert_eq!(t.presence(U), both, "row {row}: both");
        if c1 {
            t.sync_end(U, "dev-1");
        }
        t.advance(S + secs(5));
        assert_eq!(t.presence(U), dev1_gone, "row {row}: dev-1 gone");
        if c2 {
            t.sync_end(U, "dev-2");
        }
        let wait = if d1 == Bu || d2 == Bu { B } else { S };
        t.advance(wait + secs(5));
        assert_eq!(t.presence(U), Of, "row {row}: both gone");
        assert!(t.eng().devices_of(&user(U)).is_empty(), "row {row}");
    }
}

/// The exact deadlines behind F9: a device idles I + 1 ms after its last
/// activity, not at the next wheel tick.
#[test]
fn f9_idle_deadline_is_exact() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", On));
    t.advance(I / 2);
    assert!(t.sync_start(U, "dev-2", On));
    t.advance(I / 2);
    assert_eq!(t.presence(U), On);
    t.advance(MS);
    // dev-1 idled, dev-2 still online.
    assert_eq!(t.presence(U), On);
    let devices = t.eng().devices_of(&user(U)).to_vec();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].presence, Un);
    assert_eq!(devices[1].presence, On);
    t.advance(I / 2 - MS);
    assert_eq!(t.presence(U), On);
    t.advance(MS);
    assert_eq!(t.presence(U), Un);
}

/// Setting offline explicitly on one device does not make the user offline
/// while another device is online (spec §2.1).
#[test]
fn explicit_offline_on_one_device() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", On));
    t.put(U, Some("dev-2"), Of, None);
    assert_eq!(t.presence(U), On);
    t.put(U, Some("dev-1"), Of, None);
    assert_eq!(t.presence(U), Of);
}
