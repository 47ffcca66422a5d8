//! `GET /account/whoami`.

use axum::Json;
use serde_json::{json, Value};

use crate::api::extract::AuthUser;

/// GET /_matrix/client/v3/account/whoami
pub(crate) async fn get_whoami(auth: AuthUser) -> Json<Value> {
    Json(json!({
        "user_id": auth.user_id,
        "device_id": auth.device_id,
        "is_guest": false,
    }))
}
