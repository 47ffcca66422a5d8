//! `POST /keys/upload`, `POST /keys/query`: the end-to-end-encryption
//! endpoints clients call right after login.
//!
//! presenced does not store keys. Upload answers with the one-time-key
//! counts of the request itself, so a client sees its upload accepted and
//! does not loop; query answers that nobody has devices with keys.

use std::collections::BTreeMap;

use axum::Json;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, OptionalJson};

/// POST /_matrix/client/v3/keys/upload
pub(crate) async fn post_keys_upload(
    _auth: AuthUser,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(keys) = body.get("one_time_keys").and_then(Value::as_object) {
        for key_id in keys.keys() {
            // Key IDs are "algorithm:id".
            let algorithm = key_id.split(':').next().unwrap_or(key_id);
            *counts.entry(algorithm.to_owned()).or_default() += 1;
        }
    }
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

/// POST /_matrix/client/v3/keys/query
pub(crate) async fn post_keys_query(
    _auth: AuthUser,
    OptionalJson(body): OptionalJson<Map<String, Value>>,
) -> Json<Value> {
    let users: Map<String, Value> = body
        .get("device_keys")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(|u| (u.clone(), json!({}))).collect())
        .unwrap_or_default();
    Json(json!({ "device_keys": users, "failures": {} }))
}
