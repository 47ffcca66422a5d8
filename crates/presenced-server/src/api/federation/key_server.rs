//! `GET /_matrix/key/v2/server` — our public signing key, self-signed.
//!
//! Peers fetch this to check our X-Matrix signatures. The answer is valid
//! for a day: long enough that peers rarely ask, short enough that a
//! rotated key spreads within a day. presenced has one key and keeps no
//! old ones, so `old_verify_keys` is empty.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::util::clock;

/// How long peers may cache our key response.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// GET /_matrix/key/v2/server
pub(crate) async fn get_server_keys(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    let key = &state.signing_key;
    let mut body = json!({
        "server_name": state.server_name,
        "valid_until_ts": (clock::now() + VALIDITY).as_millis(),
        "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
    });
    key.sign_json(&state.server_name, &mut body)
        .map_err(ApiError::internal)?;
    Ok(Json(body))
}

/// GET /_matrix/key/v2/server/{keyId} — deprecated in the spec; the key ID
/// is ignored and all keys are returned, as the spec allows.
pub(crate) async fn get_server_keys_by_id(
    state: State<Arc<AppState>>,
    Path(_key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    get_server_keys(state).await
}
