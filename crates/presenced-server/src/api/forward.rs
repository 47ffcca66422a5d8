//! Companion mode's fallback: every request the companion router does not
//! answer itself goes to Synapse (`companion::forward`), and Synapse's
//! answer comes back as it is. An unreachable Synapse is a 502 `M_UNKNOWN`
//! saying so.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::bearer_token;
use crate::api::state::AppState;
use crate::companion::forward::forward;

/// Any method, any path: to Synapse.
pub(crate) async fn to_synapse(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(companion) = &state.companion else {
        // The companion router is only built with companion mode's parts.
        return ApiError::Unrecognized {
            method_not_allowed: false,
        }
        .into_response();
    };
    // The peer as the connection saw it; `X-Forwarded-For` from the client
    // is kept and this address appended, whatever `x_forwarded` says.
    let client_ip = (request.extensions())
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let (parts, body) = request.into_parts();
    // A request with the token given twice is Synapse's to refuse.
    let token = bearer_token(&parts).ok().flatten();
    let request = Request::from_parts(parts, body);
    match forward(companion, request, client_ip, token.as_deref()).await {
        Ok(response) => response,
        Err(e) => ApiError::Synapse(e).into_response(),
    }
}
