//! The process shell: from a config to a running server.
//!
//! `startup` opens the store, loads keys and secrets, starts the presence
//! driver and builds the handlers' [`AppState`](crate::AppState); `feeds`
//! connects the homeserver's reports to the driver; `telemetry` sets up
//! logging; `memory` keeps the heap off transparent huge pages. `main.rs`
//! (CLI, signals, one task per listener) sits on top.
//!
//! Architecture invariant: this is the only layer that knows every other
//! one; nothing imports it except `main.rs` and the crate root.

pub mod database;
pub mod feeds;
pub mod memory;
pub mod startup;
pub mod telemetry;
