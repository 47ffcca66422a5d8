//! `GET /_matrix/federation/v1/version` — what software this server runs.

use axum::Json;
use serde_json::{json, Value};

/// GET /_matrix/federation/v1/version
pub(crate) async fn get_version() -> Json<Value> {
    Json(json!({
        "server": { "name": "presenced", "version": env!("CARGO_PKG_VERSION") }
    }))
}
