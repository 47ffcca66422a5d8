//! Presence on the wire: the client `m.presence` event content and the
//! federation EDU entry (spec §10.7, §16).

use presenced_engine::{PresenceState, Timestamp};
use ruma_common::UserId;
use serde::Serialize;
use serde_json::{Map, Value};

/// The content of an `m.presence` event: `presence` always;
/// `last_active_ago` when the user was ever active; `status_msg` when
/// non-empty; `currently_active` only for online users. Serialized
/// straight from the state (no intermediate JSON tree): `/sync` writes
/// thousands of these a second.
#[derive(Serialize)]
pub struct Content<'a> {
    presence: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_active_ago: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_msg: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currently_active: Option<bool>,
}

impl<'a> Content<'a> {
    /// The content of `state` as seen at `now`.
    pub fn of(state: &'a PresenceState, now: Timestamp) -> Self {
        Self {
            presence: state.presence.as_str(),
            last_active_ago: state.last_active_ago(now),
            status_msg: state.status_msg.as_deref(),
            currently_active: state.shown_currently_active(),
        }
    }
}

/// [`Content`] as a JSON object, for callers that add keys (federation's
/// `user_id`) or answer one state (`GET /presence`).
pub fn content(state: &PresenceState, now: Timestamp) -> Map<String, Value> {
    match serde_json::to_value(Content::of(state, now)) {
        Ok(Value::Object(map)) => map,
        // A struct of strings, numbers and booleans is always an object.
        _ => unreachable!("presence content serializes to an object"),
    }
}

/// An `m.presence` event as `/sync` returns it.
#[derive(Serialize)]
pub struct SyncEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sender: &'a UserId,
    content: Content<'a>,
}

/// The `/sync` event of `state` as seen at `now`.
pub fn sync_event(state: &PresenceState, now: Timestamp) -> SyncEvent<'_> {
    SyncEvent {
        kind: "m.presence",
        sender: &state.user_id,
        content: Content::of(state, now),
    }
}

#[cfg(test)]
mod tests {
    use presenced_engine::Presence;
    use serde_json::json;

    use super::*;

    #[test]
    fn default_state_shows_only_presence() {
        let state = PresenceState::new(UserId::parse("@u:test").unwrap());
        assert_eq!(
            Value::Object(content(&state, Timestamp(5_000))),
            json!({"presence": "offline"})
        );
    }

    #[test]
    fn online_state_shows_everything() {
        let mut state = PresenceState::new(UserId::parse("@u:test").unwrap());
        state.presence = Presence::Online;
        state.last_active_ts = Timestamp(4_000);
        state.currently_active = true;
        state.status_msg = Some("here".into());
        assert_eq!(
            serde_json::to_value(sync_event(&state, Timestamp(5_000))).unwrap(),
            json!({"type": "m.presence", "sender": "@u:test", "content": {
                "presence": "online", "last_active_ago": 1000, "status_msg": "here", "currently_active": true}})
        );
    }

    #[test]
    fn busy_uses_the_msc3026_name_and_hides_currently_active() {
        let mut state = PresenceState::new(UserId::parse("@u:test").unwrap());
        state.presence = Presence::Busy;
        state.currently_active = true;
        assert_eq!(
            Value::Object(content(&state, Timestamp(1))),
            json!({"presence": "org.matrix.msc3026.busy"})
        );
    }
}
