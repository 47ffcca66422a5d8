//! [`SyncAnswer`]: what one `/sync` answers, and its JSON shape.
//!
//! The service hands the answer over as data (the token, the rooms
//! section, the presence states and the moment they are shown at); the
//! JSON is written from it in one pass when the handler serialises it.
//! `/sync` is the hot path, so no JSON tree is built for the presence
//! events: each is written straight from its state
//! ([`wire::sync_event`]).

use presenced_engine::{PresenceState, Timestamp};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::token::NextBatch;
use crate::presence::wire;

/// One `/sync` answer, ready to serialise.
#[derive(Debug)]
pub struct SyncAnswer {
    next_batch: NextBatch,
    rooms: Value,
    presence: Vec<PresenceState>,
    shown_at: Timestamp,
}

impl SyncAnswer {
    /// An answer with the `rooms` section as built, and the presence
    /// `states` as seen at `shown_at` (`last_active_ago` counts from it).
    pub(crate) fn new(
        next_batch: NextBatch,
        rooms: Value,
        presence: Vec<PresenceState>,
        shown_at: Timestamp,
    ) -> Self {
        Self {
            next_batch,
            rooms,
            presence,
            shown_at,
        }
    }
}

impl Serialize for SyncAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SyncBody {
            next_batch: &self.next_batch,
            rooms: &self.rooms,
            presence: (!self.presence.is_empty()).then_some(Events {
                events: PresenceEvents {
                    states: &self.presence,
                    now: self.shown_at,
                },
            }),
            account_data: Events { events: [] },
            to_device: Events { events: [] },
            device_lists: DeviceLists {
                changed: [],
                left: [],
            },
            device_one_time_keys_count: Empty {},
        }
        .serialize(serializer)
    }
}

/// The answer's JSON, field by field, in the order clients have seen.
#[derive(Serialize)]
struct SyncBody<'a> {
    next_batch: &'a NextBatch,
    rooms: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Events<PresenceEvents<'a>>>,
    account_data: Events<[(); 0]>,
    to_device: Events<[(); 0]>,
    device_lists: DeviceLists,
    device_one_time_keys_count: Empty,
}

#[derive(Serialize)]
struct Events<T> {
    events: T,
}

/// The presence events, each written from its state as it is reached.
struct PresenceEvents<'a> {
    states: &'a [PresenceState],
    now: Timestamp,
}

impl Serialize for PresenceEvents<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.states.iter().map(|s| wire::sync_event(s, self.now)))
    }
}

/// No device list changes (presenced has no end-to-end encryption).
#[derive(Serialize)]
struct DeviceLists {
    changed: [(); 0],
    left: [(); 0],
}

#[derive(Serialize)]
struct Empty {}

#[cfg(test)]
mod tests {
    use presenced_engine::Presence;
    use ruma_common::UserId;
    use serde_json::json;

    use super::*;
    use crate::presence::token::PresenceToken;

    fn next_batch() -> NextBatch {
        NextBatch {
            events: 3,
            presence: PresenceToken::Local(9),
        }
    }

    fn rooms() -> Value {
        json!({"join": {}, "invite": {}, "leave": {}})
    }

    #[test]
    fn an_answer_without_presence_has_no_presence_section() {
        let answer = SyncAnswer::new(next_batch(), rooms(), Vec::new(), Timestamp(0));
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            concat!(
                r#"{"next_batch":"s3_9","rooms":{"invite":{},"join":{},"leave":{}},"#,
                r#""account_data":{"events":[]},"to_device":{"events":[]},"#,
                r#""device_lists":{"changed":[],"left":[]},"device_one_time_keys_count":{}}"#
            )
        );
    }

    #[test]
    fn presence_events_are_shown_at_the_answers_moment() {
        let mut state = PresenceState::new(UserId::parse("@u:test").unwrap());
        state.presence = Presence::Online;
        state.last_active_ts = Timestamp(4_000);
        state.currently_active = true;
        let answer = SyncAnswer::new(next_batch(), rooms(), vec![state], Timestamp(5_000));
        let value = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            value["presence"],
            json!({"events": [{"type": "m.presence", "sender": "@u:test", "content": {
                "presence": "online", "last_active_ago": 1000, "currently_active": true}}]})
        );
    }
}
