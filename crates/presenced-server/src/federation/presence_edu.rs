//! Reading an incoming `m.presence` EDU (spec §11.5, with W9 fixed).
//!
//! Every entry of `content.push` is checked on its own: a bad entry is
//! dropped with its reason and the others still count (Synapse drops the
//! rest of the EDU at the first badly typed entry). An entry is accepted
//! when:
//! - `user_id` is a valid user ID on the origin server (an entry naming
//!   one of our own users, or a user of a third server, is dropped with
//!   its own [`DropReason`], which `/metrics` counts: a peer may only speak
//!   for its own users);
//! - `presence` is a known value (`online`, `unavailable`, `offline`, busy);
//! - `last_active_ago`, if present, is a non-negative integer that does
//!   not reach back before the Unix epoch;
//! - `currently_active`, if present, is a boolean;
//! - `status_msg`, if present, is a string (or null) of at most
//!   [`MAX_STATUS_MSG_BYTES`] bytes, so one server cannot fill memory
//!   through long messages, and without U+0000 (PostgreSQL cannot store
//!   it; our own clients are refused it at the edge too).

use presenced_engine::{Presence, RemotePresence, Timestamp};
use ruma_common::{ServerName, UserId};
use serde_json::Value;

/// The EDU type carrying presence.
pub const EDU_TYPE: &str = "m.presence";

/// Longest status message accepted from another server.
pub const MAX_STATUS_MSG_BYTES: usize = 4096;

/// The entries of one EDU, split into accepted and dropped.
#[derive(Debug, Default)]
pub struct PresencePush {
    /// Entries that passed every check.
    pub accepted: Vec<RemotePresence>,
    /// Dropped entries: their index in `push`, the kind of fault and why.
    pub dropped: Vec<(usize, DropReason, String)>,
}

/// Why an entry was dropped, as `/metrics` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// It names a user of the receiving server: a peer cannot set our
    /// users' presence.
    LocalUser,
    /// It names a user of a server other than the origin.
    OtherServer,
    /// Anything else: not an object, bad types or values.
    Invalid,
}

impl DropReason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Self; 3] = [Self::LocalUser, Self::OtherServer, Self::Invalid];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::LocalUser => "local_user",
            Self::OtherServer => "other_server",
            Self::Invalid => "invalid",
        }
    }
}

/// Reads `content` of an `m.presence` EDU that `origin` sent to `local`
/// (this server). A missing or non-list `push` yields nothing.
pub fn read(
    origin: &ServerName,
    local: &ServerName,
    content: &Value,
    now: Timestamp,
) -> PresencePush {
    let mut out = PresencePush::default();
    let Some(push) = content.get("push").and_then(Value::as_array) else {
        return out;
    };
    for (i, entry) in push.iter().enumerate() {
        match read_entry(origin, local, entry, now) {
            Ok(p) => out.accepted.push(p),
            Err((reason, why)) => out.dropped.push((i, reason, why)),
        }
    }
    out
}

fn read_entry(
    origin: &ServerName,
    local: &ServerName,
    entry: &Value,
    now: Timestamp,
) -> Result<RemotePresence, (DropReason, String)> {
    let user_id = entry_user(entry).map_err(|why| (DropReason::Invalid, why))?;
    if user_id.server_name() == local && origin != local {
        return Err((
            DropReason::LocalUser,
            format!("{user_id} is a user of this server, not of {origin}"),
        ));
    }
    if user_id.server_name() != origin {
        return Err((
            DropReason::OtherServer,
            format!("{user_id} is not a user of {origin}"),
        ));
    }
    read_state(user_id, entry, now).map_err(|why| (DropReason::Invalid, why))
}

fn entry_user(entry: &Value) -> Result<ruma_common::OwnedUserId, String> {
    let user_id = entry
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or("entry is not an object with a string user_id")?;
    UserId::parse(user_id).map_err(|e| format!("user_id {user_id:?}: {e}"))
}

fn read_state(
    user_id: ruma_common::OwnedUserId,
    entry: &Value,
    now: Timestamp,
) -> Result<RemotePresence, String> {
    let entry = entry.as_object().ok_or("entry is not an object")?;
    let presence = entry
        .get("presence")
        .and_then(Value::as_str)
        .ok_or("presence is missing or not a string")?;
    let presence =
        Presence::parse(presence).ok_or_else(|| format!("unknown presence {presence:?}"))?;
    let last_active_ago = match entry.get("last_active_ago") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|ago| *ago <= now.as_millis())
                .ok_or_else(|| format!("last_active_ago {v} is not a sane duration"))?,
        ),
    };
    let currently_active = match entry.get("currently_active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return Err(format!("currently_active {v} is not a boolean")),
    };
    let status_msg = match entry.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() > MAX_STATUS_MSG_BYTES => {
            return Err(format!("status_msg of {} bytes", s.len()))
        }
        Some(Value::String(s)) if s.contains('\0') => {
            return Err("status_msg contains U+0000 (NUL)".to_owned())
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(format!("status_msg {v} is not a string")),
    };
    Ok(RemotePresence {
        user_id,
        presence,
        last_active_ago,
        currently_active,
        status_msg,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn origin() -> &'static ServerName {
        <&ServerName>::try_from("remote.test").unwrap()
    }

    fn local() -> &'static ServerName {
        <&ServerName>::try_from("local.test").unwrap()
    }

    #[test]
    fn a_full_entry_is_read() {
        let content = json!({"push": [{
            "user_id": "@bob:remote.test", "presence": "online",
            "last_active_ago": 5000, "currently_active": true, "status_msg": "hi"
        }]});
        let push = read(origin(), local(), &content, NOW);
        assert!(push.dropped.is_empty(), "{:?}", push.dropped);
        assert_eq!(
            push.accepted,
            vec![RemotePresence {
                user_id: UserId::parse("@bob:remote.test").unwrap(),
                presence: Presence::Online,
                last_active_ago: Some(5000),
                currently_active: Some(true),
                status_msg: Some("hi".to_owned()),
            }]
        );
    }

    #[test]
    fn optional_fields_may_be_absent_or_null_and_busy_is_known() {
        let content = json!({"push": [
            {"user_id": "@a:remote.test", "presence": "unavailable"},
            {"user_id": "@b:remote.test", "presence": "org.matrix.msc3026.busy",
             "status_msg": null, "last_active_ago": null, "currently_active": null},
        ]});
        let push = read(origin(), local(), &content, NOW);
        assert!(push.dropped.is_empty(), "{:?}", push.dropped);
        assert_eq!(push.accepted.len(), 2);
        assert_eq!(push.accepted[1].presence, Presence::Busy);
        assert_eq!(push.accepted[1].status_msg, None);
    }

    #[test]
    fn each_bad_entry_is_dropped_alone() {
        let long = "x".repeat(MAX_STATUS_MSG_BYTES + 1);
        let content = json!({"push": [
            "not an object",
            {"presence": "online"},
            {"user_id": "not-a-user-id", "presence": "online"},
            {"user_id": "@eve:other.test", "presence": "online"},
            {"user_id": "@c:remote.test", "presence": "dancing"},
            {"user_id": "@c:remote.test"},
            {"user_id": "@c:remote.test", "presence": "online", "last_active_ago": -5},
            {"user_id": "@c:remote.test", "presence": "online", "last_active_ago": 1.5},
            {"user_id": "@c:remote.test", "presence": "online", "last_active_ago": "5"},
            {"user_id": "@c:remote.test", "presence": "online", "last_active_ago": NOW.as_millis() + 1},
            {"user_id": "@c:remote.test", "presence": "online", "currently_active": "yes"},
            {"user_id": "@c:remote.test", "presence": "online", "status_msg": 7},
            {"user_id": "@c:remote.test", "presence": "online", "status_msg": long},
            {"user_id": "@c:remote.test", "presence": "online", "status_msg": "a\u{0}b"},
            {"user_id": "@good:remote.test", "presence": "online", "last_active_ago": 0},
        ]});
        let push = read(origin(), local(), &content, NOW);
        let dropped: Vec<usize> = push.dropped.iter().map(|(i, _, _)| *i).collect();
        assert_eq!(dropped, (0..14).collect::<Vec<_>>(), "{:?}", push.dropped);
        assert_eq!(push.dropped[13].2, "status_msg contains U+0000 (NUL)");
        assert_eq!(push.accepted.len(), 1);
        assert_eq!(push.accepted[0].user_id, "@good:remote.test");
    }

    #[test]
    fn no_push_list_is_nothing() {
        for content in [json!({}), json!({"push": 5}), json!("x")] {
            let push = read(origin(), local(), &content, NOW);
            assert!(push.accepted.is_empty() && push.dropped.is_empty());
        }
    }

    #[test]
    fn entries_for_other_servers_users_are_told_apart() {
        let content = json!({"push": [
            {"user_id": "@mine:local.test", "presence": "online"},
            {"user_id": "@eve:other.test", "presence": "online"},
            {"user_id": "@ok:remote.test", "presence": "online"},
            {"user_id": "@mine:local.test", "presence": 5},
        ]});
        let push = read(origin(), local(), &content, NOW);
        let reasons: Vec<DropReason> = push.dropped.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(
            reasons,
            [
                DropReason::LocalUser,
                DropReason::OtherServer,
                DropReason::LocalUser
            ]
        );
        assert_eq!(push.accepted.len(), 1);
    }
}
