//! Health checks for load balancers and container orchestrators.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::api::state::AppState;

/// GET /health and GET /_presenced/health
///
/// Healthy when the database answers.
pub(crate) async fn get_health(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    state.db(|s| s.max_stream()).await?;
    Ok(Json(json!({ "status": "ok" })))
}
