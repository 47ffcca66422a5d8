//! Time as the engine sees it: a wall-clock instant passed in by the caller.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Milliseconds since the Unix epoch, as handed to the engine by its driver.
///
/// Presence needs wall-clock values anyway (`last_active_ago` is computed
/// from them), so one type serves both for deadlines and for timestamps.
/// The engine never reads a clock: every input carries its `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The "never" timestamp (0), Synapse's default for every field.
    pub const ZERO: Self = Self(0);

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(rhs.as_millis() as u64))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0.saturating_sub(rhs.as_millis() as u64))
    }
}
