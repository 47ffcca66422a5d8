//! The application-service API presenced answers in companion mode: the
//! transactions Synapse pushes (`PUT /_matrix/app/v1/transactions/{txnId}`)
//! and its ping (`POST /_matrix/app/v1/ping`).
//!
//! Authentication is the registration's `hs_token`, in `Authorization:
//! Bearer` (what Synapse sends today) or the `access_token` query
//! parameter (what older Synapses, and Synapse with
//! `use_appservice_legacy_authorization`, send; the header wins when both
//! are there). The answers follow the application-service spec: no token
//! is 401 `M_UNAUTHORIZED`, a wrong one 403 `M_FORBIDDEN`, and nothing is
//! applied. A transaction is acknowledged (200 `{}`, with a
//! `Content-Length`, which Synapse requires of a successful delivery) only
//! once it is stored, so a crash before that makes Synapse send it again.
//!
//! Served by companion mode's router only; standalone mode has no feed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;

use super::error::ApiError;
use crate::api::state::AppState;
use crate::companion::members::{FeedError, MembershipFeed};

/// Largest accepted transaction: Synapse sends up to 100 events of at most
/// 64 KiB each, plus ephemeral events and to-device messages.
const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

/// The application-service routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    let transaction = || put(put_transaction).layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES));
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", transaction())
        // The spec's path before the `/_matrix/app/v1` prefix.
        .route("/transactions/{txn_id}", transaction())
        .route("/_matrix/app/v1/ping", post(post_ping))
}

/// PUT /_matrix/app/v1/transactions/{txnId}
async fn put_transaction(
    State(state): State<Arc<AppState>>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let feed = authenticated_feed(&state, &headers, &uri)?;
    match feed.apply_transaction(&txn_id, &body).await {
        Ok(changed) => {
            tracing::debug!(txn_id, changed, "application-service transaction stored");
            Ok(empty_object())
        }
        Err(FeedError::Malformed(why)) => Err(ApiError::BadJson(why)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// POST /_matrix/app/v1/ping: Synapse checking that the service answers
/// (when asked to by `POST /_matrix/client/v1/appservice/{id}/ping`).
async fn post_ping(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    authenticated_feed(&state, &headers, &uri)?;
    Ok(empty_object())
}

/// The feed, if this is companion mode and the request carries the
/// registration's `hs_token`.
fn authenticated_feed<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<&'a MembershipFeed, ApiError> {
    let feed = (state.companion.as_deref())
        .and_then(|c| c.membership_feed.as_deref())
        .ok_or(ApiError::Unrecognized {
            method_not_allowed: false,
        })?;
    let token = header_token(headers)
        .or_else(|| query_token(uri))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "no hs_token: the homeserver must send the registration's hs_token".to_owned(),
            )
        })?;
    if !feed.hs_token_matches(&token) {
        return Err(ApiError::Forbidden(
            "the token is not the registration's hs_token".to_owned(),
        ));
    }
    Ok(feed)
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn query_token(uri: &Uri) -> Option<String> {
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    query.get("access_token").filter(|t| !t.is_empty()).cloned()
}

/// `200 {}` with its length stated: Synapse counts an answer without
/// `Content-Length` as a failed delivery and sends the transaction again.
fn empty_object() -> Response {
    let mut response = (StatusCode::OK, "{}").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
    response
}
