//! `GET /pushrules/`.

use axum::Json;
use serde_json::{json, Value};

use crate::api::extract::AuthUser;

/// GET /_matrix/client/v3/pushrules/
///
/// presenced sends no push notifications, so the rule set is empty (a
/// valid rule set: every kind present, no rules).
pub(crate) async fn get_push_rules(_auth: AuthUser) -> Json<Value> {
    Json(json!({
        "global": { "override": [], "content": [], "room": [], "sender": [], "underride": [] }
    }))
}
