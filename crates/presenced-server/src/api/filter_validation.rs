//! Checks a sync filter (spec "Filtering") the way Synapse does before it
//! stores one or serves a sync with an inline one: the known fields must
//! have their JSON types, `senders` / `not_senders` must hold user IDs and
//! `rooms` / `not_rooms` room IDs. Unknown fields are allowed, so newer
//! clients' options pass.
//!
//! Filters are checked once, when uploaded or when an inline filter is
//! parsed; `/sync` then reads them in place (`presence/filter.rs`,
//! `room_filter.rs`) without checking again.

use ruma_common::{RoomId, UserId};
use serde_json::{Map, Value};

/// Why a filter is refused: the path of the offending field and the rule.
pub type FilterError = String;

/// Checks a whole filter.
pub fn validate(filter: &Value) -> Result<(), FilterError> {
    let top = object(filter, "filter")?;
    for key in ["presence", "account_data"] {
        if let Some(section) = top.get(key) {
            event_filter(section, key)?;
        }
    }
    if let Some(room) = top.get("room") {
        room_filter(room)?;
    }
    if let Some(format) = top.get("event_format") {
        if !matches!(format.as_str(), Some("client" | "federation")) {
            return Err("event_format: must be \"client\" or \"federation\"".to_owned());
        }
    }
    if let Some(fields) = top.get("event_fields") {
        strings(fields, "event_fields")?;
    }
    Ok(())
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, FilterError> {
    value
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))
}

fn strings<'a>(value: &'a Value, path: &str) -> Result<Vec<&'a str>, FilterError> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("{path}: must be an array of strings"))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| format!("{path}: must be an array of strings"))
        })
        .collect()
}

fn user_ids(value: &Value, path: &str) -> Result<(), FilterError> {
    for s in strings(value, path)? {
        UserId::parse(s).map_err(|_| format!("{path}: {s:?} is not a user ID"))?;
    }
    Ok(())
}

fn room_ids(value: &Value, path: &str) -> Result<(), FilterError> {
    for s in strings(value, path)? {
        <&RoomId>::try_from(s).map_err(|_| format!("{path}: {s:?} is not a room ID"))?;
    }
    Ok(())
}

/// The fields common to every event filter.
fn event_fields(map: &Map<String, Value>, path: &str) -> Result<(), FilterError> {
    for (key, value) in map {
        let at = || format!("{path}.{key}");
        match key.as_str() {
            "limit" if !value.is_number() => return Err(format!("{}: must be a number", at())),
            "senders" | "not_senders" => user_ids(value, &at())?,
            "types"
            | "not_types"
            | "org.matrix.msc3874.rel_types"
            | "org.matrix.msc3874.not_rel_types" => {
                strings(value, &at())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `presence`, `account_data`: an event filter.
fn event_filter(value: &Value, path: &str) -> Result<(), FilterError> {
    event_fields(object(value, path)?, path)
}

/// `room.timeline`, `room.state`, ...: an event filter with room fields.
fn room_event_filter(value: &Value, path: &str) -> Result<(), FilterError> {
    let map = object(value, path)?;
    event_fields(map, path)?;
    for (key, value) in map {
        let at = || format!("{path}.{key}");
        match key.as_str() {
            "rooms" | "not_rooms" => room_ids(value, &at())?,
            "contains_url"
            | "lazy_load_members"
            | "include_redundant_members"
            | "unread_thread_notifications"
            | "org.matrix.msc3773.unread_thread_notifications"
                if !value.is_boolean() =>
            {
                return Err(format!("{}: must be a boolean", at()));
            }
            "org.matrix.labels"
            | "org.matrix.not_labels"
            | "related_by_senders"
            | "related_by_rel_types" => {
                strings(value, &at())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `room`.
fn room_filter(value: &Value) -> Result<(), FilterError> {
    let map = object(value, "room")?;
    for (key, value) in map {
        let at = format!("room.{key}");
        match key.as_str() {
            "rooms" | "not_rooms" => room_ids(value, &at)?,
            "ephemeral" | "state" | "timeline" | "account_data" => {
                room_event_filter(value, &at)?;
            }
            "include_leave" if !value.is_boolean() => {
                return Err(format!("{at}: must be a boolean"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn valid_filters_pass() {
        for f in [
            json!({}),
            json!({"presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]}}),
            json!({"presence": {"org.matrix.msc9999.future_option": true}}),
            json!({"room": {"rooms": ["!a:x"], "timeline": {"limit": 10, "lazy_load_members": true}}}),
            json!({"presence": {"limit": 2.5}, "event_format": "client", "event_fields": ["content.body"]}),
            json!({"something_new": {"x": 1}}),
        ] {
            assert_eq!(validate(&f), Ok(()), "{f}");
        }
    }

    #[test]
    fn invalid_filters_are_refused_with_the_field_named() {
        for (f, field) in [
            (json!([]), "filter"),
            (
                json!({"presence": {"senders": ["@bar;pik.test.com"]}}),
                "presence.senders",
            ),
            (
                json!({"presence": {"not_senders": ["alice"]}}),
                "presence.not_senders",
            ),
            (json!({"presence": {"limit": "10"}}), "presence.limit"),
            (
                json!({"presence": {"types": "m.presence"}}),
                "presence.types",
            ),
            (json!({"presence": {"types": [1]}}), "presence.types"),
            (json!({"presence": 5}), "presence"),
            (json!({"room": {"rooms": ["#alias:x"]}}), "room.rooms"),
            (json!({"room": {"not_rooms": ["nope"]}}), "room.not_rooms"),
            (
                json!({"room": {"timeline": {"rooms": ["x"]}}}),
                "room.timeline.rooms",
            ),
            (
                json!({"room": {"state": {"lazy_load_members": "yes"}}}),
                "room.state.lazy_load_members",
            ),
            (json!({"room": {"include_leave": 1}}), "room.include_leave"),
            (json!({"event_fields": [1]}), "event_fields"),
            (json!({"event_format": "xml"}), "event_format"),
        ] {
            let err = validate(&f).unwrap_err();
            assert!(err.starts_with(field), "{f}: {err}");
        }
    }
}
