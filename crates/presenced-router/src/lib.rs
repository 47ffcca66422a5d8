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
//! - [`callbacks`]: the two callback types, [`ModuleError`],
//!   [`PRESENCE_ALL_USERS`].
//! - [`module_api`]: [`ModuleApi`] (registration, deadline, server name,
//!   local user directory) and [`ModuleHandle`]
//!   (`send_local_online_presence_to`, `set_presence_for_users`), which
//!   push [`ModuleCommand`]s to the server's driver.
//! - [`router`]: [`PresenceRouter`], Synapse's aggregation with isolation,
//!   and per-module counters ([`ModuleStats`]).
//! - [`explain`]: which modules let one user see another.
//! - [`config`]: [`ModuleEntry`] and [`ModuleRegistry`], loading `modules:`
//!   then the legacy `presence.presence_router`.
//! - [`ids`]: [`ConfigUserId`], user ids in module configs.
//! - [`builtin`]: `presenced.routers.StaticRoutes`, `.Observers`,
//!   `.Groups`, `.ServerWide`.
//!
//! # Using it from the server
//! Make a [`command_channel`], give [`ModuleRegistry::load`] the entries
//! (in [`ModuleEntry::load_order`]), the server name, the command sender
//! and optionally a [`LocalUsers`] directory; a load error refuses
//! start-up. Drain the command receiver in the driver. Skip routing when
//! [`PresenceRouter::is_empty`]; read [`PresenceRouter::stats`] for metrics.
//!
//! # Writing a module
//! A module is a constructor, `fn(serde_json::Value, &mut ModuleApi) ->
//! Result<(), ConstructError>` (a [`ModuleConstructor`]), the Rust form of
//! Synapse's `Class(config, module_api)`:
//! 1. Parse the config with [`parse_config`] into a
//!    `#[serde(deny_unknown_fields)]` struct, with user ids as
//!    [`ConfigUserId`]: a typo then fails start-up with a message naming
//!    the module, the field or the bad value.
//! 2. Register both callbacks with
//!    [`ModuleApi::register_presence_router_callbacks`] (registering only
//!    one is an error naming both, as in Synapse). Each returns a boxed
//!    `'static` future, so capture `Arc`s of the module's data.
//! 3. Optionally keep [`ModuleApi::handle`] to call
//!    `send_local_online_presence_to` / `set_presence_for_users` later, and
//!    set a deadline other than one second with [`ModuleApi::set_deadline`].
//!
//! Callbacks may do I/O but must not block the thread: the deadline can
//! only abandon a future at an `.await`. An error, a panic or a missed
//! deadline is logged with the module's name and counted, and that call's
//! answer is empty; the other modules keep routing.
//!
//! Add the constructor to a [`ModuleRegistry`] under the name operators
//! write in `modules:` before loading. `examples/custom_router.rs` is the
//! module API docs' example (alice receives bob's and charlie's presence)
//! written this way.

pub mod builtin;
pub mod callbacks;
pub mod config;
pub mod explain;
pub mod ids;
pub mod module_api;
pub mod router;

pub use callbacks::{
    GetInterestedUsers, GetUsersForStates, ModuleError, PRESENCE_ALL_USERS, PRESENCE_ALL_USERS_STR,
};
pub use config::{
    parse_config, ConstructError, ExternalConstructor, LoadError, ModuleConstructor, ModuleEntry,
    ModuleRegistry,
};
pub use explain::{ModuleReason, RouteReason};
pub use ids::ConfigUserId;
pub use module_api::{
    command_channel, InvalidPresence, LocalUsers, ModuleApi, ModuleCommand, ModuleHandle,
    RegistrationError, DEFAULT_DEADLINE,
};
/// Engine types that appear in the module API, re-exported for module authors.
pub use presenced_engine::{Interest, Presence, PresenceState, UsersForStates};
pub use router::{ModuleStats, PresenceRouter};
