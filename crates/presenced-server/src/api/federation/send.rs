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
use crate::federation::presence_edu;
use crate::ids;
use crate::state::AppState;

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
    SignedJson { origin, body }: SignedJson,
) -> Result<Json<Value>, ApiError> {
    let txn: Transaction =
        serde_json::from_value(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    if txn.origin != origin {
        return Err(ApiError::Forbidden(format!(
            "transaction origin {} is not the signing server {origin}",
            txn.origin
        )));
    }
    if txn.pdus.len() > MAX_PDUS || txn.edus.len() > MAX_EDUS {
        return Err(ApiError::BadJson(format!(
            "at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction"
        )));
    }
    state.metrics.federation_transaction();
    // It reached us, so it is up: presence queued for it goes now.
    state.outbound.peer_is_up(&origin);
    if !state.seen_transactions.first_time(&origin, &txn_id) {
        tracing::debug!(%origin, %txn_id, "transaction already processed");
        return Ok(Json(json!({ "pdus": {} })));
    }
    let receive = state.config.presence.federation.receive;
    let now_ms = ids::now_ms();
    for edu in &txn.edus {
        if edu.get("edu_type").and_then(Value::as_str) != Some(presence_edu::EDU_TYPE) {
            continue;
        }
        if !receive {
            tracing::debug!(%origin, "presence.federation.receive is off: m.presence ignored");
            continue;
        }
        let content = edu.get("content").unwrap_or(&Value::Null);
        let push = presence_edu::read(&origin, content, now_ms);
        for (index, why) in &push.dropped {
            tracing::warn!(%origin, %txn_id, index, "dropped an m.presence entry: {why}");
        }
        if !push.accepted.is_empty() {
            state.presence.remote_presence(&origin, push.accepted);
        }
    }
    Ok(Json(json!({ "pdus": {} })))
}
