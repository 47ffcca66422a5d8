//! Integration tests of the presence engine: Synapse's presence test
//! catalogue (`synapse-presence-tests.md`) ported to our engine, plus the
//! engine's own rules. Each module names the catalogue section it ports.
//!
//! Where presenced deliberately fixes a Synapse weakness (W-numbers of
//! `synapse-presence-spec.md` §17), the expectation follows our behaviour and
//! a comment says so. Timers fire at their exact deadlines (no 5 s wheel), so
//! the tests check both sides of every deadline.

mod common;

mod cluster_roles;
mod config_timers;
mod excluded_rooms;
mod handler;
mod joins;
mod long_polls;
mod module_api;
mod multi_device;
mod newly_met;
mod props;
mod remote_cap;
mod restore;
mod router_scenarios;
mod stream;
mod sync_view;
mod timeouts;
mod tracking;
mod update_rules;
