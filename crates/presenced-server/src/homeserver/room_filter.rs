//! The room part of a sync filter that decides which rooms the `rooms`
//! section covers: `room.rooms` (only these) and `room.not_rooms` (never
//! these, which wins).
//!
//! Clients that want presence only (the load tool, bots, presence-only
//! dashboards) send `"room": {"rooms": []}`; without this, their initial
//! sync built the state and timeline of every room they are in, only to
//! have it thrown away.

use ruma_common::RoomId;
use serde::Deserialize;
use serde_json::Value;

/// Which rooms a sync's `rooms` section includes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RoomFilter {
    /// Only these rooms (`None`: all).
    #[serde(default)]
    rooms: Option<Vec<String>>,
    /// Never these rooms.
    #[serde(default)]
    not_rooms: Vec<String>,
}

impl RoomFilter {
    /// The room filter of a sync filter (a missing or malformed `room`
    /// part lets every room through, as the presence part does).
    pub fn from_filter(filter: &Value) -> Self {
        filter
            .get("room")
            .and_then(|r| Self::deserialize(r).ok())
            .unwrap_or_default()
    }

    /// Whether the room's section is wanted.
    pub fn allows(&self, room: &RoomId) -> bool {
        let id = room.as_str();
        self.rooms
            .as_ref()
            .is_none_or(|list| list.iter().any(|r| r == id))
            && !self.not_rooms.iter().any(|r| r == id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn room(id: &str) -> &RoomId {
        <&RoomId>::try_from(id).unwrap()
    }

    #[test]
    fn no_room_filter_allows_every_room() {
        let f = RoomFilter::from_filter(&json!({"presence": {"limit": 3}}));
        assert!(f.allows(room("!a:x")));
    }

    #[test]
    fn an_empty_include_list_allows_none() {
        let f = RoomFilter::from_filter(&json!({"room": {"rooms": []}}));
        assert!(!f.allows(room("!a:x")));
    }

    #[test]
    fn include_and_exclude_lists_with_exclusion_winning() {
        let f = RoomFilter::from_filter(
            &json!({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]}}),
        );
        assert!(f.allows(room("!a:x")));
        assert!(!f.allows(room("!b:x")));
        assert!(!f.allows(room("!c:x")));
    }
}
