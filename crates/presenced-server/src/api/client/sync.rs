//! `GET /_matrix/client/v3/sync`: the request, parsed, and one call.
//!
//! The handler parses the `since` token (`sync/token.rs`), the filter (a
//! stored filter id, read through `Homeserver::filter`, or inline JSON
//! checked by `api/filter_validation.rs`) and `set_presence`, and caps the
//! client's `timeout` (honoured as given unless `max_sync_timeout` caps
//! it). The long-poll itself, the merge of presence and rooms and the
//! `next_batch` token are the sync service's
//! ([`crate::sync::SyncService::serve`]); the handler writes its answer's
//! JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use presenced_engine::Presence;
use serde::Deserialize;
use serde_json::Value;

use super::filter::InlineSyncFilterChecked;
use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixQuery};
use crate::api::state::AppState;
use crate::homeserver::room_filter::RoomFilter;
use crate::presence::filter::PresenceFilter;
use crate::sync::token::SinceToken;
use crate::sync::SyncRequest;

/// Beyond this a client's `timeout` means "as long as you like": a year,
/// so deadline arithmetic cannot overflow.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Deserialize)]
pub(crate) struct SyncQuery {
    since: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    set_presence: Option<String>,
    #[serde(default)]
    full_state: Option<bool>,
    filter: Option<String>,
}

/// GET /_matrix/client/v3/sync
pub(crate) async fn get_sync(
    _inline_filter: InlineSyncFilterChecked,
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let _timer = state.metrics.sync_timer();
    let since = query.since.as_deref().map(parse_since).transpose()?;
    let set_presence = parse_set_presence(query.set_presence.as_deref())?;
    let (presence_filter, room_filter) = filters(&state, &auth, query.filter.as_deref()).await?;
    // The client's timeout as given (Synapse has no cap), unless the
    // operator set `max_sync_timeout`.
    let timeout = Duration::from_millis(query.timeout.unwrap_or(0))
        .min(state.config.max_sync_timeout.unwrap_or(FOREVER))
        .min(FOREVER);
    let full_state = query.full_state.unwrap_or(false);
    // The query's text (an inline filter, the token) is parsed by now: a
    // long-poll need not keep it for its whole wait.
    drop(query);
    let answer = state
        .sync
        .serve(SyncRequest {
            user: &auth.user_id,
            device: &auth.device_id,
            since,
            full_state,
            set_presence,
            presence_filter,
            room_filter,
            timeout,
        })
        .await?;
    // Written straight from the states: no JSON tree per answer.
    let json = serde_json::to_vec(&answer).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// The `since` token, or 400 `M_INVALID_PARAM`.
fn parse_since(token: &str) -> Result<SinceToken, ApiError> {
    SinceToken::parse(token)
        .map_err(|_| ApiError::InvalidParam(format!("Invalid since token: {token}")))
}

/// `set_presence`: absent is `online`.
fn parse_set_presence(value: Option<&str>) -> Result<Presence, ApiError> {
    match value {
        None | Some("online") => Ok(Presence::Online),
        Some("unavailable") => Ok(Presence::Unavailable),
        Some("offline") => Ok(Presence::Offline),
        Some(other) => Err(ApiError::InvalidParam(format!(
            "Unknown set_presence: {other}"
        ))),
    }
}

/// The filter's presence and room sections: none, inline JSON, or a
/// stored filter's id.
async fn filters(
    state: &AppState,
    auth: &AuthUser,
    filter: Option<&str>,
) -> Result<(PresenceFilter, RoomFilter), ApiError> {
    Ok(match filter {
        None => (PresenceFilter::default(), RoomFilter::default()),
        Some(f) if f.trim_start().starts_with('{') => {
            let value: Value = serde_json::from_str(f)
                .map_err(|e| ApiError::InvalidParam(format!("filter: {e}")))?;
            (
                PresenceFilter::from_filter(&value),
                RoomFilter::from_filter(&value),
            )
        }
        Some(id) => {
            let value = state
                .homeserver
                .filter(&auth.user_id, id)
                .await?
                .ok_or_else(|| ApiError::InvalidParam("No such filter".to_owned()))?;
            (
                PresenceFilter::from_filter(&value),
                RoomFilter::from_filter(&value),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tokens_are_invalid_params() {
        assert!(parse_since("s12_34").is_ok());
        for bad in ["", "12_34", "s12", "sx_1", "s1_y", "s1_g1.1"] {
            assert!(
                matches!(parse_since(bad), Err(ApiError::InvalidParam(_))),
                "{bad}"
            );
        }
    }
}
