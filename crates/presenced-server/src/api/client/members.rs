//! Room listings: `GET /joined_rooms`, `/rooms/{roomId}/joined_members`,
//! `/rooms/{roomId}/members`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedRoomId;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixPath, MatrixQuery};
use crate::api::state::AppState;
use crate::homeserver::client_event::ToClientEvent;
use crate::homeserver::rooms;
use crate::store::membership::Membership;

/// GET /_matrix/client/v3/joined_rooms
pub(crate) async fn get_joined_rooms(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let user = auth.user_id.clone();
    let rows = state.db(move |s| s.user_memberships(&user)).await?;
    let joined: Vec<_> = rows
        .into_iter()
        .filter(|r| r.membership == Membership::Join)
        .map(|r| r.room_id)
        .collect();
    Ok(Json(json!({ "joined_rooms": joined })))
}

/// GET /_matrix/client/v3/rooms/{roomId}/joined_members
///
/// Members map to empty profiles: presenced keeps no display names yet,
/// and both profile fields are optional in the spec.
pub(crate) async fn get_joined_members(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> Result<Json<Value>, ApiError> {
    rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
    let rows = state.db(move |s| s.room_memberships(&room_id)).await?;
    let joined: Map<String, Value> = rows
        .into_iter()
        .filter(|r| r.membership == Membership::Join)
        .map(|r| (r.user_id.to_string(), json!({})))
        .collect();
    Ok(Json(json!({ "joined": joined })))
}

/// GET /_matrix/client/v3/rooms/{roomId}/members
///
/// The current `m.room.member` events, filtered by the optional
/// `membership` / `not_membership` query parameters. Only for joined users:
/// presenced does not serve the membership as of a past leave.
pub(crate) async fn get_members(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
    let events = state.db(move |s| s.member_events(&room_id)).await?;
    let membership_of = |e: &crate::store::StoredEvent| {
        e.content
            .get("membership")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let chunk: Vec<Value> = events
        .iter()
        .filter(|e| {
            query
                .get("membership")
                .is_none_or(|m| *m == membership_of(e))
        })
        .filter(|e| {
            query
                .get("not_membership")
                .is_none_or(|m| *m != membership_of(e))
        })
        .map(|e| e.to_client_event(Some((&auth.user_id, &auth.device_id))))
        .collect();
    Ok(Json(json!({ "chunk": chunk })))
}
