//! The wall clock, read here and nowhere else in the server.
//!
//! The engine never reads a clock: its driver passes `now` into every
//! input. The server's drivers (request handlers, the presence task, the
//! federation sender) get that `now` from [`now`], so every wall-clock
//! value in the server is a [`Timestamp`] from one source. Monotonic
//! timing (timeouts, elapsed time) uses `std::time::Instant` instead and
//! does not come through here.

use std::time::{SystemTime, UNIX_EPOCH};

use presenced_engine::Timestamp;

/// Now, in milliseconds since the Unix epoch (a clock set before 1970
/// reads as [`Timestamp::ZERO`]).
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}
