//! Abuse limits: Synapse's `rc_login` and `rc_registration` rate limits
//! (same keys, same defaults), and presenced's `request_limits` (body size,
//! `status_msg` length, and the caps on what unauthenticated requests can
//! make the server remember).

use serde::{Deserialize, Serialize};

/// A leaky bucket with its own defaults. Synapse fills a missing
/// `per_second` or `burst_count` from the defaults of that limiter, not
/// from a shared one, so each limiter gets its own type.
macro_rules! rate_limit_with_defaults {
    ($(#[$doc:meta])* $name:ident, $per_second:expr, $burst_count:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
        #[serde(default)]
        pub struct $name {
            /// Sustained rate, actions per second (0: no limit).
            pub per_second: f64,
            /// Actions allowed at once; truncated to an integer as Synapse does.
            pub burst_count: f64,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    per_second: $per_second,
                    burst_count: $burst_count,
                }
            }
        }

        impl $name {
            /// Checks the values; `key` names the section in the message.
            pub fn validate(&self, key: &str) -> Result<(), String> {
                if self.per_second >= 0.0 && self.burst_count >= 0.0 {
                    Ok(())
                } else {
                    Err(format!("{key}: per_second and burst_count must be >= 0"))
                }
            }
        }
    };
}

rate_limit_with_defaults!(
    /// `rc_login.address` / `rc_login.account`: Synapse's 0.003/s, burst 5.
    LoginRateLimit,
    0.003,
    5.0
);

rate_limit_with_defaults!(
    /// `rc_login.failed_attempts` and `rc_registration`: Synapse's generic
    /// default, 0.17/s, burst 3.
    DefaultRateLimit,
    0.17,
    3.0
);

/// `rc_login:` — Synapse's three login limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RcLogin {
    /// Login attempts per client address (every attempt counts).
    pub address: LoginRateLimit,
    /// Successful logins per account.
    pub account: LoginRateLimit,
    /// Failed logins per account: once exhausted, even the right password
    /// is refused until the bucket drains.
    pub failed_attempts: DefaultRateLimit,
}

impl RcLogin {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        self.address.validate("rc_login.address")?;
        self.account.validate("rc_login.account")?;
        self.failed_attempts.validate("rc_login.failed_attempts")
    }
}

/// `rc_registration:` — registrations per client address.
pub type RcRegistration = DefaultRateLimit;

/// `request_limits:` — presenced-specific.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct RequestLimits {
    /// Largest client-API request body, in bytes (413 `M_TOO_LARGE` above).
    /// presenced has no media repository, and its largest client bodies
    /// (events, key uploads) are tens of KiB. Federation transactions have
    /// their own, larger limit (`api/federation.rs`).
    pub max_body_size: usize,
    /// Longest `status_msg` in bytes of UTF-8 (400 `M_BAD_JSON` above).
    /// Synapse has no limit of its own; 1 KiB keeps a 50-entry presence
    /// EDU under Synapse's 64 KiB soft EDU size.
    pub max_status_msg_length: usize,
    /// Open user-interactive-auth sessions kept (oldest dropped first).
    pub max_uia_sessions: usize,
    /// Unused shared-secret registration nonces kept (oldest dropped first).
    pub max_registration_nonces: usize,
    /// Buckets each rate limiter keeps (drained ones dropped first).
    pub max_rate_limit_keys: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_size: 1024 * 1024,
            max_status_msg_length: 1024,
            max_uia_sessions: 10_000,
            max_registration_nonces: 10_000,
            max_rate_limit_keys: 100_000,
        }
    }
}

impl RequestLimits {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("max_body_size", self.max_body_size),
            ("max_uia_sessions", self.max_uia_sessions),
            ("max_registration_nonces", self.max_registration_nonces),
            ("max_rate_limit_keys", self.max_rate_limit_keys),
        ] {
            if value == 0 {
                return Err(format!("request_limits.{key} must be greater than 0"));
            }
        }
        Ok(())
    }
}
