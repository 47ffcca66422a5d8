//! Catalogue F: handler semantics (`PresenceHandlerTestCase`), F2–F8 and
//! F11–F13 (F1 is worker topology; F9/F10 are in `multi_device`).

use presenced_engine::{EngineConfig, Presence, Tracking};

use crate::common::*;

const U: &str = "@test:test";

fn set_checked(t: &mut T, p: Presence, msg: Option<&str>) {
    t.put(U, Some("dev-1"), p, msg);
    assert_eq!(t.presence(U), p);
    assert_eq!(t.status(U).as_deref(), msg);
}

/// F2: a PUT-only client goes offline exactly S (30 s) after the PUT, its
/// message kept. W13 fix: Synapse takes ≈60–70 s (the first armed entry is
/// the currently-active one); ours counts S from the device's last sign of
/// life, for syncing and PUT-only clients alike.
#[test]
fn f2_user_goes_offline_by_timeout_status_msg_remain() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Online, Some("I'm here!"));
    t.advance(secs(15));
    assert_eq!(t.presence(U), Presence::Online);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
    t.advance(S - secs(15));
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(MS);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

#[test]
fn f3_user_goes_offline_manually_with_no_status_msg() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Online, Some("I'm here!"));
    t.put(U, Some("dev-1"), Presence::Offline, None);
    assert_eq!(t.presence(U), Presence::Offline);
    assert_eq!(t.status(U), None);
}

#[test]
fn f4_user_goes_offline_manually_with_status_msg() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Online, Some("I'm here!"));
    set_checked(&mut t, Presence::Offline, Some("And now here."));
}

/// F5: omitting the message clears it.
#[test]
fn f5_user_reset_online_with_no_status() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Online, Some("I'm here!"));
    t.put(U, Some("dev-1"), Presence::Online, None);
    assert_eq!(t.presence(U), Presence::Online);
    assert_eq!(t.status(U), None);
}

/// F6: an explicit null clears the message; an empty string is no message.
#[test]
fn f6_set_presence_with_status_msg_none() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Online, Some("I'm here!"));
    set_checked(&mut t, Presence::Online, None);
    set_checked(&mut t, Presence::Online, Some("back"));
    t.put(U, Some("dev-1"), Presence::Online, Some(""));
    assert_eq!(t.status(U), None);
}

/// F7: a sync that does not affect presence changes nothing.
#[test]
fn f7_set_presence_from_syncing_not_set() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Unavailable, Some("I'm here!"));
    let before = t.state(U);
    assert!(!t.sync_start(U, "dev-1", Presence::Offline));
    assert_eq!(t.state(U), before);
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

#[test]
fn f8_set_presence_from_syncing_is_set() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Unavailable, Some("I'm here!"));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert_eq!(t.presence(U), Presence::Online);
}

#[test]
fn f11_set_presence_from_syncing_keeps_status() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Unavailable, Some("I'm here!"));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert_eq!(t.status(U).as_deref(), Some("I'm here!"));
}

/// F12: syncs cannot lower busy; an explicit set on the only device can.
#[test]
fn f12_set_presence_from_syncing_keeps_busy() {
    let mut t = T::new(EngineConfig::default());
    set_checked(&mut t, Presence::Busy, Some("I'm busy!"));
    assert!(t.sync_start(U, "dev-1", Presence::Online));
    assert_eq!(t.presence(U), Presence::Busy);
    t.advance(I + secs(5));
    assert_eq!(t.presence(U), Presence::Busy);
    set_checked(&mut t, Presence::Online, Some("I'm busy!"));
}

/// F13: untracked presence never changes by itself.
#[test]
fn f13_untracked_does_not_idle() {
    let mut t = T::new(config(|c| c.tracking = Tracking::Untracked));
    t.module_set(U, Presence::Online, None);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(S);
    assert_eq!(t.presence(U), Presence::Online);
    t.advance(F * 10);
    assert_eq!(t.presence(U), Presence::Online);
}

/// Activity revives an unavailable device and counts as activity.
#[test]
fn activity_bump_revives_unavailable_device() {
    let mut t = T::new(EngineConfig::default());
    assert!(t.sync_start(U, "dev-1", Presence::Unavailable));
    assert_eq!(t.presence(U), Presence::Unavailable);
    t.advance(secs(10));
    t.activity(U, "dev-1");
    assert_eq!(t.presence(U), Presence::Online);
    assert_eq!(t.state(U).last_active_ts, t.now());
}

/// An offline device that only acts (a bot) leaves no device record (W10)
/// and no timer.
#[test]
fn activity_of_offline_user_keeps_no_device() {
    let mut t = T::new(EngineConfig::default());
    t.activity(U, "bot");
    assert_eq!(t.presence(U), Presence::Offline);
    assert!(t.eng().devices_of(&user(U)).is_empty());
    assert_eq!(t.eng().poll_timeout(), None);
}
