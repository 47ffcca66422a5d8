//! The presence router module API of presenced, with Synapse's semantics,
//! and the built-in routers.
//!
//! A presence router widens who sees whose presence. A module registers two
//! paired callbacks through the [`ModuleApi`] it is given at construction:
//! `get_users_for_states` (for these updates, which extra users — local or
//! remote — should receive them) and `get_interested_users` (whose presence
//! may this local user see, or [`PRESENCE_ALL_USERS`]). The
//! [`PresenceRouter`] merges every module's answers exactly as Synapse does,
//! and isolates modules: each call has a deadline, and an error, a panic or
//! a missed deadline makes that module's answer empty without stopping
//! presence.
//!
//! # Layout
//! - [`callbacks`]: the callback types and [`ModuleError`].
//! - [`module_api`]: [`ModuleApi`] (registration) and [`ModuleHandle`]
//!   (`send_local_online_presence_to`, `set_presence_for_users`).
//! - [`router`]: [`PresenceRouter`], aggregation and per-module counters.
//! - [`config`]: [`ModuleRegistry`], loading `modules:` entries.
//! - [`builtin`]: `StaticRoutes`, `Observers`, `Groups`, `ServerWide`.
//!
//! # Writing a module
//! A module is a constructor `fn(serde_json::Value, &mut ModuleApi) ->
//! Result<(), ConstructError>` that parses its config (use [`parse_config`]
//! with a `#[serde(deny_unknown_fields)]` struct) and registers both
//! callbacks. Add it to a [`ModuleRegistry`] under the name operators write
//! in `modules:`, then build presenced with that registry. See
//! `examples/custom_router.rs`.

pub mod builtin;
pub mod callbacks;
pub mod config;
pub mod module_api;
pub mod router;

pub use callbacks::{GetInterestedUsers, GetUsersForStates, ModuleError, PRESENCE_ALL_USERS};
pub use config::{
    parse_config, ConstructError, LoadError, ModuleConstructor, ModuleEntry, ModuleRegistry,
};
pub use module_api::{
    command_channel, InvalidPresence, LocalUsers, ModuleApi, ModuleCommand, ModuleHandle,
    RegistrationError,
};
pub use presenced_engine::{Interest, PresenceState, UsersForStates};
pub use router::{ModuleReason, ModuleStats, PresenceRouter};
