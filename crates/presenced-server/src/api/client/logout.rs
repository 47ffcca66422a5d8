//! `POST /logout`, `POST /logout/all`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::AuthUser;
use crate::api::state::AppState;

/// POST /_matrix/client/v3/logout
///
/// Ends this device's session: the token and the device are deleted.
pub(crate) async fn post_logout(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let (user, device) = (auth.user_id.clone(), auth.device_id.clone());
    state.db(move |s| s.delete_device(&user, &device)).await?;
    (state.homeserver)
        .tokens_died(&auth.user_id, Some(&auth.device_id))
        .await;
    tracing::info!(user_id = %auth.user_id, device_id = %auth.device_id, "logged out");
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/logout/all
///
/// Ends every session of the user.
pub(crate) async fn post_logout_all(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let user = auth.user_id.clone();
    let devices = state.db(move |s| s.delete_all_devices(&user)).await?;
    state.homeserver.tokens_died(&auth.user_id, None).await;
    tracing::info!(user_id = %auth.user_id, devices = devices.len(), "logged out everywhere");
    Ok(Json(json!({})))
}
