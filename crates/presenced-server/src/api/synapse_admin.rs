//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`).
//!
//! The protocol Synapse's `register_new_matrix_user` tool speaks: fetch a
//! nonce, then post the account with an HMAC-SHA1, keyed by the shared
//! secret, over `nonce NUL username NUL password NUL (admin|notadmin)`
//! (and `NUL user_type` when a user type is given). Nonces are single-use
//! and expire after a minute.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;

use super::error::ApiError;
use super::extract::MatrixJson;
use crate::api::state::AppState;
use crate::homeserver::accounts;
use crate::util::ids;

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/_synapse/admin/v1/register",
        get(get_nonce).post(post_register),
    )
}

/// GET /_synapse/admin/v1/register
pub(crate) async fn get_nonce(State(state): State<Arc<AppState>>) -> Json<Value> {
    let nonce = ids::new_secret();
    state.nonces.insert(nonce.clone(), Instant::now());
    Json(json!({ "nonce": nonce }))
}

#[derive(Deserialize)]
pub(crate) struct SharedSecretRegistration {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    user_type: Option<String>,
    mac: String,
    /// Accepted for compatibility; presenced keeps no profiles yet.
    #[serde(default)]
    #[allow(dead_code)]
    displayname: Option<String>,
}

/// The MAC Synapse's tool sends, as lowercase hex.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac_fields(&mut mac, nonce, username, password, admin, user_type);
    hex::encode(mac.finalize().into_bytes())
}

fn mac_fields(
    mac: &mut Hmac<Sha1>,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) {
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(username.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin {
        b"admin" as &[u8]
    } else {
        b"notadmin"
    });
    if let Some(t) = user_type {
        mac.update(b"\x00");
        mac.update(t.as_bytes());
    }
}

/// POST /_synapse/admin/v1/register
pub(crate) async fn post_register(
    State(state): State<Arc<AppState>>,
    MatrixJson(req): MatrixJson<SharedSecretRegistration>,
) -> Result<Json<Value>, ApiError> {
    let secret = state.registration_shared_secret.as_ref().ok_or_else(|| {
        ApiError::BadRequest("Shared secret registration is not enabled".to_owned())
    })?;
    if !state.nonces.take(&req.nonce, Instant::now()) {
        return Err(ApiError::BadRequest("unrecognised nonce".to_owned()));
    }
    if req.username.contains('\0') || req.password.contains('\0') {
        return Err(ApiError::BadJson("Invalid username or password".to_owned()));
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac_fields(
        &mut mac,
        &req.nonce,
        &req.username,
        &req.password,
        req.admin,
        req.user_type.as_deref(),
    );
    let given = hex::decode(req.mac.trim()).unwrap_or_default();
    // verify_slice compares in constant time.
    if mac.verify_slice(&given).is_err() {
        return Err(ApiError::Forbidden("HMAC incorrect".to_owned()));
    }

    let user_id = accounts::new_user_id(&req.username, &state.server_name)?;
    let (uid, password, admin, cost) = (
        user_id.clone(),
        req.password,
        req.admin,
        state.config.password_hashing.clone(),
    );
    let session = state
        .db(move |s| {
            accounts::create_account(s, &uid, Some(&password), admin, &cost)?;
            Ok::<_, ApiError>(accounts::start_session(s, &uid, None, None)?)
        })
        .await?;
    tracing::info!(user_id = %user_id, admin, "registered with the shared secret");
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name,
    })))
}
