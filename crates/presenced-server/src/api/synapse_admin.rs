//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`).
//!
//! The protocol Synapse's `register_new_matrix_user` tool speaks: fetch a
//! nonce, then post the account with an HMAC-SHA1, keyed by the shared
//! secret, over `nonce NUL username NUL password NUL (admin|notadmin)`
//! (and `NUL user_type` when a user type is given). Nonces are single-use
//! and expire after a minute.
//!
//! On a cluster node the nonce must work on whichever node the POST
//! reaches, so it carries its own proof instead of living in one node's
//! memory: `<issued ms>.<random>.<HMAC-SHA256 of both, keyed by the shared
//! secret>`, accepted for a minute by any node. A replay within that
//! minute can only repeat the same registration (the MAC covers every
//! field), which the taken user ID then refuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use presenced_engine::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;

use super::error::ApiError;
use super::extract::MatrixJson;
use crate::api::state::AppState;
use crate::homeserver::accounts;
use crate::util::{clock, ids};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/_synapse/admin/v1/register",
        get(get_nonce).post(post_register),
    )
}

/// GET /_synapse/admin/v1/register
pub(crate) async fn get_nonce(State(state): State<Arc<AppState>>) -> Json<Value> {
    if let (true, Some(secret)) = (
        state.nonces.signed(),
        state.registration_shared_secret.as_ref(),
    ) {
        let nonce = signed_nonce(secret.expose(), clock::now(), &ids::new_secret());
        return Json(json!({ "nonce": nonce }));
    }
    let nonce = ids::new_secret();
    state.nonces.insert(nonce.clone(), Instant::now());
    Json(json!({ "nonce": nonce }))
}

/// How long a cluster node's signed nonce is accepted.
const SIGNED_NONCE_TTL: Duration = Duration::from_secs(60);

/// How far in our future a nonce's issue time may be: the node that
/// signed it may have a clock a little ahead of ours.
const SIGNED_NONCE_CLOCK_SKEW: Duration = Duration::from_secs(5);

fn nonce_proof(secret: &str, body: &str) -> Hmac<sha2::Sha256> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"presenced registration nonce\x00");
    mac.update(body.as_bytes());
    mac
}

/// A nonce any node of the cluster accepts for a minute.
fn signed_nonce(secret: &str, now: Timestamp, random: &str) -> String {
    let body = format!("{}.{random}", now.as_millis());
    let proof = hex::encode(nonce_proof(secret, &body).finalize().into_bytes());
    format!("{body}.{proof}")
}

/// Whether `nonce` was signed with `secret` less than a minute ago.
fn signed_nonce_valid(secret: &str, nonce: &str, now: Timestamp) -> bool {
    let Some((body, proof)) = nonce.rsplit_once('.') else {
        return false;
    };
    let Some(issued) = body
        .split_once('.')
        .and_then(|(t, _)| t.parse::<u64>().ok())
        .map(Timestamp)
    else {
        return false;
    };
    let fresh =
        issued <= now + SIGNED_NONCE_CLOCK_SKEW && now.saturating_since(issued) <= SIGNED_NONCE_TTL;
    let given = hex::decode(proof).unwrap_or_default();
    // verify_slice compares in constant time.
    fresh && nonce_proof(secret, body).verify_slice(&given).is_ok()
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
    let known = if state.nonces.signed() {
        signed_nonce_valid(secret.expose(), &req.nonce, clock::now())
    } else {
        state.nonces.take(&req.nonce, Instant::now())
    };
    if !known {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_nonce_holds_for_a_minute_and_only_with_its_secret() {
        let nonce = signed_nonce("s3cret", Timestamp(1_000_000), "abc");
        assert!(signed_nonce_valid("s3cret", &nonce, Timestamp(1_000_000)));
        assert!(signed_nonce_valid("s3cret", &nonce, Timestamp(1_060_000)));
        assert!(
            !signed_nonce_valid("s3cret", &nonce, Timestamp(1_060_001)),
            "expired"
        );
        assert!(
            !signed_nonce_valid("other", &nonce, Timestamp(1_000_000)),
            "another secret"
        );
        let forged = nonce.replacen("1000000", "1000001", 1);
        assert!(
            !signed_nonce_valid("s3cret", &forged, Timestamp(1_000_000)),
            "changed time"
        );
        assert!(!signed_nonce_valid(
            "s3cret",
            "1000000.abc",
            Timestamp(1_000_000)
        ));
        assert!(!signed_nonce_valid("s3cret", "", Timestamp(1_000_000)));
    }
}
