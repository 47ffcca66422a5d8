//! The HTTP API: routing, extractors, handlers, and the mapping of every
//! concern's errors to Matrix errors ([`error::ApiError`]).
//!
//! Architecture invariant: a handler parses, makes one call into `sync`,
//! `homeserver`, `presence` or `federation`, and maps the result; no rule
//! lives here, and no handler holds a lock across an `.await`. Nothing
//! below this layer imports it.
//!
//! - `cors`: the CORS headers on every answer and the preflight answer.
//! - `error`: [`error::ApiError`], the only mapping to Matrix errors.
//! - `extract`: body, path and auth extractors that fail with `ApiError`.
//! - `nul`: finding U+0000 in client text, which `extract` refuses.
//! - `client`: the client-server API, one file per endpoint group.
//! - `federation`: the server-server API (key server, transactions).
//! - `synapse_admin`: Synapse's shared-secret registration.
//! - `admin`: presenced's admin API (`/_presenced/admin/v1`).
//! - `metrics`: `/metrics` (Prometheus).
//! - `health`: `/health`.
//! - `request_span`: the per-request log span, secrets redacted.
//! - `forward`: companion mode's fallback, everything else to Synapse.
//!
//! Two routers, one chosen per listener at start-up: standalone mode's
//! (every endpoint presenced serves), and companion mode's (presence,
//! health and metrics answered here, everything else forwarded to
//! Synapse).

pub mod admin;
mod appservice;
pub mod client;
mod cors;
pub mod error;
pub mod extract;
pub mod federation;
pub mod filter_validation;
mod forward;
pub mod health;
pub mod metrics;
mod nul;
pub mod request_span;
pub mod state;
pub mod synapse_admin;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use self::error::ApiError;
use crate::api::state::AppState;

/// The whole HTTP application (every resource).
pub fn router(state: Arc<AppState>) -> Router {
    router_for(state, &["client", "federation"])
}

/// The HTTP application for a listener serving the resources `names`
/// (Synapse's listener resources): `client` is the client-server API with
/// the admin APIs and `/metrics`; `federation` is the server-server API
/// with the key server; `keys` is the key server alone. `/health` is on
/// every listener; unknown names add nothing. Every listener answers CORS
/// preflights and puts the CORS headers on its answers (`cors`), as Synapse
/// does on all of its listeners.
pub fn router_for(state: Arc<AppState>, names: &[&str]) -> Router {
    if state.companion.is_some() {
        return companion_router(state, names);
    }
    let mut router = Router::new();
    // `request_limits.max_body_size`; the federation routes set their own.
    let max_body = state.config.request_limits.max_body_size;
    if names.contains(&"client") {
        router = router
            .merge(client::routes())
            .merge(synapse_admin::routes())
            .merge(admin::routes())
            .route("/metrics", get(metrics::get_metrics));
    }
    if names.contains(&"metrics") && !names.contains(&"client") {
        // Synapse's `metrics` resource (or `type: metrics` listener).
        router = router.route("/metrics", get(metrics::get_metrics));
    }
    if names.contains(&"federation") {
        router = router.merge(federation::routes());
    } else if names.contains(&"keys") {
        router = router.merge(federation::key_routes());
    }
    router
        .route("/health", get(health::get_health))
        .route("/_presenced/health", get(health::get_health))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        // Around every route and both fallbacks, so preflights never reach
        // routing (a known path would answer 405) and errors carry the
        // headers too.
        .layer(cors::CorsLayer)
        // axum's own limit (not tower-http's) so an oversized body is
        // refused by the extractor, through ApiError, as M_TOO_LARGE.
        .layer(DefaultBodyLimit::max(max_body))
        // A 5xx is a warning here: a 500's cause is logged once, at error,
        // by ApiError; a 503 is a cluster node answering "retry" during a
        // takeover, which is expected.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span::request_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// Companion mode's application for a listener serving `names`: on a
/// `client` listener the presence endpoints and `/metrics`; `/health`
/// everywhere; every other request, whatever the listener, forwarded to
/// Synapse (`forward`), including CORS preflights, which Synapse answers
/// for every path. `/sync` and federation `/send` are forwarded for now.
fn companion_router(state: Arc<AppState>, names: &[&str]) -> Router {
    let max_body = state.config.request_limits.max_body_size;
    let mut router = Router::new();
    if names.contains(&"client") {
        router = router
            .merge(client::presence_routes())
            .route("/metrics", get(metrics::get_metrics));
    } else if names.contains(&"metrics") {
        router = router.route("/metrics", get(metrics::get_metrics));
    }
    if names.contains(&"federation") {
        router = router.merge(federation::companion_routes());
    }
    // Synapse's application-service pushes, on whichever listener the
    // registration's `url` names (forwarded, they would come back to
    // Synapse as unknown paths and be retried forever).
    router
        .merge(appservice::routes())
        .route("/health", get(health::get_health))
        .route("/_presenced/health", get(health::get_health))
        // Only presenced's own answers get presenced's CORS headers: a
        // forwarded answer carries Synapse's.
        .route_layer(cors::CorsLayer)
        .route_layer(DefaultBodyLimit::max(max_body))
        .fallback(forward::to_synapse)
        .method_not_allowed_fallback(forward::to_synapse)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span::request_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

async fn unknown_endpoint() -> ApiError {
    ApiError::Unrecognized {
        method_not_allowed: false,
    }
}

async fn wrong_method() -> ApiError {
    ApiError::Unrecognized {
        method_not_allowed: true,
    }
}
