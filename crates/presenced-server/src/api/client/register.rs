//! `POST /register`, `GET /register/available`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ruma_common::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{ClientAddr, MatrixJson, MatrixQuery};
use crate::api::state::AppState;
use crate::homeserver::accounts;
use crate::util::ids;

#[derive(Deserialize)]
pub(crate) struct RegisterRequest {
    auth: Option<AuthData>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

#[derive(Deserialize)]
struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// POST /_matrix/client/v3/register
///
/// Open registration with the single-stage `m.login.dummy` flow, only when
/// `enable_registration` is on (403 `M_FORBIDDEN` otherwise). Without an
/// `auth` dict the answer is the user-interactive-auth 401 listing the
/// flow. UIA sessions are not tracked: the dummy stage proves nothing, so
/// there is nothing to carry between the two requests.
///
/// `rc_registration`, as in Synapse: a client address whose bucket is full
/// gets 429 `M_LIMIT_EXCEEDED` before anything else is looked at, and only
/// accounts created fill it.
pub(crate) async fn post_register(
    State(state): State<Arc<AppState>>,
    ClientAddr(addr): ClientAddr,
    MatrixQuery(query): MatrixQuery<HashMap<String, String>>,
    MatrixJson(req): MatrixJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    if query.get("kind").is_some_and(|k| k == "guest") {
        return Err(ApiError::Forbidden("Guest access is disabled".to_owned()));
    }
    if !state.config.enable_registration {
        return Err(ApiError::Forbidden(
            "Registration has been disabled".to_owned(),
        ));
    }
    // Held while this request runs, kept only if an account is created:
    // the UIA round trip and refused names do not count, and concurrent
    // requests cannot overshoot the bucket.
    let reservation = addr
        .map(|addr| {
            state
                .homeserver
                .auth_limiters
                .registration
                .reserve(addr, Instant::now())
        })
        .transpose()
        .map_err(|retry_after_ms| ApiError::LimitExceeded { retry_after_ms })?;
    // As in Synapse, a bad or taken name is reported before any auth stage.
    let localpart = req
        .username
        .clone()
        .unwrap_or_else(|| ids::new_secret()[..12].to_lowercase());
    let user_id = accounts::new_user_id(&localpart, &state.server_name)?;
    let lookup = user_id.clone();
    if state.db(move |s| s.user(&lookup)).await?.is_some() {
        return Err(ApiError::UserInUse);
    }
    if req.auth.as_ref().and_then(|a| a.kind.as_deref()) != Some("m.login.dummy") {
        let body = json!({
            "flows": [{ "stages": ["m.login.dummy"] }],
            "params": {},
            "session": ids::new_secret(),
        });
        return Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    let password = req
        .password
        .ok_or_else(|| ApiError::BadJson("Missing params: password".to_owned()))?;

    let cost = state.config.password_hashing.clone();
    let uid = user_id.clone();
    state
        .db(move |s| accounts::create_account(s, &uid, Some(&password), false, &cost))
        .await?;
    tracing::info!(user_id = %user_id, "registered");
    if let Some(reservation) = reservation {
        reservation.keep();
    }
    if req.inhibit_login {
        return Ok(
            Json(json!({ "user_id": user_id, "home_server": state.server_name })).into_response(),
        );
    }
    let reused_device = req.device_id.is_some();
    let (uid, device, name) = (
        user_id.clone(),
        req.device_id,
        req.initial_device_display_name,
    );
    let session = state
        .db(move |s| accounts::start_session(s, &uid, device, name.as_deref()))
        .await?;
    // A login on an existing device replaced that device's token (a
    // device ID the server made up is new: it had none).
    if reused_device {
        (state.homeserver)
            .tokens_died(&user_id, Some(&session.device_id))
            .await;
    }
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name,
    }))
    .into_response())
}

/// GET /_matrix/client/v3/register/available
pub(crate) async fn get_register_available(
    State(state): State<Arc<AppState>>,
    MatrixQuery(query): MatrixQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let name = query
        .get("username")
        .ok_or_else(|| ApiError::InvalidParam("Missing username".to_owned()))?;
    let user_id = accounts::new_user_id(name, &state.server_name)?;
    if state.db(move |s| s.user(&user_id)).await?.is_some() {
        return Err(ApiError::UserInUse);
    }
    Ok(Json(json!({ "available": true })))
}
