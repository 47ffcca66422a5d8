//! Small helpers every layer may use: the wall clock, ID and token
//! minting, a bounded expiring map, and leaky-bucket rate limiters.
//!
//! Architecture invariant: nothing here imports another module of this
//! crate; these are plain helpers over std, ruma and the engine's
//! `Timestamp`, with no policy of their own.

pub mod clock;
pub(crate) mod expiring_map;
pub mod ids;
pub mod rate_limit;
