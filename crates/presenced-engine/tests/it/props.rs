//! Property tests of the pure state machine.

use presenced_engine::machine::{self, DeviceState};
use presenced_engine::{EngineConfig, Presence, PresenceState, Timestamp};
use proptest::prelude::*;

use crate::common::user;

fn presence() -> impl Strategy<Value = Presence> {
    prop_oneof![
        Just(Presence::Offline),
        Just(Presence::Unavailable),
        Just(Presence::Online),
        Just(Presence::Busy),
    ]
}

fn device() -> impl Strategy<Value = DeviceState> {
    (presence(), 0u64..10_000_000, 0u64..10_000_000, 0u32..3).prop_map(|(p, a, s, n)| DeviceState {
        device_id: None,
        presence: p,
        last_active_ts: Timestamp(a),
        last_sync_ts: Timestamp(s),
        syncing: n,
    })
}

fn state() -> impl Strategy<Value = PresenceState> {
    (
        presence(),
        0u64..10_000_000,
        0u64..10_000_000,
        0u64..10_000_000,
        proptest::option::of("[a-z]{0,3}"),
        any::<bool>(),
    )
        .prop_map(|(p, a, f, s, msg, active)| PresenceState {
            presence: p,
            last_active_ts: Timestamp(a),
            last_federation_update_ts: Timestamp(f),
            last_user_sync_ts: Timestamp(s),
            status_msg: presenced_engine::presence::status_msg(msg.as_deref()),
            currently_active: active,
            ..PresenceState::new(user("@p:test"))
        })
}

fn rank(p: Presence) -> u8 {
    match p {
        Presence::Offline => 1,
        Presence::Unavailable => 2,
        Presence::Online => 3,
        Presence::Busy => 4,
    }
}

proptest! {
    /// combine is the highest rank (busy > online > unavailable > offline);
    /// no devices is offline; order does not matter.
    #[test]
    fn combine_is_max_rank(mut devices in proptest::collection::vec(device(), 0..6)) {
        let expected = devices.iter().map(|d| d.presence).max_by_key(|p| rank(*p)).unwrap_or(Presence::Offline);
        prop_assert_eq!(machine::combine(&devices), expected);
        devices.reverse();
        prop_assert_eq!(machine::combine(&devices), expected);
    }

    /// Identical states are never notifiable.
    #[test]
    fn identical_states_never_notify(s in state()) {
        prop_assert!(!machine::should_notify(&s, &s.clone(), &EngineConfig::default()));
    }

    /// A differing status message or presence value always notifies.
    #[test]
    fn message_or_presence_change_notifies(a in state(), b in state()) {
        if a.status_msg != b.status_msg || a.presence != b.presence {
            prop_assert!(machine::should_notify(&a, &b, &EngineConfig::default()));
        }
    }

    /// Re-applying the stored result at the same instant is a no-op.
    #[test]
    fn update_is_idempotent(prev in state(), new in state(), local in any::<bool>(), now in 0u64..20_000_000) {
        let cfg = EngineConfig::default();
        let now = Timestamp(now);
        let first = machine::apply_update(&prev, new, local, now, &cfg);
        let second = machine::apply_update(&first.state, first.state.clone(), local, now, &cfg);
        prop_assert!(!second.notify);
        prop_assert!(!second.federation_ping);
        prop_assert_eq!(second.state, first.state);
    }

    /// No device changes before the user's next deadline: timers are never
    /// late.
    #[test]
    fn expiry_never_before_deadline(devices in proptest::collection::vec(device(), 1..4), now in 0u64..10_000_000) {
        let cfg = EngineConfig::default();
        let state = PresenceState {
            presence: machine::combine(&devices),
            last_federation_update_ts: Timestamp(now),
            ..PresenceState::new(user("@p:test"))
        };
        if let Some(deadline) = machine::next_deadline(&state, &devices, true, &cfg) {
            // Just before the earliest deadline no device changes.
            if deadline.0 > 0 {
                let mut before = devices.clone();
                prop_assert!(!machine::expire_devices(&mut before, Timestamp(deadline.0 - 1), &cfg));
            }
        }
    }
}
