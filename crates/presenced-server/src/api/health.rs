//! Health checks for load balancers and container orchestrators.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::api::state::AppState;

/// GET /health and GET /_presenced/health
///
/// Healthy when the database answers and, on a cluster node, the bus has
/// answered within the owner lease (a node cut off longer has lost its
/// partitions: a load balancer should send its clients elsewhere).
pub(crate) async fn get_health(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    state.db(|s| s.max_stream()).await?;
    if let Some(link) = state.presence.cluster() {
        if link.cut_off() {
            return Err(ApiError::Unavailable(format!(
                "cut off from the cluster's NATS servers for {} s (lease {} s)",
                link.silent_for().as_secs(),
                link.lease().as_secs()
            )));
        }
        // For operators and tests: which node this is and what it owns.
        return Ok(Json(json!({
            "status": "ok",
            "cluster": {"node": link.name(), "owned_partitions": link.owned_partitions()},
        })));
    }
    Ok(Json(json!({ "status": "ok" })))
}
