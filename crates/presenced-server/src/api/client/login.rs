//! `GET /login`, `POST /login` (password login).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::extract::{ClientAddr, MatrixJson};
use crate::api::state::AppState;
use crate::homeserver::accounts;

/// GET /_matrix/client/v3/login
pub(crate) async fn get_login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated top-level user name, still sent by older clients.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// POST /_matrix/client/v3/login
///
/// `m.login.password` with an `m.id.user` identifier or the legacy `user`
/// field. Wrong user and wrong password give the same 403, so the answer
/// does not reveal which accounts exist.
///
/// Rate limits as Synapse applies them (429 `M_LIMIT_EXCEEDED`): every
/// attempt counts against `rc_login.address` (the client's address); an
/// account whose `rc_login.failed_attempts` bucket is full is refused
/// before its password is even hashed, and each failure fills it (the
/// right password does not); a successful login counts against
/// `rc_login.account`.
pub(crate) async fn post_login(
    State(state): State<Arc<AppState>>,
    ClientAddr(addr): ClientAddr,
    MatrixJson(req): MatrixJson<LoginRequest>,
) -> Result<Json<Value>, ApiError> {
    let limiters = &state.homeserver.auth_limiters;
    let limited = |retry_after_ms| ApiError::LimitExceeded { retry_after_ms };
    if let Some(addr) = addr {
        limiters
            .login_address
            .take(&addr, Instant::now())
            .map_err(limited)?;
    }
    if req.kind != "m.login.password" {
        return Err(ApiError::BadRequest(format!(
            "Unknown login type {}",
            req.kind
        )));
    }
    let user = match (&req.identifier, &req.user) {
        (Some(id), _) if id.kind == "m.id.user" => id.user.clone(),
        (Some(id), _) => {
            return Err(ApiError::BadRequest(format!(
                "Unknown login identifier type {}",
                id.kind
            )))
        }
        (None, legacy) => legacy.clone(),
    }
    .ok_or_else(|| ApiError::BadJson("missing user in identifier".to_owned()))?;
    let password = req
        .password
        .ok_or_else(|| ApiError::BadJson("missing password".to_owned()))?;
    let invalid = || ApiError::Forbidden("Invalid username or password".to_owned());
    let user_id = accounts::login_user_id(&user, &state.server_name).ok_or_else(invalid)?;
    // Counted as a failure before the hash and refunded on success, so
    // concurrent guesses cannot all slip past a nearly full bucket.
    limiters
        .login_failed
        .take(&user_id, Instant::now())
        .map_err(limited)?;

    let lookup = user_id.clone();
    let record = state.db(move |s| s.user(&lookup)).await?;
    let verified = match record.as_ref().and_then(|r| r.password_hash.clone()) {
        // argon2 is slow on purpose: keep it off the async workers.
        Some(hash) => {
            tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash))
                .await
                .map_err(ApiError::internal)?
        }
        None => false,
    };
    // Unknown accounts count too, so probing names costs the same.
    let Some(record) = record.filter(|_| verified) else {
        return Err(invalid());
    };
    limiters.login_failed.refund(&user_id);
    if record.deactivated {
        return Err(ApiError::UserDeactivated);
    }
    limiters
        .login_account
        .take(&user_id, Instant::now())
        .map_err(limited)?;
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
    tracing::info!(user_id = %user_id, device_id = %session.device_id, "logged in");
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name,
    })))
}
