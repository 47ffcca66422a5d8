//! Companion mode: presenced in front of an existing Synapse whose own
//! presence is off, answering presence and forwarding everything else.
//!
//! This folder is the second source of accounts, tokens and room
//! memberships (the first is presenced's own `homeserver`): Synapse owns
//! the accounts, answers for each access token (`tokens`), and tells
//! presenced every membership change through the application-service
//! transactions it pushes (`members`), after a first read of every room's
//! members through its admin API (`bootstrap`). `forward` passes every
//! request presenced does not answer to Synapse unchanged, bodies
//! streamed. It knows no presence rule: memberships go to the presence
//! driver as they would from presenced's own rooms.
//!
//! Its own folder, not a crate: it needs the server's config, store and
//! presence driver, and the axum types of the layer above reach it only
//! as plain requests; a crate would have to re-export all of that.

pub mod bootstrap;
pub mod forward;
pub mod members;
pub mod registration;
pub mod splice;
pub mod tokens;
pub mod upstream;
