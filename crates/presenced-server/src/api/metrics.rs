//! `GET /metrics`, when `enable_metrics: true`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

mod registry;

pub use self::registry::*;

use super::error::ApiError;
use crate::api::state::AppState;

/// GET /metrics: Prometheus text format. Unauthenticated, like Synapse's
/// metrics listener; off by default (404 `M_UNRECOGNIZED`, as if the
/// endpoint did not exist).
pub(crate) async fn get_metrics(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.enable_metrics {
        return Err(ApiError::Unrecognized {
            method_not_allowed: false,
        });
    }
    let engine = state.presence.stats();
    let modules = state.presence.router().stats();
    let pending = state.db(|s| s.outbox_len()).await?;
    let mut text = state
        .metrics
        .render(&engine, &modules, state.outbound.stats(), pending);
    text.push_str(&render_held_state(&state.held_state()));
    text.push_str(&state.connections.metrics_text());
    if let Some(python) = state.presence.python_stats() {
        text.push_str(&python.metrics_text());
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
}
