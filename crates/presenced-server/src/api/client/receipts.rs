//! Read receipts and read markers.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId};
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixPath, OptionalJson};
use crate::api::state::AppState;
use crate::homeserver::activity::ActivityEvent;
use crate::homeserver::rooms;

/// Receipt types the spec defines for this endpoint.
const RECEIPT_TYPES: &[&str] = &["m.read", "m.read.private", "m.fully_read"];

/// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
///
/// Counts as activity for presence. Receipts are validated but not stored
/// or relayed yet (that needs the `/sync` ephemeral section).
pub(crate) async fn post_receipt(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath((room_id, receipt_type, _event_id)): MatrixPath<(OwnedRoomId, String, OwnedEventId)>,
    OptionalJson(_body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    if !RECEIPT_TYPES.contains(&receipt_type.as_str()) {
        return Err(ApiError::InvalidParam(format!(
            "Unknown receipt type {receipt_type}"
        )));
    }
    rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
    state.homeserver.emit_activity(ActivityEvent {
        user: auth.user_id,
        device: auth.device_id,
    });
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/read_markers
///
/// Counts as activity for presence; the markers are not stored yet.
pub(crate) async fn post_read_markers(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    for (key, value) in &body {
        if RECEIPT_TYPES.contains(&key.as_str())
            && value
                .as_str()
                .is_none_or(|v| OwnedEventId::try_from(v).is_err())
        {
            return Err(ApiError::BadJson(format!("{key} must be an event ID")));
        }
    }
    rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
    state.homeserver.emit_activity(ActivityEvent {
        user: auth.user_id,
        device: auth.device_id,
    });
    Ok(Json(json!({})))
}
