//! Tracking modes, deactivation (W23) and federation input checks.

use presenced_engine::{EngineConfig, Interest, Presence, RemotePresence, Tracking};

use crate::common::*;

const U: &str = "@u:test";
const V: &str = "@v:test";

/// Untracked: client and federation input are ignored, the module API
/// works, no timers run and nothing is federated.
#[test]
fn untracked_ignores_clients_but_module_works() {
    let mut t = T::new(config(|c| c.tracking = Tracking::Untracked));
    t.join("!r:test", U);
    t.join("!r:test", V);
    t.join("!r:test", "@far:other.org");
    let position = t.position();
    t.put(U, Some("d"), Presence::Online, Some("hi"));
    assert!(!t.sync_start(U, "d", Presence::Online));
    t.activity(U, "d");
    assert_eq!(
        t.remote("other.org", "@far:other.org", Presence::Online, None),
        0
    );
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.presence("@far:other.org"), Presence::Offline);
    assert_eq!(t.position(), position);

    let (_, token) = t.sync(V, None, &Interest::None);
    t.wait(V);
    t.module_set(U, Presence::Online, Some("set by module"));
    assert_eq!(t.presence(U), Presence::Online);
    assert_eq!(t.status(U).as_deref(), Some("set by module"));
    assert_eq!(t.woken(), vec![V.to_owned()]);
    assert_eq!(t.sync_ids(V, Some(token)), names(&[U]));
    assert_eq!(t.eng().poll_timeout(), None);
    assert!(t.sends().is_empty(), "untracked servers never federate");
    t.advance(F * 2);
    assert_eq!(t.presence(U), Presence::Online);
}

/// Disabled: everything is ignored.
#[test]
fn disabled_ignores_everything() {
    let mut t = T::new(config(|c| c.tracking = Tracking::Disabled));
    t.join("!r:test", U);
    t.join("!r:test", V);
    let position = t.position();
    t.put(U, Some("d"), Presence::Online, Some("hi"));
    assert!(!t.sync_start(U, "d", Presence::Online));
    t.activity(U, "d");
    assert_eq!(
        t.remote("other.org", "@far:other.org", Presence::Online, None),
        0
    );
    t.module_set(U, Presence::Online, Some("module"));
    t.module_set("@far:other.org", Presence::Online, None);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.status(U), None);
    assert_eq!(t.presence("@far:other.org"), Presence::Offline);
    assert_eq!(t.position(), position);
    assert!(t.persisted().is_empty());
    assert!(t.sends().is_empty());
    assert_eq!(t.eng().poll_timeout(), None);
}

/// W23: a deactivated user goes offline, the message is cleared, the
/// change reaches co-members, and their devices are gone.
#[test]
fn deactivation_goes_offline_and_clears_message() {
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", U);
    t.join("!r:test", V);
    t.join("!r:test", "@far:other.org");
    assert!(t.sync_start(U, "d", Presence::Online));
    t.put(U, Some("d2"), Presence::Busy, Some("on holiday"));
    let p = t.position();
    t.wait(V);
    t.clear();
    let now = t.now();
    t.engine().handle_deactivate(now, &user(U));
    t.sim.step();
    let state = t.state(U);
    assert_eq!(state.presence, Presence::Offline);
    assert_eq!(state.status_msg, None);
    assert!(!state.currently_active);
    assert!(t.eng().devices_of(&user(U)).is_empty());
    assert_eq!(t.position(), p + 1);
    assert_eq!(t.woken(), vec![V.to_owned()]);
    let (states, _) = t.sync(V, Some(p), &Interest::None);
    assert_eq!(ids(&states), names(&[U]));
    assert_eq!(states[0].presence, Presence::Offline);
    assert_eq!(t.sends(), vec![("other.org".to_owned(), names(&[U]))]);
    // No timer survives for them.
    t.advance(B * 2);
    assert_eq!(t.presence(U), Presence::Offline);
}

/// Remote presence for a user of another server than the origin is
/// dropped alone; local users can't be set over federation either.
#[test]
fn remote_presence_from_wrong_origin_dropped() {
    let mut t = T::new(EngineConfig::default());
    let entry = |u: &str| RemotePresence {
        user_id: user(u),
        presence: Presence::Online,
        last_active_ago: Some(1000),
        currently_active: Some(true),
        status_msg: Some("spoofed".to_owned()),
    };
    let now = t.now();
    let accepted = t.engine().handle_remote_presence(
        now,
        &server("evil.org"),
        [
            entry("@victim:good.org"),
            entry(U),
            entry("@mallory:evil.org"),
        ],
    );
    t.sim.step();
    assert_eq!(accepted, 1);
    assert_eq!(t.presence("@victim:good.org"), Presence::Offline);
    assert!(t.eng().presence_of(&user("@victim:good.org")).is_none());
    assert_eq!(t.presence(U), Presence::Offline);
    let mallory = t.state("@mallory:evil.org");
    assert_eq!(mallory.presence, Presence::Online);
    assert_eq!(mallory.last_active_ts, now - millis(1000));
    assert!(mallory.currently_active);
    assert_eq!(t.eng().stats().remote_dropped, 2);
    // Our own name as origin is refused too.
    let now = t.now();
    assert_eq!(
        t.engine()
            .handle_remote_presence(now, &server("test"), [entry(V)]),
        0
    );
    assert_eq!(t.presence(V), Presence::Offline);
}

/// Remote presence is never relayed to other servers.
#[test]
fn remote_presence_not_relayed() {
    let mut t = T::new(EngineConfig::default());
    t.join("!r:test", U);
    t.join("!r:test", "@a:one.org");
    t.join("!r:test", "@b:two.org");
    t.clear();
    t.wait(U);
    t.remote("one.org", "@a:one.org", Presence::Online, None);
    assert!(t.sends().is_empty());
    assert_eq!(t.woken(), vec![U.to_owned()]);
}

/// Unknown users are not stored (W10).
#[test]
fn unknown_users_not_stored() {
    let t = T::new(EngineConfig::default());
    assert!(t.eng().presence_of(&user("@nobody:test")).is_none());
    assert_eq!(t.presence("@nobody:test"), Presence::Offline);
    assert_eq!(t.eng().stats().users_tracked, 0);
}
