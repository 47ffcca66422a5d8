//! Outgoing transactions: queued presence states → the body of
//! `PUT /_matrix/federation/v1/send/{txnId}`.
//!
//! Each `m.presence` EDU carries at most [`STATES_PER_EDU`] states and a
//! transaction at most [`EDUS_PER_TRANSACTION`] EDUs (the spec's limit), so
//! one transaction holds up to [`STATES_PER_TRANSACTION`] states. Entries
//! follow the federation wire format (spec §10.7 with `user_id`):
//! `last_active_ago` is computed when the transaction is built, so a state
//! that waited in the outbox still says how long ago the user was active.

use presenced_engine::{PresenceState, Timestamp};
use ruma_common::ServerName;
use serde_json::{json, Value};

use super::presence_edu::EDU_TYPE;
use crate::presence::wire;

/// Presence states in one `m.presence` EDU (Synapse's batch size).
pub const STATES_PER_EDU: usize = 50;
/// EDUs in one transaction (the spec's limit).
pub const EDUS_PER_TRANSACTION: usize = 100;
/// States in one transaction.
pub const STATES_PER_TRANSACTION: usize = STATES_PER_EDU * EDUS_PER_TRANSACTION;

/// One `push` entry: `user_id` plus the client content.
pub fn push_entry(state: &PresenceState, now: Timestamp) -> Value {
    let mut entry = wire::content(state, now);
    entry.insert("user_id".to_owned(), json!(state.user_id));
    Value::Object(entry)
}

/// The transaction body for `states` (at most [`STATES_PER_TRANSACTION`];
/// the caller reads no more than that from the outbox).
pub fn transaction<'a>(
    origin: &ServerName,
    states: impl IntoIterator<Item = &'a PresenceState>,
    now: Timestamp,
) -> Value {
    let entries: Vec<Value> = states.into_iter().map(|s| push_entry(s, now)).collect();
    debug_assert!(entries.len() <= STATES_PER_TRANSACTION);
    let edus: Vec<Value> = entries
        .chunks(STATES_PER_EDU)
        .take(EDUS_PER_TRANSACTION)
        .map(|push| json!({"edu_type": EDU_TYPE, "content": {"push": push}}))
        .collect();
    json!({
        "origin": origin,
        "origin_server_ts": now.as_millis(),
        "pdus": [],
        "edus": edus,
    })
}

#[cfg(test)]
mod tests {
    use presenced_engine::Presence;

    use super::*;

    fn state(n: usize) -> PresenceState {
        let mut s = PresenceState::new(format!("@u{n}:a.test").try_into().unwrap());
        s.presence = Presence::Online;
        s.last_active_ts = Timestamp(9_000);
        s.currently_active = true;
        s
    }

    #[test]
    fn entries_follow_the_federation_wire_format() {
        let mut s = state(1);
        s.status_msg = Some("lunch".into());
        assert_eq!(
            push_entry(&s, Timestamp(10_000)),
            json!({"user_id": "@u1:a.test", "presence": "online", "last_active_ago": 1000,
                   "currently_active": true, "status_msg": "lunch"})
        );
        let offline = PresenceState::new("@v:a.test".try_into().unwrap());
        assert_eq!(
            push_entry(&offline, Timestamp(10_000)),
            json!({"user_id": "@v:a.test", "presence": "offline"})
        );
    }

    #[test]
    fn states_are_split_fifty_per_edu() {
        let states: Vec<_> = (0..STATES_PER_TRANSACTION).map(state).collect();
        let origin = <&ServerName>::try_from("a.test").unwrap();
        let txn = transaction(origin, &states, Timestamp(10_000));
        let edus = txn["edus"].as_array().unwrap();
        assert_eq!(edus.len(), EDUS_PER_TRANSACTION);
        assert!(edus.iter().all(|e| e["edu_type"] == "m.presence"
            && e["content"]["push"].as_array().unwrap().len() == STATES_PER_EDU));
        assert_eq!(edus[1]["content"]["push"][0]["user_id"], "@u50:a.test");
        assert_eq!(txn["origin"], "a.test");
        assert_eq!(txn["pdus"], json!([]));

        let txn = transaction(origin, &states[..51], Timestamp(10_000));
        let sizes: Vec<usize> = txn["edus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["content"]["push"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [50, 1]);
    }
}
