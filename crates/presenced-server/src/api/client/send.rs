//! `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedRoomId;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::{AuthUser, MatrixJson, MatrixPath};
use crate::api::state::AppState;
use crate::homeserver::activity::ActivityEvent;
use crate::homeserver::room_stream::Committed;
use crate::homeserver::rooms;
use crate::store::{NewEvent, TxnKey};
use crate::util::{clock, ids};

/// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
///
/// Any event type is accepted, encrypted ones included: the content is
/// stored as given in the room timeline. Idempotent per (user, device,
/// txnId): a retry gets the first event's ID back. Counts as activity.
pub(crate) async fn put_send(
    State(state): State<Arc<AppState>>,
    auth: AuthUser,
    MatrixPath((room_id, event_type, txn_id)): MatrixPath<(OwnedRoomId, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let (user, device, txn) = (auth.user_id.clone(), auth.device_id.clone(), txn_id.clone());
    let earlier = state
        .db(move |s| s.event_for_txn(&user, &device, &txn))
        .await?;
    let event_id = match earlier {
        Some(id) => id,
        None => {
            rooms::require_joined(&state.homeserver, &room_id, &auth.user_id)?;
            let event = NewEvent {
                event_id: ids::new_event_id(),
                room_id,
                sender: auth.user_id.clone(),
                event_type,
                state_key: None,
                content: Value::Object(content),
                origin_server_ts: clock::now(),
                txn: Some(TxnKey {
                    device_id: auth.device_id.clone(),
                    txn_id: txn_id.clone(),
                }),
            };
            let event_id = event.event_id.clone();
            let (user, device) = (auth.user_id.clone(), auth.device_id.clone());
            let room = event.room_id.clone();
            state
                .homeserver
                .room_write(move |s, _| match s.append_events(&[event]) {
                    Ok(streams) => Ok((
                        event_id,
                        (streams.last()).map(|&top| Committed::events(room, top)),
                    )),
                    // A concurrent retry of the same transaction won the
                    // unique index; answer with its event.
                    Err(e) => Ok((s.event_for_txn(&user, &device, &txn_id)?.ok_or(e)?, None)),
                })
                .await?
        }
    };
    state.homeserver.emit_activity(ActivityEvent {
        user: auth.user_id,
        device: auth.device_id,
    });
    Ok(Json(json!({ "event_id": event_id })))
}
