//! Small helpers every layer may use: ID and token minting, the clock in
//! milliseconds, a bounded expiring map, and leaky-bucket rate limiters.
//!
//! Architecture invariant: nothing here imports another module of this
//! crate; these are plain std/ruma helpers with no policy of their own.

pub(crate) mod expiring_map;
pub mod ids;
pub mod rate_limit;
