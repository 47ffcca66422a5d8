//! `POST /createRoom`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson};
use crate::api::state::AppState;
use crate::homeserver::rooms::{self, NewRoom, Preset};

#[derive(Deserialize, Default)]
pub(crate) struct CreateRoomRequest {
    /// `null` is read as "no invites" (some clients send it).
    invite: Option<Vec<OwnedUserId>>,
    preset: Option<Preset>,
    visibility: Option<String>,
    is_direct: Option<bool>,
    name: Option<String>,
    topic: Option<String>,
    room_alias_name: Option<String>,
}

/// POST /_matrix/client/v3/createRoom
///
/// Supports `invite`, `preset`, `visibility`, `is_direct`, `name` and
/// `topic`. Other fields the spec defines (`initial_state`,
/// `creation_content`, ...) are ignored; aliases are refused because
/// presenced has no alias directory.
pub(crate) async fn post_create_room(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixJson(req): MatrixJson<CreateRoomRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.room_alias_name.is_some() {
        return Err(ApiError::BadRequest(
            "Room aliases are not supported by presenced".to_owned(),
        ));
    }
    // The spec's default: public rooms get public_chat, others private_chat.
    let preset = req.preset.unwrap_or(match req.visibility.as_deref() {
        Some("public") => Preset::PublicChat,
        _ => Preset::PrivateChat,
    });
    let mut invite = req.invite.unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    invite.retain(|u| *u != auth.user_id && seen.insert(u.clone()));
    let room_id = rooms::create_room(
        &state.homeserver,
        NewRoom {
            creator: auth.user_id.clone(),
            preset,
            is_direct: req.is_direct.unwrap_or(false),
            name: req.name,
            topic: req.topic,
            invite,
        },
    )
    .await?;
    tracing::info!(room_id = %room_id, creator = %auth.user_id, "room created");
    Ok(Json(json!({ "room_id": room_id })))
}
