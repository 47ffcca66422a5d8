//! `PUT /rooms/{roomId}/typing/{userId}`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson, MatrixPath};
use crate::api::state::AppState;
use crate::homeserver::activity::ActivityEvent;
use crate::homeserver::rooms;

#[derive(Deserialize)]
pub(crate) struct TypingRequest {
    #[allow(dead_code)] // validated for shape; typing is not relayed yet
    typing: bool,
    #[serde(default)]
    #[allow(dead_code)]
    timeout: Option<u64>,
}

/// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
///
/// Counts as activity for presence. Typing notifications themselves are
/// not relayed to other members yet (that needs the `/sync` ephemeral
/// section).
pub(crate) async fn put_typing(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath((room_id, user_id)): MatrixPath<(OwnedRoomId, OwnedUserId)>,
    MatrixJson(_req): MatrixJson<TypingRequest>,
) -> Result<Json<Value>, ApiError> {
    if user_id != auth.user_id {
        return Err(ApiError::Forbidden(
            "Cannot set another user's typing state".to_owned(),
        ));
    }
    rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
    state.homeserver.emit_activity(ActivityEvent {
        user: auth.user_id,
        device: auth.device_id,
    });
    Ok(Json(json!({})))
}
