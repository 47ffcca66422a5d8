//! Health checks for load balancers and container orchestrators.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::api::state::AppState;

/// GET /health and GET /_presenced/health
///
/// Healthy when the presence back end can take traffic (a cluster node cut
/// off from the bus past the owner lease has lost its partitions: a load
/// balancer should send its clients elsewhere), and the database answers
/// within [`DATABASE_PATIENCE`] (a database behind a dead link would
/// otherwise hold the check, and the load balancer's probe, until TCP
/// gives up). What the back end reports about itself (a cluster node: its
/// name, partitions, applied log positions) comes with the room stream
/// position, so comparing nodes shows replication lag.
pub(crate) async fn get_health(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    let backend = state.presence.backend_health();
    if let Some(why) = backend.unavailable {
        return Err(ApiError::Unavailable(why));
    }
    tokio::time::timeout(DATABASE_PATIENCE, state.db(|s| s.max_stream()))
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "the database did not answer within {} s",
                DATABASE_PATIENCE.as_secs()
            ))
        })??;
    if let Some(Value::Object(mut report)) = backend.report {
        report.insert(
            "room_position".to_owned(),
            json!(state.homeserver.room_stream.position()),
        );
        return Ok(Json(json!({ "status": "ok", "cluster": report })));
    }
    Ok(Json(json!({ "status": "ok" })))
}

/// How long the health check waits for the database.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
