//! Presence on the wire: the client `m.presence` event content and the
//! federation EDU entry (spec §10.7, §16).

use presenced_engine::{PresenceState, Timestamp};
use serde_json::{json, Map, Value};

/// The content of an `m.presence` event: `presence` always;
/// `last_active_ago` when the user was ever active; `status_msg` when
/// non-empty; `currently_active` only for online users.
pub fn content(state: &PresenceState, now: Timestamp) -> Map<String, Value> {
    let mut content = Map::new();
    content.insert("presence".to_owned(), json!(state.presence.as_str()));
    if let Some(ago) = state.last_active_ago(now) {
        content.insert("last_active_ago".to_owned(), json!(ago));
    }
    if let Some(msg) = &state.status_msg {
        content.insert("status_msg".to_owned(), json!(&**msg));
    }
    if let Some(active) = state.shown_currently_active() {
        content.insert("currently_active".to_owned(), json!(active));
    }
    content
}

/// An `m.presence` event as `/sync` returns it.
pub fn sync_event(state: &PresenceState, now: Timestamp) -> Value {
    json!({
        "type": "m.presence",
        "sender": state.user_id,
        "content": content(state, now),
    })
}

#[cfg(test)]
mod tests {
    use presenced_engine::Presence;
    use ruma_common::UserId;

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
            sync_event(&state, Timestamp(5_000)),
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
