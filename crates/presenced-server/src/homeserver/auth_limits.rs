//! The login and registration rate limiters (`rc_login`,
//! `rc_registration`), built from the config.

use std::net::IpAddr;

use ruma_common::OwnedUserId;

use crate::config::Config;
use crate::util::rate_limit::RateLimiter;

/// Synapse's login and registration limiters.
pub(crate) struct AuthLimiters {
    /// `rc_login.address`: every login attempt, per client address.
    pub(crate) login_address: RateLimiter<IpAddr>,
    /// `rc_login.account`: successful logins, per account.
    pub(crate) login_account: RateLimiter<OwnedUserId>,
    /// `rc_login.failed_attempts`: failed logins, per account named.
    pub(crate) login_failed: RateLimiter<OwnedUserId>,
    /// `rc_registration`: registrations, per client address.
    pub(crate) registration: RateLimiter<IpAddr>,
}

impl AuthLimiters {
    pub(crate) fn new(config: &Config) -> Self {
        let cap = config.request_limits.max_rate_limit_keys;
        let rc = &config.rc_login;
        Self {
            login_address: RateLimiter::with_max_keys(
                rc.address.per_second,
                rc.address.burst_count,
                cap,
            ),
            login_account: RateLimiter::with_max_keys(
                rc.account.per_second,
                rc.account.burst_count,
                cap,
            ),
            login_failed: RateLimiter::with_max_keys(
                rc.failed_attempts.per_second,
                rc.failed_attempts.burst_count,
                cap,
            ),
            registration: RateLimiter::with_max_keys(
                config.rc_registration.per_second,
                config.rc_registration.burst_count,
                cap,
            ),
        }
    }
}
