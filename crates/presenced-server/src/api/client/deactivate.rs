//! `POST /account/deactivate`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, OptionalJson};
use crate::api::state::AppState;
use crate::homeserver::uia::{self, AuthData};

#[derive(Default, Deserialize)]
pub(crate) struct DeactivateRequest {
    auth: Option<AuthData>,
    // `erase` and `id_server` are accepted and ignored: presenced keeps no
    // messages to erase and binds no third-party IDs.
}

/// POST /_matrix/client/v3/account/deactivate
///
/// After the password stage: the account is marked deactivated and every
/// device and token goes (one store transaction), then the user goes
/// offline with their status message cleared (W23). Memberships stay, so
/// co-members see the final offline state.
pub(crate) async fn post_deactivate(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    OptionalJson(req): OptionalJson<DeactivateRequest>,
) -> Result<Json<Value>, ApiError> {
    uia::require_password(&state.homeserver, &auth.user_id, req.auth).await?;
    let user = auth.user_id.clone();
    state.db(move |s| s.deactivate_user(&user)).await?;
    state.homeserver.tokens_died(&auth.user_id, None).await;
    state.presence.deactivate(&auth.user_id);
    tracing::info!(user_id = %auth.user_id, "account deactivated");
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
