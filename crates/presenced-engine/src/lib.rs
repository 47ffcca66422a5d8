//! The presenced presence engine: sans-IO, deterministic, no clock.
//!
//! This crate holds every user's presence and decides who sees what. It does
//! no networking, no storage and never reads the clock: every input carries
//! `now`, and the engine answers with outputs the driver must act on (whom to
//! wake, what to persist, which presence to send to which server) plus the
//! time of its next timer. quinn-proto is the model; [`Engine`] documents
//! the driving contract.
//!
//! # Layout
//! - [`time`]: [`Timestamp`], the only notion of time.
//! - [`presence`]: presence values and the user-level record.
//! - [`machine`]: the state machine as pure functions (update, notify,
//!   device timeouts, next deadline).
//! - `engine`: the [`Engine`] and its client, federation, clock and module inputs.
//! - `fanout`: batches, router answers, wake-ups and federation sends.
//! - `joins`: membership changes and the presence they release.
//! - `remote_cap`: the per-server cap on remote users learnt from federation.
//! - `sync_view`: what a syncing user sees; `GET` visibility; explanations.
//! - `audience`: the one rule deciding who sees whom.
//! - `users`, `rooms`, `timers`, `stream`: the tables behind it.
//! - [`routing`]: the shapes of presence-router answers (inputs).
//! - `sim` (feature `testing`): a deterministic simulator of one or two
//!   homeservers, for tests.

mod audience;
mod chunked;
mod config;
mod engine;
mod fanout;
mod joins;
pub mod machine;
mod output;
pub mod presence;
mod remote_cap;
mod rooms;
pub mod routing;
#[cfg(feature = "testing")]
pub mod sim;
mod stats;
mod stream;
mod sync_view;
pub mod time;
mod timers;
mod users;

pub use config::{EngineConfig, Tracking};
pub use engine::{Engine, RemotePresence};
pub use joins::Membership;
pub use output::{BatchId, Output};
pub use presence::{Presence, PresenceState};
pub use routing::{Interest, UsersForStates};
pub use stats::EngineStats;
pub use stream::StreamPos;
pub use sync_view::{SyncView, Visibility};
pub use time::Timestamp;
