//! `federation:` — Synapse's section for the federation client; presenced
//! reads its per-destination retry intervals.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Retry intervals of outgoing presence (Synapse's key names).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct FederationConfig {
    /// First wait before retrying a destination that failed. presenced
    /// default 1s (Synapse: 10m): presence is kept until delivered, so a
    /// short first retry costs little and delivers sooner.
    #[serde(with = "duration")]
    pub destination_min_retry_interval: Duration,
    /// Each further failure multiplies the wait by this.
    pub destination_retry_multiplier: u32,
    /// Longest wait between retries. presenced default 10m (Synapse: 1w,
    /// after which it drops presence; presenced keeps it).
    #[serde(with = "duration")]
    pub destination_max_retry_interval: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            destination_min_retry_interval: Duration::from_secs(1),
            destination_retry_multiplier: 2,
            destination_max_retry_interval: Duration::from_secs(600),
        }
    }
}

impl FederationConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.destination_min_retry_interval.is_zero() {
            return Err(
                "federation.destination_min_retry_interval must be greater than 0".to_owned(),
            );
        }
        if self.destination_retry_multiplier < 1 {
            return Err("federation.destination_retry_multiplier must be at least 1".to_owned());
        }
        if self.destination_max_retry_interval < self.destination_min_retry_interval {
            return Err("federation.destination_max_retry_interval must be at least destination_min_retry_interval".to_owned());
        }
        Ok(())
    }
}
