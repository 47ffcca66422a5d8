//! `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`,
//! and the check of `/sync`'s inline filters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::Json;
use ruma_common::OwnedUserId;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{nesting_exceeds, AuthUser, MatrixJson, MatrixPath, MAX_JSON_DEPTH};
use crate::api::filter_validation;
use crate::api::state::AppState;

/// POST /_matrix/client/v3/user/{userId}/filter
///
/// Stores the filter as given, once it passed Synapse's checks
/// ([`filter_validation`]; 400 `M_BAD_JSON` otherwise, and nothing is
/// stored); `/sync` interprets it.
pub(crate) async fn post_filter(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(filter): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    if user_id != auth.user_id {
        return Err(ApiError::Forbidden(
            "Cannot create filters for other users".to_owned(),
        ));
    }
    let filter = Value::Object(filter);
    filter_validation::validate(&filter).map_err(ApiError::BadJson)?;
    let filter_id = state
        .db(move |s| s.create_filter(&user_id, &filter))
        .await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

/// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
pub(crate) async fn get_filter(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath((user_id, filter_id)): MatrixPath<(OwnedUserId, String)>,
) -> Result<Json<Value>, ApiError> {
    if user_id != auth.user_id {
        return Err(ApiError::Forbidden(
            "Cannot get filters for other users".to_owned(),
        ));
    }
    // Filter IDs are integers; anything else is a malformed request
    // rather than an unknown filter (Synapse: 400 "Invalid filter_id").
    if filter_id.parse::<i64>().is_err() {
        return Err(ApiError::BadRequest("Invalid filter_id".to_owned()));
    }
    state
        .db(move |s| s.filter(&user_id, &filter_id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("No such filter".to_owned()))
}

/// Checks an inline `/sync` filter (`filter={...}`) before the sync runs:
/// not JSON is 400 `M_NOT_JSON`, a filter that fails the checks 400
/// `M_BAD_JSON`, as for an uploaded one. Filter IDs pass through; the sync
/// looks them up. The sync handler's first extractor, so the check runs
/// before its credentials are read and it keeps parsing its filter in
/// place. A request without credentials is left to the handler, so it gets
/// its 401 first, as in Synapse.
///
/// An extractor rather than a layer: it is done before the handler waits,
/// where a layer's future stays alive for the whole long-poll (about 1 KiB
/// on every open `/sync`, measured with `scripts/longpoll-memory`).
pub(crate) struct InlineSyncFilterChecked;

impl<S: Send + Sync> FromRequestParts<S> for InlineSyncFilterChecked {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let has_credentials = parts.headers.contains_key(header::AUTHORIZATION)
            || parts
                .uri
                .query()
                .is_some_and(|q| q.contains("access_token="));
        if has_credentials {
            inline_filter_error(&parts.uri)?;
        }
        Ok(Self)
    }
}

fn inline_filter_error(uri: &axum::http::Uri) -> Result<(), ApiError> {
    // Cheap test first: most syncs have no filter or a filter ID.
    if !uri.query().is_some_and(|q| q.contains("filter=")) {
        return Ok(());
    }
    let Ok(axum::extract::Query(query)) =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
    else {
        // The sync handler reports a malformed query itself.
        return Ok(());
    };
    let Some(text) = query
        .get("filter")
        .filter(|f| f.trim_start().starts_with('{'))
    else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(text).map_err(|_| {
        if nesting_exceeds(text.as_bytes(), MAX_JSON_DEPTH) {
            ApiError::BadJson(format!(
                "filter: JSON is nested more than {MAX_JSON_DEPTH} levels deep"
            ))
        } else {
            ApiError::NotJson("Invalid filter JSON".to_owned())
        }
    })?;
    filter_validation::validate(&value).map_err(ApiError::BadJson)
}
