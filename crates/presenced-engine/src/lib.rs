//! The presenced presence engine: sans-IO, deterministic, no clock.
//!
//! This crate holds every user's presence and decides who sees what. It does
//! no networking, no storage and never reads the clock: every input carries
//! `now`, and the engine answers with outputs the driver must act on (whom to
//! wake, what to persist, which presence to send to which server) plus the
//! time of its next timer. quinn-proto is the model.
//!
//! # Layout
//! - [`time`]: [`Timestamp`], the only notion of time.
//! - [`presence`]: presence values and the user-level record.
//! - [`routing`]: the shapes of presence-router answers (inputs).
pub mod presence;
pub mod routing;
pub mod time;

pub use presence::{Presence, PresenceState};
pub use routing::{Interest, UsersForStates};
pub use time::Timestamp;
