#![allow(unreachable_pub)] // helpers are shared between test modules
//! Black-box tests: a real server on 127.0.0.1:0 with a fresh SQLite
//! directory per test, driven over HTTP. One test binary (ruma's
//! `tests/it` layout) so the crate links once.

mod accounts;
mod admin;
mod architecture_map;
mod bad_text;
mod cli;
mod cluster;
mod cluster_backend;
mod companion;
mod companion_cluster;
mod companion_feed;
mod companion_splice;
mod config;
mod connections;
mod contrib;
mod cors;
mod crash;
mod deactivate;
mod errors;
mod federation_inbound;
mod federation_outbox;
mod federation_two_servers;
mod filters;
mod full_presence;
mod helpers;
mod layering;
mod limits;
mod listeners;
mod metrics;
mod ops;
mod postgres;
mod presence;
mod presence_catalogue;
mod python_modules;
mod rooms;
mod secrets;
mod server_name;
mod server_wide;
mod sync_conformance;
mod sync_wake;
mod two_servers;
