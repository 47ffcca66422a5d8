//! `GET /_matrix/client/v3/sync` in companion mode: parses what presenced
//! needs (the caller, `set_presence`, the client's address) and hands the
//! request to the splice (`companion/splice.rs`), which asks Synapse for
//! its part and adds presenced's presence section.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use presenced_engine::Presence;

use crate::api::error::ApiError;
use crate::api::extract::AuthUser;
use crate::api::state::AppState;
use crate::companion::splice::{SpliceAnswer, SpliceError, SpliceRequest};
use crate::companion::upstream::UpstreamError;

/// GET /_matrix/client/{r0,v3}/sync, spliced.
pub(crate) async fn get_spliced_sync(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let Some(splice) = &state.spliced_sync else {
        // Only the companion router routes here, and it has a splice.
        return Err(ApiError::Unrecognized {
            method_not_allowed: false,
        });
    };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let set_presence = query
        .iter()
        .find(|(k, _)| k == "set_presence")
        .map(|(_, v)| v.as_str());
    let set_presence = match set_presence {
        None | Some("online") => Some(Presence::Online),
        Some("unavailable") => Some(Presence::Unavailable),
        Some("offline") => None,
        Some(other) => {
            return Err(ApiError::InvalidParam(format!(
                "Unknown set_presence: {other}"
            )))
        }
    };
    // AuthUser read it already; Synapse checks it again.
    let token = crate::api::extract::bearer_token(&parts)?.ok_or(ApiError::MissingToken)?;
    // The client's address after what it came with, as forwarding does.
    let forwarded_for = peer.map(|ConnectInfo(addr)| {
        match (parts.headers)
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(before) => format!("{before}, {}", addr.ip()),
            None => addr.ip().to_string(),
        }
    });
    let answer = splice
        .serve(SpliceRequest {
            user: &auth.user_id,
            device: &auth.device_id,
            access_token: &token,
            path: parts.uri.path(),
            query,
            set_presence,
            forwarded_for,
        })
        .await
        .map_err(|e| match e {
            SpliceError::Upstream(e) => ApiError::Synapse(e),
            SpliceError::BadToken(text) => {
                ApiError::InvalidParam(format!("Invalid since token: {text}"))
            }
            SpliceError::Malformed => ApiError::Synapse(UpstreamError::Malformed {
                path: parts.uri.path().to_owned(),
                reason: "not a sync answer".to_owned(),
            }),
        })?;
    Ok(match answer {
        SpliceAnswer::Spliced(body) => {
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        SpliceAnswer::Synapse(refused) => {
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = refused
                .content_type
                .unwrap_or_else(|| "application/json".to_owned());
            (status, [(header::CONTENT_TYPE, content_type)], refused.body).into_response()
        }
    })
}
