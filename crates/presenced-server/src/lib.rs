//! presenced-server: the presenced homeserver around the presence engine.
//!
//! It speaks the Matrix client-server API over HTTP (axum), keeps accounts,
//! devices, rooms and a simple per-room timeline (through the
//! `presenced-store` crate: SQLite or PostgreSQL), and reads a
//! Synapse-shaped YAML config. It is the only presenced crate that knows
//! HTTP and YAML; SQL lives in the store crate.
//!
//! The entry point has the mini-redis / zero2prod shape: build an
//! [`AppState`] ([`process::startup::build_state`]), bind a listener, then
//! [`run`]`(listener, state, shutdown)` until the shutdown future resolves.
//! [`app`] gives the bare [`axum::Router`] for tests without a socket.
//!
//! # Layout
//!
//! Four concerns, each in its own folder, and the layers around them.
//! Imports point down this list, never up (`tests/it/layering.rs`
//! checks it):
//!
//! - `process`: the shell (start-up, feeds, logging); `main.rs` on top.
//! - `api`: HTTP routing and handlers: parse, make one call, map errors.
//! - `sync`: the `/sync` service: the long-poll, the merge of presence and
//!   rooms, the token.
//! - `homeserver`: accounts, tokens, UIA, rooms, the room stream.
//! - `federation`: keys, signatures, inbound EDUs, the outbound sender.
//! - `companion`: companion mode: Synapse as the source of accounts,
//!   tokens and memberships, and the proxy to it.
//! - `presence`: the driver around the engine and the router.
//! - `store`: every SQL statement (SQLite and PostgreSQL, the
//!   `presenced-store` crate), behind traits.
//! - `net`: accepting and serving connections under caps and timeouts.
//! - `config`, `util`: leaves any layer may read.
//!
//! Handlers use their own serde request types with ruma identifiers rather
//! than ruma-client-api's request types: those need ruma's HTTP glue, which
//! does not plug into axum's extractors, and the server must answer every
//! parse failure with its own Matrix error codes anyway.

pub mod api;
pub mod companion;
pub mod config;
pub mod federation;
pub mod homeserver;
pub mod net;
pub mod presence;
pub mod process;
/// Storage lives in its own crate; `crate::store` keeps its old path.
pub use presenced_store as store;
pub mod sync;
pub mod util;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use crate::api::state::AppState;
pub use crate::config::Config;
pub use crate::homeserver::activity::ActivityEvent;
pub use crate::homeserver::StateReceivers;
pub use crate::store::membership::{Membership, MembershipChange};

/// The HTTP application for a state.
pub fn app(state: Arc<AppState>) -> Router {
    api::router(state)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, server_name = %state.server_name, "listening");
    }
    let connections = Arc::clone(&state.connections);
    net::serve(listener, None, app(state), connections, shutdown).await
}

/// Serves one configured listener: the resources it names
/// ([`api::router_for`]), over TLS when `tls` is given (the config's
/// certificate, see [`federation::tls::server_config`]).
pub async fn run_listener(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    resources: &[&str],
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), ?resources, server_name = %state.server_name, "listening");
    }
    let connections = Arc::clone(&state.connections);
    let app = api::router_for(state, resources);
    net::serve(listener, tls, app, connections, shutdown).await
}
