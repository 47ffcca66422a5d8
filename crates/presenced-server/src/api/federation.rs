//! The server-server API presenced serves: the key server and (for
//! presence) the transaction endpoint.
//!
//! - `key_server`: `GET /_matrix/key/v2/server[/{keyId}]`.
//! - `version`: `GET /_matrix/federation/v1/version`.

mod key_server;
mod version;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The federation and key routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_matrix/key/v2/server", get(key_server::get_server_keys))
        .route(
            "/_matrix/key/v2/server/{key_id}",
            get(key_server::get_server_keys_by_id),
        )
        .route("/_matrix/federation/v1/version", get(version::get_version))
}
