//! Membership changes: invite, join, leave.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedRoomOrAliasId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson, MatrixPath, OptionalJson};
use crate::api::state::AppState;
use crate::homeserver::rooms;
use crate::store::membership::Membership;

#[derive(Deserialize)]
pub(crate) struct InviteRequest {
    user_id: OwnedUserId,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ReasonBody {
    reason: Option<String>,
}

fn reason_content(reason: Option<String>) -> Map<String, Value> {
    let mut content = Map::new();
    if let Some(r) = reason {
        content.insert("reason".to_owned(), Value::String(r));
    }
    content
}

/// POST /_matrix/client/v3/rooms/{roomId}/invite
pub(crate) async fn post_invite(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(req): MatrixJson<InviteRequest>,
) -> Result<Json<Value>, ApiError> {
    rooms::set_membership(
        &state.homeserver,
        &room_id,
        &auth.user_id,
        &req.user_id,
        Membership::Invite,
        reason_content(req.reason),
    )
    .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/join
pub(crate) async fn post_join(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>, ApiError> {
    join(&state, &auth, room_id, body.reason).await
}

/// POST /_matrix/client/v3/join/{roomIdOrAlias}
///
/// Room IDs only: presenced has no alias directory.
pub(crate) async fn post_join_by_id_or_alias(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(target): MatrixPath<OwnedRoomOrAliasId>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>, ApiError> {
    let room_id = OwnedRoomId::try_from(target)
        .map_err(|alias| ApiError::NotFound(format!("Room alias {alias} not found")))?;
    join(&state, &auth, room_id, body.reason).await
}

async fn join(
    state: &Arc<AppState>,
    auth: &AuthUser,
    room_id: OwnedRoomId,
    reason: Option<String>,
) -> Result<Json<Value>, ApiError> {
    rooms::set_membership(
        &state.homeserver,
        &room_id,
        &auth.user_id,
        &auth.user_id,
        Membership::Join,
        reason_content(reason),
    )
    .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/leave
///
/// Leaving also rejects a pending invite.
pub(crate) async fn post_leave(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>, ApiError> {
    rooms::set_membership(
        &state.homeserver,
        &room_id,
        &auth.user_id,
        &auth.user_id,
        Membership::Leave,
        reason_content(body.reason),
    )
    .await?;
    Ok(Json(json!({})))
}
