//! presenced-server: the presenced homeserver around the presence engine.
//!
//! It speaks the Matrix client-server API over HTTP (axum), keeps accounts,
//! devices, rooms and a simple per-room timeline in SQLite, and reads a
//! Synapse-shaped YAML config. It is the only presenced crate that knows
//! HTTP, JSON wire formats, SQL and YAML.
//!
//! The entry point has the mini-redis / zero2prod shape: build an
//! [`AppState`] ([`startup::build_state`]), bind a listener, then
//! [`run`]`(listener, state, shutdown)` until the shutdown future resolves.
//! [`app`] gives the bare [`axum::Router`] for tests without a socket.
//!
//! # Layout
//!
//! - `config` (+ `config/duration`, `config/env`, `config/presence`): the
//!   YAML config, Synapse key names, `PRESENCED_…` overrides.
//! - `startup`: config → open store + registration secret → `AppState`.
//! - `state`: [`AppState`], shared by handlers; its channels report
//!   membership changes and user activity to the presence engine driver.
//! - `membership`, `activity`: the messages on those channels.
//! - `presence` (+ `presence/*`): the driver around the presence engine
//!   and router (locking, wake-ups, persistence, timers), presence storage,
//!   the wire format and `rc_presence`.
//! - `store` (+ `store/sqlite`): the storage trait and the SQLite backend
//!   with embedded migrations.
//! - `accounts`: user-ID rules, argon2 password hashes, sessions.
//! - `rooms`: room creation and membership rules.
//! - `room_stream`, `room_members`: in memory, the event stream position,
//!   each user's latest room change and every room's members, kept by the
//!   room writes (so syncs and room writes do not ask SQLite).
//! - `room_writer`: the one thread that runs room writes back to back.
//! - `client_event`: stored events in the client wire format.
//! - `federation` (+ `federation/*`): our signing key, other servers'
//!   keys, and the pieces of the server-server API presence uses.
//! - `ids`: minting IDs, tokens, timestamps.
//! - `listeners` (+ `listeners/caps`, `listeners/watchdog`): serving plain
//!   and TLS (rustls) listeners under the connection caps and timeouts;
//!   `fd_limit` raises and reads `RLIMIT_NOFILE`, which the caps derive from.
//! - `long_polls`: the bound on `/sync` long-polls open per device.
//! - `api`: routing, `ApiError`, extractors, and the endpoints
//!   (`api/client/*.rs`, `api/synapse_admin.rs`, `api/admin.rs` for
//!   presenced's own admin API, `api/metrics.rs`, `api/health.rs`).
//! - `expiring_map`: the bounded, expiring map behind nonces and UIA
//!   sessions.
//! - `uia`: user-interactive auth (`m.login.password`) for deactivation.
//! - `metrics`: handler counters and the Prometheus text rendering.
//! - `telemetry`: tracing subscriber (human or JSON).
//!
//! Handlers use their own serde request types with ruma identifiers rather
//! than ruma-client-api's request types: those need ruma's HTTP glue, which
//! does not plug into axum's extractors, and the server must answer every
//! parse failure with its own Matrix error codes anyway.

pub mod accounts;
pub mod activity;
pub mod api;
pub mod client_event;
pub mod config;
mod expiring_map;
pub mod fd_limit;
pub mod federation;
pub mod filter_validation;
pub mod ids;
pub mod limiters;
pub mod listeners;
pub(crate) mod long_polls;
pub mod membership;
pub mod metrics;
pub mod presence;
pub mod room_filter;
pub mod room_members;
pub mod room_stream;
pub mod room_writer;
pub mod rooms;
pub mod startup;
pub mod state;
pub mod store;
pub mod sync_rooms;
pub mod telemetry;
pub mod token_cache;
pub mod uia;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use crate::activity::ActivityEvent;
pub use crate::config::Config;
pub use crate::membership::{Membership, MembershipChange};
pub use crate::state::{AppState, StateReceivers};

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
    listeners::serve(listener, None, app(state), connections, shutdown).await
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
    listeners::serve(listener, tls, app, connections, shutdown).await
}
