#![allow(unreachable_pub)] // helpers are shared between test modules
//! Black-box tests: a real server on 127.0.0.1:0 with a fresh SQLite
//! directory per test, driven over HTTP. One test binary (ruma's
//! `tests/it` layout) so the crate links once.

mod accounts;
mod cli;
mod config;
mod errors;
mod helpers;
mod ops;
mod presence;
mod rooms;
mod server_wide;
mod store;
