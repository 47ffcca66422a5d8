//! The `rooms` section of `/sync`: joined rooms with their timeline and
//! state, invites, and rooms left since the token.

use std::collections::HashMap;

use ruma_common::{DeviceId, UserId};
use serde_json::{json, Map, Value};

use crate::homeserver::client_event::ToClientEvent;
use crate::homeserver::room_filter::RoomFilter;
use crate::store::membership::Membership;
use crate::store::{Store, StoreResult};

/// Timeline events per room in one response.
const TIMELINE_LIMIT: usize = 20;

/// Builds the rooms section between two event stream positions
/// (`since = None`: initial or full-state sync), for the rooms `wanted`
/// lets through.
pub fn rooms_section(
    store: &dyn Store,
    user: &UserId,
    device: &DeviceId,
    wanted: &RoomFilter,
    since: Option<i64>,
    upto: i64,
) -> StoreResult<Value> {
    let viewer = Some((user, device));
    let rows = match since {
        None => store.user_memberships(user)?,
        Some(since) => {
            // Rooms whose membership changed, plus joined rooms with new events.
            let mut rows: HashMap<_, _> = store
                .user_memberships(user)?
                .into_iter()
                .filter(|r| r.membership == Membership::Join)
                .map(|r| (r.room_id.clone(), r))
                .collect();
            for row in store.membership_changes(user, since, upto)? {
                rows.insert(row.room_id.clone(), row);
            }
            rows.into_values().collect()
        }
    };
    let (mut join, mut invite, mut leave) = (Map::new(), Map::new(), Map::new());
    // Rooms the filter leaves out are skipped before anything is read.
    for row in rows.into_iter().filter(|r| wanted.allows(&r.room_id)) {
        let newly = since.is_none_or(|s| row.stream > s);
        match row.membership {
            Membership::Join => {
                let timeline = store.timeline(&row.room_id, since, upto, TIMELINE_LIMIT)?;
                if since.is_some() && timeline.events.is_empty() && !newly {
                    continue;
                }
                // New rooms (and initial syncs) carry the state before the
                // timeline; later syncs only the timeline.
                let state = if newly {
                    let first = timeline.events.first().map_or(upto, |e| e.stream - 1);
                    store
                        .state_at(&row.room_id, first)?
                        .iter()
                        .map(|e| e.to_client_event(viewer))
                        .collect()
                } else {
                    Vec::new()
                };
                join.insert(
                    row.room_id.to_string(),
                    json!({
                        "timeline": {
                            "events": timeline.events.iter().map(|e| e.to_client_event(viewer)).collect::<Vec<_>>(),
                            "limited": timeline.limited,
                            "prev_batch": format!("t{}", timeline.events.first().map_or(upto, |e| e.stream)),
                        },
                        "state": {"events": state},
                        "ephemeral": {"events": []},
                        "account_data": {"events": []},
                        "unread_notifications": {},
                    }),
                );
            }
            Membership::Invite if newly => {
                let state: Vec<Value> = store
                    .state_at(&row.room_id, upto)?
                    .iter()
                    .filter(|e| {
                        matches!(e.event_type.as_str(), "m.room.create" | "m.room.name" | "m.room.join_rules")
                            || (e.event_type == "m.room.member" && e.state_key.as_deref() == Some(user.as_str()))
                    })
                    .map(|e| {
                        json!({"type": e.event_type, "state_key": e.state_key, "sender": e.sender, "content": e.content})
                    })
                    .collect();
                invite.insert(
                    row.room_id.to_string(),
                    json!({"invite_state": {"events": state}}),
                );
            }
            Membership::Leave if since.is_some() && newly => {
                let timeline = store.timeline(&row.room_id, since, row.stream, TIMELINE_LIMIT)?;
                leave.insert(
                    row.room_id.to_string(),
                    json!({
                        "timeline": {
                            "events": timeline.events.iter().map(|e| e.to_client_event(viewer)).collect::<Vec<_>>(),
                            "limited": timeline.limited,
                        },
                        "state": {"events": []},
                    }),
                );
            }
            _ => {}
        }
    }
    Ok(json!({"join": join, "invite": invite, "leave": leave}))
}

/// Whether anything for the rooms section happened after `since`.
pub fn rooms_changed(store: &dyn Store, user: &UserId, since: i64, upto: i64) -> StoreResult<bool> {
    if upto <= since {
        return Ok(false);
    }
    if !store.membership_changes(user, since, upto)?.is_empty() {
        return Ok(true);
    }
    for row in store.user_memberships(user)? {
        if row.membership == Membership::Join
            && !store
                .timeline(&row.room_id, Some(since), upto, 1)?
                .events
                .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
