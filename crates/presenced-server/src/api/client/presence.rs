//! `PUT` and `GET /_matrix/client/v3/presence/{userId}/status`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use presenced_engine::Presence;
use ruma_common::OwnedUserId;
use serde::Deserialize;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson, MatrixPath};
use crate::api::state::AppState;
use crate::presence::{wire, PresenceWriteError};
use crate::util::clock::now;

/// Body of a presence set. Unknown keys are refused (as Synapse does);
/// `status_msg: null` clears the message, like leaving it out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPresence {
    presence: String,
    #[serde(default)]
    status_msg: Option<String>,
}

/// PUT /_matrix/client/v3/presence/{userId}/status
pub(crate) async fn put_status(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<SetPresence>,
) -> Result<Json<Value>, ApiError> {
    if user_id != auth.user_id {
        return Err(ApiError::Forbidden(
            "Can only set your own presence state".to_owned(),
        ));
    }
    state
        .presence_put_limiter
        .take(&auth.user_id, Instant::now())
        .map_err(|retry_after_ms| ApiError::LimitExceeded { retry_after_ms })?;
    let max = state.config.request_limits.max_status_msg_length;
    if body.status_msg.as_ref().is_some_and(|m| m.len() > max) {
        // As Synapse answers for an over-long display name.
        return Err(ApiError::BadJson(format!(
            "status_msg is too long (max {max} bytes)"
        )));
    }
    // Validated in every presence mode (W21).
    let Some(presence) = Presence::parse(&body.presence) else {
        return Err(ApiError::InvalidParam(format!(
            "Invalid presence state: {}",
            body.presence
        )));
    };
    state
        .presence
        .set_presence(
            &auth.user_id,
            Some(&auth.device_id),
            presence,
            body.status_msg.as_deref(),
        )
        .await
        .map_err(|e| match e {
            PresenceWriteError::Unavailable(why) => ApiError::Unavailable(why),
            PresenceWriteError::Store(cause) => ApiError::internal(cause),
        })?;
    state.metrics.presence_put();
    Ok(Json(serde_json::json!({})))
}

/// GET /_matrix/client/v3/presence/{userId}/status
pub(crate) async fn get_status(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> Result<Json<Value>, ApiError> {
    if state.presence_disabled() {
        return Ok(Json(serde_json::json!({"presence": "offline"})));
    }
    if user_id.server_name() == state.server_name {
        // presenced's own accounts, or Synapse's in companion mode.
        let exists = (state.homeserver)
            .has_local_account(&user_id, &auth.user_id)
            .await?;
        if !exists {
            return Err(ApiError::NotFound("No such user".to_owned()));
        }
    }
    match state.presence.get_presence(&auth.user_id, &user_id).await {
        Some(presence) => Ok(Json(Value::Object(wire::content(&presence, now())))),
        None => Err(ApiError::Forbidden(
            "You are not allowed to see their presence.".to_owned(),
        )),
    }
}
