//! `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson, MatrixPath};
use crate::state::AppState;

/// POST /_matrix/client/v3/user/{userId}/filter
///
/// Stores the filter as given; `/sync` interprets it.
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
    state
        .db(move |s| s.filter(&user_id, &filter_id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("No such filter".to_owned()))
}
