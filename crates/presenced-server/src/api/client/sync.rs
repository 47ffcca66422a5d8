//! `GET /_matrix/client/v3/sync`: where a sync answer is built.
//!
//! The handler parses the token, the filter (a stored filter id, read
//! through `Homeserver::filter`, or inline JSON checked by
//! `api/filter_validation.rs`) and `set_presence`, then holds a
//! `SyncingDevice` guard ([`crate::presence::PresenceService::start_syncing`])
//! for the whole request, whatever the filter lets through; an
//! `rc_presence`-limited sync keeps the device alive without applying its
//! `set_presence`. The client's `timeout` is honoured as given unless
//! `max_sync_timeout` caps it. Each turn of the loop asks the presence
//! driver for the presence section (`PresenceService::sync`, which asks the
//! engine's `sync_view`) and the homeserver for the rooms section
//! (`homeserver/sync_rooms.rs`, only when `RoomStream` says the caller's
//! rooms moved after the token, and only the rooms the filter's
//! `room.rooms` / `room.not_rooms` allow); with nothing new it waits on the
//! user's wake-up until the timeout. Long-polls per device are bounded
//! (`api/long_polls.rs`): past the bound the oldest answers at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use presenced_engine::Presence;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixQuery};
use crate::api::long_polls::LongPoll;
use crate::api::state::AppState;
use crate::homeserver::room_filter::RoomFilter;
use crate::homeserver::room_stream::RoomsMoved;
use crate::homeserver::sync_rooms;
use crate::presence::filter::PresenceFilter;
use crate::presence::token::PresenceToken;
use crate::presence::{now, wire, SyncEffect, SyncRequest};

/// Beyond this a client's `timeout` means "as long as you like": a year,
/// so deadline arithmetic cannot overflow.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Deserialize)]
pub(crate) struct SyncQuery {
    since: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    set_presence: Option<String>,
    #[serde(default)]
    full_state: Option<bool>,
    filter: Option<String>,
}

/// A sync token: `s{event stream}_{presence}`, where the presence part is
/// a single node's position or a cluster's vector ([`PresenceToken`]).
/// `None` presence: a vector of another generation (a snapshot).
fn parse_token(token: &str) -> Result<(i64, Option<PresenceToken>), ApiError> {
    let bad = || ApiError::InvalidParam(format!("Invalid since token: {token}"));
    let rest = token.strip_prefix('s').ok_or_else(bad)?;
    let (events, presence) = rest.split_once('_').ok_or_else(bad)?;
    Ok((
        events.parse().map_err(|_| bad())?,
        PresenceToken::parse(presence).map_err(|_| bad())?,
    ))
}

/// GET /_matrix/client/v3/sync
pub(crate) async fn get_sync(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let _timer = state.metrics.sync_timer();
    let since = query.since.as_deref().map(parse_token).transpose()?;
    let full_state = query.full_state.unwrap_or(false);
    let set_presence = match query.set_presence.as_deref() {
        None | Some("online") => Presence::Online,
        Some("unavailable") => Presence::Unavailable,
        Some("offline") => Presence::Offline,
        Some(other) => {
            return Err(ApiError::InvalidParam(format!(
                "Unknown set_presence: {other}"
            )))
        }
    };
    let (filter, room_filter) = match query.filter.as_deref() {
        None => (PresenceFilter::default(), RoomFilter::default()),
        Some(f) if f.trim_start().starts_with('{') => {
            let value: Value = serde_json::from_str(f)
                .map_err(|e| ApiError::InvalidParam(format!("filter: {e}")))?;
            (
                PresenceFilter::from_filter(&value),
                RoomFilter::from_filter(&value),
            )
        }
        Some(id) => {
            let value = state
                .homeserver
                .filter(&auth.user_id, id)
                .await?
                .ok_or_else(|| ApiError::InvalidParam("No such filter".to_owned()))?;
            (
                PresenceFilter::from_filter(&value),
                RoomFilter::from_filter(&value),
            )
        }
    };
    // The client's timeout as given (Synapse has no cap), unless the
    // operator set `max_sync_timeout`.
    let timeout = Duration::from_millis(query.timeout.unwrap_or(0))
        .min(state.config.max_sync_timeout.unwrap_or(FOREVER))
        .min(FOREVER);
    let deadline = Instant::now() + timeout;
    // Past the device's bound of open long-polls, the oldest answers now.
    let long_poll = LongPoll::start(&state, &auth.user_id, &auth.device_id, timeout);

    // The device counts as syncing for the whole request, whatever its
    // filter lets through: the guard ends the sync when the request ends
    // (or is dropped because the client went away). A rate-limited sync is
    // served and keeps the device alive; only its `set_presence` is not
    // applied, so a client's next long-poll right after a sync never lets
    // it time out.
    let effect = if set_presence == Presence::Offline {
        SyncEffect::None
    } else if state
        .presence_sync_limiter
        .take(&auth.user_id, Instant::now())
        .is_ok()
    {
        SyncEffect::Set(set_presence)
    } else {
        SyncEffect::KeepAlive
    };
    let _syncing = state
        .presence
        .start_syncing(&auth.user_id, Some(&auth.device_id), effect)
        .await;
    let presence_wanted = !filter.blocks_all() && !state.presence_disabled();
    let (ev_since, mut presence_since) = match (since, full_state) {
        (Some((e, p)), false) => (Some(e), p),
        (Some((e, _)), true) => (Some(e).filter(|_| false), None),
        (None, _) => (None, None),
    };
    let include_offline =
        presence_since.is_some() || state.config.presence.include_offline_users_on_sync;

    // Whether the user's rooms moved after the token, from memory; only a
    // token older than this process needs the database (each loop turn, until a room change is recorded).
    let rooms_moved =
        |e: i64| state.homeserver.room_stream.moved_since(&auth.user_id, e).1 == RoomsMoved::Yes;
    loop {
        let (upto, rooms_ready) = match ev_since {
            None => (state.homeserver.room_stream.position(), true),
            Some(e) => match state.homeserver.room_stream.moved_since(&auth.user_id, e) {
                (upto, RoomsMoved::Yes) => (upto, true),
                (upto, RoomsMoved::No) => (upto, false),
                (upto, RoomsMoved::Unknown) => {
                    let user = auth.user_id.clone();
                    let changed = state
                        .db(move |s| sync_rooms::rooms_changed(s, &user, e, upto))
                        .await?;
                    (upto, changed)
                }
            },
        };
        let wait = if rooms_ready {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let stop_waiting = || long_poll.superseded() || ev_since.is_some_and(rooms_moved);
        let presence = if presence_wanted {
            state
                .presence
                .sync(SyncRequest {
                    user: &auth.user_id,
                    since: presence_since.clone(),
                    room_since: ev_since,
                    include_offline,
                    timeout: wait,
                    stop_waiting: Some(&stop_waiting),
                })
                .await
        } else {
            if !wait.is_zero() {
                state
                    .presence
                    .wait_without_presence(&auth.user_id, wait, &stop_waiting)
                    .await;
            }
            crate::presence::SyncPresence {
                states: Vec::new(),
                next: presence_since
                    .clone()
                    .unwrap_or_else(|| state.presence.token()),
            }
        };
        let states = filter.apply(presence.states);
        let done = rooms_ready
            || !states.is_empty()
            || Instant::now() >= deadline
            || state.presence.is_stopping()
            || long_poll.superseded();
        if !done {
            // Woken by a room change, or by presence the filter drops
            // (senders): look again from the top, past what was dropped,
            // so it does not end the next wait at once.
            if presence_since.is_some() {
                presence_since = Some(presence.next);
            }
            continue;
        }
        let rooms = if rooms_ready {
            let (user, device) = (auth.user_id.clone(), auth.device_id.clone());
            let rooms_wanted = room_filter.clone();
            state
                .db(move |s| {
                    sync_rooms::rooms_section(s, &user, &device, &rooms_wanted, ev_since, upto)
                })
                .await?
        } else {
            // Nothing moved in the user's rooms up to `upto`: the section
            // the database would build is empty.
            json!({"join": {}, "invite": {}, "leave": {}})
        };
        let now = now();
        let body = SyncBody {
            next_batch: format!("s{upto}_{}", presence.next),
            rooms,
            presence: (!states.is_empty()).then(|| Events {
                events: states.iter().map(|s| wire::sync_event(s, now)).collect(),
            }),
            account_data: Events { events: [] },
            to_device: Events { events: [] },
            device_lists: DeviceLists {
                changed: [],
                left: [],
            },
            device_one_time_keys_count: Empty {},
        };
        // Written straight from the states: no JSON tree per answer.
        let json = serde_json::to_vec(&body).map_err(ApiError::internal)?;
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
}

/// A `/sync` answer.
#[derive(Serialize)]
struct SyncBody<'a> {
    next_batch: String,
    rooms: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Events<Vec<wire::SyncEvent<'a>>>>,
    account_data: Events<[(); 0]>,
    to_device: Events<[(); 0]>,
    device_lists: DeviceLists,
    device_one_time_keys_count: Empty,
}

#[derive(Serialize)]
struct Events<T> {
    events: T,
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
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_invalid_params() {
        assert_eq!(
            parse_token("s12_34").unwrap(),
            (12, Some(PresenceToken::Local(34)))
        );
        let vector = "g1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z";
        let (events, presence) = parse_token(&format!("s7_{vector}")).unwrap();
        assert_eq!(
            (events, presence.unwrap().to_string()),
            (7, vector.to_owned())
        );
        // A vector of another generation: a snapshot, not an error.
        assert_eq!(parse_token("s7_g9.1.2").unwrap(), (7, None));
        for bad in ["", "12_34", "s12", "sx_1", "s1_y", "s1_g1.1"] {
            assert!(
                matches!(parse_token(bad), Err(ApiError::InvalidParam(_))),
                "{bad}"
            );
        }
    }
}
