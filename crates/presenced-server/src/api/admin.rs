//! presenced's admin API under `/_presenced/admin/v1`: the full engine
//! state of a user, and why one user may (or may not) see another.
//!
//! Callers are admin users (their access token) or whoever holds the
//! registration shared secret (`Authorization: Bearer <secret>`, for
//! scripts that have no account). Anyone else with a valid token gets
//! 403 `M_FORBIDDEN`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use presenced_engine::{PresenceState, Timestamp};
use presenced_router::RouteReason;
use ruma_common::OwnedUserId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{bearer_token, AuthUser, MatrixPath, MatrixQuery};
use crate::api::state::AppState;
use crate::util::clock::now;
use crate::util::ids;

/// The admin routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/_presenced/admin/v1/presence/{user_id}",
            get(get_presence_state),
        )
        .route("/_presenced/admin/v1/visibility", get(get_visibility))
}

/// A caller allowed to use the admin API.
pub(crate) struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if let (Some(token), Some(secret)) =
            (bearer_token(parts)?, &state.registration_shared_secret)
        {
            // Compare digests, so the comparison's timing says nothing
            // about the secret.
            if ids::hash_token(&token) == ids::hash_token(secret.expose()) {
                return Ok(Self);
            }
        }
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.admin {
            Ok(Self)
        } else {
            Err(ApiError::Forbidden("You are not a server admin".to_owned()))
        }
    }
}

fn ts(t: Timestamp) -> u64 {
    t.0
}

fn state_json(state: &PresenceState, now: Timestamp) -> Value {
    json!({
        "user_id": state.user_id,
        "presence": state.presence.as_str(),
        "status_msg": state.status_msg.as_deref(),
        "currently_active": state.currently_active,
        "last_active_ts": ts(state.last_active_ts),
        "last_active_ago": state.last_active_ago(now),
        "last_federation_update_ts": ts(state.last_federation_update_ts),
        "last_user_sync_ts": ts(state.last_user_sync_ts),
    })
}

/// GET /_presenced/admin/v1/presence/{userId}
///
/// Everything the engine holds for the user: the combined state with all
/// its timestamps (ms since the epoch; 0 = never) and, for local users,
/// each device's record. Unknown local users are 404; remote users answer
/// whatever the engine knows (offline, zeros, when nothing).
async fn get_presence_state(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> Result<Json<Value>, ApiError> {
    let local = user_id.server_name() == state.server_name;
    if local {
        let lookup = user_id.clone();
        if state.db(move |s| s.user(&lookup)).await?.is_none() {
            return Err(ApiError::NotFound("No such user".to_owned()));
        }
    }
    let (presence, devices) = state.presence.state_of(&user_id);
    let mut body = state_json(&presence, now());
    body["local"] = json!(local);
    body["devices"] = devices
        .iter()
        .map(|d| {
            json!({
                "device_id": d.device_id,
                "presence": d.presence.as_str(),
                "last_active_ts": ts(d.last_active_ts),
                "last_sync_ts": ts(d.last_sync_ts),
                "syncing": d.syncing,
            })
        })
        .collect();
    Ok(Json(body))
}

#[derive(Deserialize)]
struct VisibilityQuery {
    observer: Option<String>,
    target: Option<String>,
}

fn user_param(name: &str, value: Option<String>) -> Result<OwnedUserId, ApiError> {
    let value = value.ok_or_else(|| ApiError::InvalidParam(format!("missing `{name}`")))?;
    OwnedUserId::try_from(value.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("`{name}` is not a user ID: {e}")))
}

/// GET /_presenced/admin/v1/visibility?observer=A&target=B
///
/// Why `observer` may see `target`'s presence: the same user, eligible
/// shared rooms (and the shared rooms that do not count: excluded or over
/// `max_room_size`), and each router module that grants it. `visible` is
/// true when any of those holds.
async fn get_visibility(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    MatrixQuery(query): MatrixQuery<VisibilityQuery>,
) -> Result<Json<Value>, ApiError> {
    let observer = user_param("observer", query.observer)?;
    let target = user_param("target", query.target)?;
    let rooms = state.presence.explain_rooms(&observer, &target);
    let modules = state.presence.explain_modules(&observer, &target).await;
    let modules_json: Vec<Value> = modules
        .iter()
        .map(|m| {
            json!({
                "module": m.module,
                "reason": match m.reason {
                    RouteReason::AllUsers => "all_users",
                    RouteReason::Listed => "listed",
                },
            })
        })
        .collect();
    Ok(Json(json!({
        "observer": observer,
        "target": target,
        "visible": rooms.visible() || !modules.is_empty(),
        "same_user": rooms.same_user,
        "shared_rooms": rooms.shared_rooms,
        "ineligible_shared_rooms": rooms.ineligible_shared_rooms,
        "modules": modules_json,
    })))
}
