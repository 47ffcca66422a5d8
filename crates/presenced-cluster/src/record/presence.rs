//! A presence state as a state record's JSON payload (readable with the
//! `nats` CLI; a binary form is the known saving, SCALING.md).
//!
//! The one codec of the payload: the server writes and reads its log with
//! it, and the simulator's engine driver too, so the simulation checks the
//! format that ships rather than a copy of it.

use std::sync::Arc;

use presenced_engine::{Presence, PresenceState, Timestamp};
use ruma_common::OwnedUserId;
use serde_json::{json, Value};

/// The payload of a user's state record.
pub fn encode_state(state: &PresenceState) -> Value {
    json!({
        "presence": state.presence.as_str(),
        "status_msg": state.status_msg.as_deref(),
        "last_active_ts": state.last_active_ts.0,
        "last_federation_update_ts": state.last_federation_update_ts.0,
        "last_user_sync_ts": state.last_user_sync_ts.0,
        "currently_active": state.currently_active,
    })
}

/// The state a record carries; `None` for a payload this version cannot
/// read (a bad user ID or presence value), which is then skipped.
pub fn decode_state(user: &str, value: &Value) -> Option<PresenceState> {
    let user_id: OwnedUserId = user.try_into().ok()?;
    let ts = |key: &str| Timestamp(value[key].as_u64().unwrap_or(0));
    Some(PresenceState {
        presence: Presence::parse(value["presence"].as_str()?)?,
        status_msg: value["status_msg"].as_str().map(Arc::from),
        last_active_ts: ts("last_active_ts"),
        last_federation_update_ts: ts("last_federation_update_ts"),
        last_user_sync_ts: ts("last_user_sync_ts"),
        currently_active: value["currently_active"].as_bool().unwrap_or(false),
        ..PresenceState::new(user_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_the_round_trip() {
        let user: OwnedUserId = "@a:example.org".try_into().unwrap();
        let state = PresenceState {
            presence: Presence::Unavailable,
            status_msg: Some(Arc::from("away")),
            last_active_ts: Timestamp(5),
            last_federation_update_ts: Timestamp(6),
            last_user_sync_ts: Timestamp(7),
            currently_active: true,
            ..PresenceState::new(user)
        };
        let back = decode_state("@a:example.org", &encode_state(&state)).unwrap();
        assert_eq!(back, state);
        assert!(decode_state("not a user", &encode_state(&state)).is_none());
        assert!(decode_state("@a:example.org", &json!({"presence": "asleep"})).is_none());
    }
}
