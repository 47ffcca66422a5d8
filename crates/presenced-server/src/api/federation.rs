//! The server-server API presenced serves: the key server and (for
//! presence) the transaction endpoint.
//!
//! - `key_server`: `GET /_matrix/key/v2/server[/{keyId}]`.
//! - `send`: `PUT /_matrix/federation/v1/send/{txnId}` (presence EDUs).
//! - `signed`: the extractor that verifies X-Matrix authorization.
//! - `body_budget`: how much federation body is held at once.
//! - `version`: `GET /_matrix/federation/v1/version`.

mod body_budget;
mod key_server;
mod send;
mod signed;
mod version;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};
use axum::Router;

use crate::api::state::AppState;

pub(crate) use body_budget::BodyBudget;

/// Largest accepted transaction: 50 PDUs of up to 64 KiB plus 100 EDUs.
const MAX_TRANSACTION_BYTES: usize = 8 * 1024 * 1024;

/// The key server routes (the `keys` listener resource).
pub(crate) fn key_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_matrix/key/v2/server", get(key_server::get_server_keys))
        .route(
            "/_matrix/key/v2/server/{key_id}",
            get(key_server::get_server_keys_by_id),
        )
}

/// Companion mode's federation: only `/send` is presenced's (its presence
/// applied, then the whole transaction passed to Synapse); keys, version
/// and everything else stay Synapse's (forwarded).
pub(crate) fn companion_routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/_matrix/federation/v1/send/{txn_id}",
        put(send::put_transaction_and_forward).layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES)),
    )
}

/// The federation and key routes (the `federation` listener resource).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    key_routes()
        .route("/_matrix/federation/v1/version", get(version::get_version))
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(send::put_transaction).layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES)),
        )
}
