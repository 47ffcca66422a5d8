//! Catalogue A: the update rules (`PresenceUpdateTestCase`), as pure
//! functions of [`machine`]: "state after update", "notify?", "federation
//! ping?" and the next deadline.
//!
//! Synapse arms several wheel entries per update; we keep one earliest
//! deadline per user, computed from the state and its devices. Synapse arms
//! the sync timer at `last_user_sync_ts + S` even when that is in the past
//! (W12 spin, "0 + S" in the catalogue); our device keepalive counts from the
//! device's last sign of life (sync end or activity, W13), so the deadline is
//! never in the past. Every rule is strict, so deadlines sit 1 ms past their
//! threshold, except `currently_active`, which is false at exactly G.

use presenced_engine::machine;
use presenced_engine::{EngineConfig, Presence, PresenceState, Timestamp, Tracking};

use crate::common::*;

const NOW: Timestamp = Timestamp(5_000_000);

fn foo() -> PresenceState {
    PresenceState::new(user("@foo:bar"))
}

fn online_active(last_active: Timestamp) -> PresenceState {
    PresenceState {
        presence: Presence::Online,
        last_active_ts: last_active,
        currently_active: true,
        ..foo()
    }
}

#[test]
fn a1_offline_to_online() {
    let cfg = EngineConfig::default();
    let prev = foo();
    let new = PresenceState {
        presence: Presence::Online,
        last_active_ts: NOW,
        ..prev.clone()
    };
    let out = machine::apply_update(&prev, new, true, NOW, &cfg);
    assert!(out.notify);
    // The notified change is itself the federation send: no separate ping.
    assert!(!out.federation_ping);
    assert!(out.state.currently_active);
    assert_eq!(out.state.presence, Presence::Online);
    assert_eq!(out.state.status_msg, None);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    // Synapse: now + I, 0 + S, now + G. With the device still syncing the
    // earliest is the currently-active expiry at now + G; once it stopped
    // syncing (never synced: last sync 0) it is kept alive S after its last
    // activity, not S after 0 (W12).
    let syncing = [dev(Presence::Online, NOW, Timestamp::ZERO, 1)];
    assert_eq!(
        machine::next_deadline(&out.state, &syncing, true, &cfg),
        Some(NOW + G)
    );
    let idle = [dev(Presence::Online, NOW, Timestamp::ZERO, 0)];
    assert_eq!(
        machine::next_deadline(&out.state, &idle, true, &cfg),
        Some(NOW + S + MS)
    );
}

#[test]
fn a2_online_to_online() {
    let cfg = EngineConfig::default();
    let prev = online_active(NOW);
    let out = machine::apply_update(&prev, prev.clone(), true, NOW, &cfg);
    assert!(!out.notify);
    // last_federation_update_ts was 0, more than P ago: keepalive due.
    assert!(out.federation_ping);
    assert!(out.state.currently_active);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    let syncing = [dev(Presence::Online, NOW, Timestamp::ZERO, 1)];
    assert_eq!(
        machine::next_deadline(&out.state, &syncing, true, &cfg),
        Some(NOW + G)
    );
}

#[test]
fn a3_online_to_online_last_active_noop() {
    let cfg = EngineConfig::default();
    let prev = online_active(NOW - G - millis(10));
    let new = PresenceState {
        last_active_ts: NOW,
        ..prev.clone()
    };
    let out = machine::apply_update(&prev, new, true, NOW, &cfg);
    // Activity moved by more than G, but the user is currently active.
    assert!(!out.notify);
    assert!(out.federation_ping);
    assert!(out.state.currently_active);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    let syncing = [dev(Presence::Online, NOW, Timestamp::ZERO, 1)];
    assert_eq!(
        machine::next_deadline(&out.state, &syncing, true, &cfg),
        Some(NOW + G)
    );
}

#[test]
fn a4_online_to_online_last_active() {
    let cfg = EngineConfig::default();
    let last_active = NOW - G - MS;
    let prev = online_active(last_active);
    let out = machine::apply_update(&prev, prev.clone(), true, NOW, &cfg);
    // currently_active flips to false: notifiable.
    assert!(out.notify);
    assert!(!out.state.currently_active);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    // No currently-active timer any more; the idle timer of the (syncing)
    // device is next: (now − G − 1) + I, plus our 1 ms strictness.
    let syncing = [dev(Presence::Online, last_active, Timestamp::ZERO, 1)];
    assert_eq!(
        machine::next_deadline(&out.state, &syncing, true, &cfg),
        Some(last_active + I + MS)
    );
}

#[test]
fn a5_remote_ping_timer() {
    let cfg = EngineConfig::default();
    let prev = PresenceState {
        presence: Presence::Online,
        last_active_ts: NOW,
        ..foo()
    };
    let out = machine::apply_update(&prev, prev.clone(), false, NOW, &cfg);
    assert!(!out.notify);
    assert!(!out.federation_ping);
    assert!(!out.state.currently_active);
    // Exactly one timer: 0 + F (strict: 1 ms past it).
    assert_eq!(
        machine::next_deadline(&out.state, &[], false, &cfg),
        Some(Timestamp::ZERO + F + MS)
    );
}

#[test]
fn a6_online_to_offline() {
    let cfg = EngineConfig::default();
    let prev = online_active(NOW);
    let new = PresenceState {
        presence: Presence::Offline,
        ..prev.clone()
    };
    let out = machine::apply_update(&prev, new, true, NOW, &cfg);
    assert!(out.notify);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    assert_eq!(machine::next_deadline(&out.state, &[], true, &cfg), None);
}

#[test]
fn a7_online_to_idle() {
    let cfg = EngineConfig::default();
    let prev = online_active(NOW);
    let new = PresenceState {
        presence: Presence::Unavailable,
        ..prev.clone()
    };
    let out = machine::apply_update(&prev, new, true, NOW, &cfg);
    assert!(out.notify);
    assert_eq!(out.state.last_federation_update_ts, NOW);
    assert_eq!(out.state.status_msg, None);
    assert_eq!(out.state.presence, Presence::Unavailable);
    // Synapse: one timer at 0 + S. Ours: the device's keepalive, S after its
    // last activity (now), never in the past (W12).
    let devices = [dev(Presence::Unavailable, NOW, Timestamp::ZERO, 0)];
    assert_eq!(
        machine::next_deadline(&out.state, &devices, true, &cfg),
        Some(NOW + S + MS)
    );
}

/// A9 `test_override` ×12: in untracked mode no timer is ever armed, and the
/// module API's state stays as set.
#[test]
fn a9_untracked_override_arms_no_timer() {
    use Presence::*;
    let values = [Busy, Online, Unavailable, Offline];
    let mut cases = 0;
    for initial in values {
        for fin in values {
            if initial == fin {
                continue;
            }
            cases += 1;
            let mut t = T::new(config(|c| c.tracking = Tracking::Untracked));
            t.module_set("@foo:test", initial, None);
            assert_eq!(t.presence("@foo:test"), initial);
            t.module_set("@foo:test", fin, None);
            assert_eq!(t.presence("@foo:test"), fin, "{initial:?} -> {fin:?}");
            assert_eq!(t.eng().poll_timeout(), None, "{initial:?} -> {fin:?}");
            assert_eq!(t.eng().stats().timers, 0);
            t.advance(B * 24);
            assert_eq!(t.presence("@foo:test"), fin, "{initial:?} -> {fin:?}");
        }
    }
    assert_eq!(cases, 12);
}

/// Spec §4, rule by rule.
#[test]
fn should_notify_rules() {
    let cfg = EngineConfig::default();
    let base = online_active(NOW);
    assert!(!machine::should_notify(&base, &base, &cfg));
    // Only timestamps that are never notified.
    let ts_only = PresenceState {
        last_user_sync_ts: NOW,
        last_federation_update_ts: NOW,
        ..base.clone()
    };
    assert!(!machine::should_notify(&base, &ts_only, &cfg));
    let msg = PresenceState {
        status_msg: Some("hi".into()),
        ..base.clone()
    };
    assert!(machine::should_notify(&base, &msg, &cfg));
    let unavailable = PresenceState {
        presence: Presence::Unavailable,
        ..base.clone()
    };
    assert!(machine::should_notify(&base, &unavailable, &cfg));
    // Online, currently active: activity bumps are never notified.
    let bumped = PresenceState {
        last_active_ts: NOW + G + MS,
        ..base.clone()
    };
    assert!(!machine::should_notify(&base, &bumped, &cfg));
    // Online, not active any more, activity moved by more than G: notified;
    // by exactly G: not (strict).
    let inactive = PresenceState {
        currently_active: false,
        ..base.clone()
    };
    let moved = PresenceState {
        last_active_ts: NOW + G + MS,
        ..inactive.clone()
    };
    assert!(machine::should_notify(&inactive, &moved, &cfg));
    let moved_g = PresenceState {
        last_active_ts: NOW + G,
        ..inactive.clone()
    };
    assert!(!machine::should_notify(&inactive, &moved_g, &cfg));
    // Not online: any move by more than G.
    let off = PresenceState {
        presence: Presence::Offline,
        ..inactive.clone()
    };
    let off_moved = PresenceState {
        last_active_ts: NOW + G + MS,
        ..off.clone()
    };
    assert!(machine::should_notify(&off, &off_moved, &cfg));
    let off_moved_g = PresenceState {
        last_active_ts: NOW + G,
        ..off.clone()
    };
    assert!(!machine::should_notify(&off, &off_moved_g, &cfg));
}
