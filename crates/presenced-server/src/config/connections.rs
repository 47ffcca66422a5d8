//! `connections:` — how long a client may take and how many connections
//! it may hold (presenced-specific; Synapse leaves this to its reverse
//! proxy, but presenced's listeners may face the internet directly).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::ip_ranges::IpRanges;

/// hyper's smallest read buffer; a smaller header limit cannot be applied.
pub const MIN_HEADER_BYTES: usize = 8192;

/// `connections:`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ConnectionsConfig {
    /// From a connection's start, or from the first byte of a request on
    /// a kept-alive one, to the end of that request's headers; past it the
    /// connection is closed (slowloris, silent connections).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in progress and no bytes in
    /// either direction for this long is closed.
    #[serde(with = "duration")]
    pub keep_alive_timeout: Duration,
    /// A request whose body stops arriving for this long closes its
    /// connection (a stalled upload holds a handler otherwise).
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// The slowest a request body may arrive on average, in bytes per
    /// second, after a grace of `body_read_timeout`: a body whose bytes
    /// each come just inside `body_read_timeout` would otherwise hold its
    /// connection for ever. The whole body is due by its start plus
    /// `body_read_timeout` plus its bytes so far at this rate.
    pub body_min_rate: u64,
    /// The request line and headers together; more gets 431.
    pub max_header_bytes: usize,
    /// Open connections over all listeners; `None` derives it from the
    /// file-descriptor limit (see [`ConnectionsConfig::resolve`]).
    pub max_connections: Option<usize>,
    /// Open connections from one client address; `None` is
    /// `min(1000, max_connections / 4)`.
    pub max_connections_per_address: Option<usize>,
    /// Peers the per-address cap does not apply to: a reverse proxy opens
    /// every client's connection from its own address.
    pub per_address_exempt: IpRanges,
    /// Long-polling `/sync` requests open at once for one device; a newer
    /// one past this answers the oldest at once (nothing new, same token).
    pub max_long_polls_per_device: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            max_header_bytes: 32 * 1024,
            max_connections: None,
            max_connections_per_address: None,
            per_address_exempt: IpRanges::parse_all(&["127.0.0.0/8", "::1/128"])
                .expect("valid built-in ranges"),
            max_long_polls_per_device: 4,
        }
    }
}

/// Descriptors kept for everything that is not a client connection:
/// SQLite, outbound federation, the listeners, logs.
const MIN_RESERVED_FDS: usize = 256;

/// The limits as applied, after the defaults that depend on the process.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// See [`ConnectionsConfig::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ConnectionsConfig::keep_alive_timeout`].
    pub keep_alive_timeout: Duration,
    /// See [`ConnectionsConfig::body_read_timeout`].
    pub body_read_timeout: Duration,
    /// See [`ConnectionsConfig::body_min_rate`].
    pub body_min_rate: u64,
    /// See [`ConnectionsConfig::max_header_bytes`].
    pub max_header_bytes: usize,
    /// Connections over all listeners.
    pub max_connections: usize,
    /// Connections per client address (exempt peers aside).
    pub max_connections_per_address: usize,
    /// See [`ConnectionsConfig::per_address_exempt`].
    pub per_address_exempt: IpRanges,
}

impl ConnectionsConfig {
    /// Checks the values alone.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("connections.{key} must be greater than 0"));
            }
        }
        if self.body_min_rate == 0 {
            return Err("connections.body_min_rate must be greater than 0".to_owned());
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "connections.max_header_bytes must be at least {MIN_HEADER_BYTES}"
            ));
        }
        if self.max_connections == Some(0) || self.max_connections_per_address == Some(0) {
            return Err(
                "connections.max_connections and max_connections_per_address must be greater than 0"
                    .to_owned(),
            );
        }
        if self.max_long_polls_per_device == 0 {
            return Err("connections.max_long_polls_per_device must be greater than 0".to_owned());
        }
        Ok(())
    }

    /// The limits for a process whose soft `RLIMIT_NOFILE` is `fd_limit`
    /// (`None`: unknown). The default total leaves a tenth of the
    /// descriptors (at least 256) to everything else, so accepting never
    /// meets EMFILE; a configured total above that is lowered to it, with a
    /// warning, for the same reason.
    pub fn resolve(&self, fd_limit: Option<u64>) -> ConnectionLimits {
        let fd_cap = fd_limit.map(|n| {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            n.saturating_sub((n / 10).max(MIN_RESERVED_FDS)).max(1)
        });
        let max_connections = match (self.max_connections, fd_cap) {
            (Some(configured), Some(cap)) if configured > cap => {
                tracing::warn!(
                    configured,
                    applied = cap,
                    "connections.max_connections is above what the file-descriptor limit allows"
                );
                cap
            }
            (Some(configured), _) => configured,
            (None, Some(cap)) => cap,
            (None, None) => 10_000,
        };
        let max_connections_per_address = self
            .max_connections_per_address
            .unwrap_or_else(|| (max_connections / 4).clamp(1, 1000));
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            body_read_timeout: self.body_read_timeout,
            body_min_rate: self.body_min_rate,
            max_header_bytes: self.max_header_bytes,
            max_connections,
            max_connections_per_address,
            per_address_exempt: self.per_address_exempt.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_stays_below_the_descriptor_limit() {
        let config = ConnectionsConfig::default();
        let small = config.resolve(Some(1024));
        assert_eq!(small.max_connections, 768);
        assert_eq!(small.max_connections_per_address, 192);
        let large = config.resolve(Some(1_048_576));
        assert_eq!(large.max_connections, 943_719);
        assert_eq!(large.max_connections_per_address, 1000);
        let configured = ConnectionsConfig {
            max_connections: Some(5_000),
            ..config
        };
        assert_eq!(configured.resolve(Some(1024)).max_connections, 768);
        assert_eq!(configured.resolve(Some(65_536)).max_connections, 5_000);
    }
}
