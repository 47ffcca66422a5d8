//! `PUT /_matrix/federation/v1/send/{txnId}` — a transaction from another
//! server.
//!
//! presenced only takes presence from federation: `m.presence` EDUs are
//! read entry by entry (`federation::presence_edu`) and handed to the
//! presence driver; other EDUs and all PDUs are acknowledged without
//! effect. A transaction ID seen before from the same origin is
//! acknowledged again without being applied
//! (`federation::transactions`). With `presence.federation.receive: false`
//! presence EDUs are acknowledged and ignored.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::signed::SignedJson;
use crate::api::error::ApiError;
use crate::api::extract::MatrixPath;
use crate::api::state::AppState;
use crate::federation::presence_edu;
use crate::util::clock;

/// Spec limits of one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// The parts of a transaction presenced reads.
#[derive(Deserialize)]
struct Transaction {
    origin: ruma_common::OwnedServerName,
    /// Required by the spec; tolerated when absent, as Synapse does.
    #[serde(default)]
    pdus: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    edus: Vec<Value>,
}

/// PUT /_matrix/federation/v1/send/{txnId}
pub(crate) async fn put_transaction(
    State(state): State<Arc<AppState>>,
    MatrixPath(txn_id): MatrixPath<String>,
    SignedJson { origin, body, .. }: SignedJson,
) -> Result<Json<Value>, ApiError> {
    apply(&state, origin, &txn_id, body)?;
    Ok(Json(json!({ "pdus": {} })))
}

/// PUT /_matrix/federation/v1/send/{txnId} in companion mode: verified and
/// its presence applied here, then passed to Synapse byte for byte (the
/// rooms are Synapse's), whose answer goes back to the sender. A request
/// presenced refuses (signature, origin, limits) is not passed on:
/// Synapse would refuse it too, and a forged one must apply nothing.
pub(crate) async fn put_transaction_and_forward(
    State(state): State<Arc<AppState>>,
    MatrixPath(txn_id): MatrixPath<String>,
    SignedJson {
        origin, body, raw, ..
    }: SignedJson,
) -> Result<axum::response::Response, ApiError> {
    let Some(companion) = &state.companion else {
        return Err(ApiError::Unrecognized {
            method_not_allowed: false,
        });
    };
    apply(&state, origin, &txn_id, body)?;
    let (parts, bytes) = raw;
    let client_ip = (parts.extensions)
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    crate::companion::forward::forward(companion, request, client_ip, None)
        .await
        .map_err(ApiError::Synapse)
}

/// Applies a verified transaction's presence. Every transaction leaves one
/// debug line: origin, ID, PDU and EDU counts, and what became of it
/// (refused and why, a repeat, or how many presence entries were taken
/// and dropped).
fn apply(
    state: &AppState,
    origin: ruma_common::OwnedServerName,
    txn_id: &str,
    body: Value,
) -> Result<(), ApiError> {
    let refused =
        |why: &str| tracing::debug!(%origin, %txn_id, "inbound transaction refused: {why}");
    let txn: Transaction = serde_json::from_value(body).map_err(|e| {
        refused(&e.to_string());
        ApiError::BadJson(e.to_string())
    })?;
    let (pdus, edus) = (txn.pdus.len(), txn.edus.len());
    if txn.origin != origin {
        refused("body origin is not the signing server");
        return Err(ApiError::Forbidden(format!(
            "transaction origin {} is not the signing server {origin}",
            txn.origin
        )));
    }
    if pdus > MAX_PDUS || edus > MAX_EDUS {
        refused(&format!("{pdus} PDUs and {edus} EDUs is over the limit"));
        return Err(ApiError::BadJson(format!(
            "at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction"
        )));
    }
    state.metrics.federation_transaction();
    // It reached us, so it is up: presence queued for it goes now.
    state.outbound.peer_is_up(&origin);
    if !state.seen_transactions.first_time(&origin, txn_id) {
        tracing::debug!(%origin, %txn_id, pdus, edus, "inbound transaction is a repeat: acknowledged, not applied");
        return Ok(());
    }
    let receive = state.config.presence.federation.receive;
    let now = clock::now();
    let (mut presence_edus, mut accepted, mut dropped) = (0usize, 0usize, 0usize);
    for edu in &txn.edus {
        if edu.get("edu_type").and_then(Value::as_str) != Some(presence_edu::EDU_TYPE) {
            continue;
        }
        presence_edus += 1;
        if !receive {
            continue;
        }
        let content = edu.get("content").unwrap_or(&Value::Null);
        let push = presence_edu::read(&origin, &state.server_name, content, now);
        for (index, reason, why) in &push.dropped {
            state.metrics.presence_entry_refused(*reason);
            tracing::debug!(%origin, %txn_id, index, reason = reason.label(), "dropped an m.presence entry: {why}");
        }
        dropped += push.dropped.len();
        accepted += push.accepted.len();
        if !push.accepted.is_empty() {
            state.presence.remote_presence(&origin, push.accepted);
        }
    }
    tracing::debug!(
        %origin,
        %txn_id,
        pdus,
        edus,
        presence_edus,
        presence_entries_taken = accepted,
        presence_entries_dropped = dropped,
        presence_receive = receive,
        "inbound transaction accepted"
    );
    Ok(())
}
