//! Health checks for load balancers and container orchestrators.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::api::state::AppState;

/// GET /health and GET /_presenced/health
///
/// Healthy when, on a cluster node, the bus has answered within the owner
/// lease (a node cut off longer has lost its partitions: a load balancer
/// should send its clients elsewhere), and the database answers within
/// [`DATABASE_PATIENCE`] (a database behind a dead link would otherwise
/// hold the check, and the load balancer's probe, until TCP gives up).
pub(crate) async fn get_health(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(link) = state.presence.cluster() {
        if link.cut_off() {
            return Err(ApiError::Unavailable(format!(
                "cut off from the cluster's NATS servers for {} s (lease {} s)",
                link.silent_for().as_secs(),
                link.lease().as_secs()
            )));
        }
    }
    tokio::time::timeout(DATABASE_PATIENCE, state.db(|s| s.max_stream()))
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "the database did not answer within {} s",
                DATABASE_PATIENCE.as_secs()
            ))
        })??;
    if let Some(link) = state.presence.cluster() {
        // For operators and tests: which node this is, what it owns, and
        // how far it has applied the presence log (per partition) and the
        // room event stream; comparing nodes shows replication lag.
        return Ok(Json(json!({
            "status": "ok",
            "cluster": {
                "node": link.name(),
                "owned_partitions": link.owned_partitions(),
                "applied": link.applied().0,
                "room_position": state.homeserver.room_stream.position(),
            },
        })));
    }
    Ok(Json(json!({ "status": "ok" })))
}

/// How long the health check waits for the database.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
