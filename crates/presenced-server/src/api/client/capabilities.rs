//! `GET /capabilities`.

use axum::Json;
use serde_json::{json, Value};

use crate::api::extract::AuthUser;
use crate::homeserver::rooms::ROOM_VERSION;

/// GET /_matrix/client/v3/capabilities
///
/// Only what presenced really offers: one room version, and no password,
/// profile or third-party-ID changes.
pub(crate) async fn get_capabilities(_auth: AuthUser) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.room_versions": { "default": ROOM_VERSION, "available": { ROOM_VERSION: "stable" } },
            "m.change_password": { "enabled": false },
            "m.set_displayname": { "enabled": false },
            "m.set_avatar_url": { "enabled": false },
            "m.3pid_changes": { "enabled": false },
        }
    }))
}
