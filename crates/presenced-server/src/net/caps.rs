//! The connection caps: open connections in total and per client address.
//!
//! Shared by every listener of a server (descriptors are a process-wide
//! resource). Admitting a connection costs one atomic add and, for a
//! non-exempt peer, one short map lock; each connection pays it once, not
//! each request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::connections::ConnectionLimits;
#[cfg(test)]
use crate::config::ip_ranges::IpRanges;

/// Why a connection was closed or refused, for logs and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Refused: `max_connections` reached.
    TotalCap,
    /// Refused: `max_connections_per_address` reached for its address.
    AddressCap,
    /// Its request headers took longer than `header_read_timeout`.
    HeaderTimeout,
    /// Idle between requests for `keep_alive_timeout`.
    KeepAliveTimeout,
    /// A request body stalled for `body_read_timeout`.
    BodyTimeout,
    /// A request body arrived slower than `body_min_rate` on average.
    BodyTooSlow,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
}

impl CloseReason {
    /// Every reason, in `/metrics` order.
    pub const ALL: [Self; 7] = [
        Self::TotalCap,
        Self::AddressCap,
        Self::HeaderTimeout,
        Self::KeepAliveTimeout,
        Self::BodyTimeout,
        Self::BodyTooSlow,
        Self::HandshakeTimeout,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TotalCap => "max_connections",
            Self::AddressCap => "max_connections_per_address",
            Self::HeaderTimeout => "header_read_timeout",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::BodyTimeout => "body_read_timeout",
            Self::BodyTooSlow => "body_min_rate",
            Self::HandshakeTimeout => "tls_handshake_timeout",
        }
    }
}

/// Open connections and the limits they are held to.
#[derive(Debug)]
pub struct ConnectionTracker {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Milliseconds since `started` of the last "cap reached" warning.
    last_warning_ms: AtomicU64,
    started: Instant,
}

/// At most one "cap reached" warning per this interval (an attack would
/// otherwise write a line per refused connection).
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl ConnectionTracker {
    /// A tracker with nothing open.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            open: AtomicUsize::new(0),
            per_address: Mutex::default(),
            closed: Default::default(),
            last_warning_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed or refused for `reason` since start.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection closed (or refused) for `reason`.
    pub(crate) fn count_close(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a place for a connection from `peer`, or says which cap is
    /// full. The place is given back when the [`Admission`] is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, CloseReason> {
        let peer = canonical(peer);
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refuse(CloseReason::TotalCap, peer));
        }
        let counted = !self.limits.per_address_exempt.contains(&peer);
        if counted {
            let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(peer).or_insert(0);
            if *n >= self.limits.max_connections_per_address {
                drop(map);
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err(self.refuse(CloseReason::AddressCap, peer));
            }
            *n += 1;
        }
        Ok(Admission {
            tracker: Arc::clone(self),
            counted_peer: counted.then_some(peer),
        })
    }

    /// The connection families of `/metrics`, in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (name, help, value) in [
            (
                "presenced_connections_open",
                "Client connections open now, all listeners.",
                self.open(),
            ),
            (
                "presenced_connections_max",
                "connections.max_connections as applied.",
                self.limits.max_connections,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "presenced_connections_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections refused at a cap or closed by a timeout, by reason.\n# TYPE {name} counter"
        );
        for reason in CloseReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.label(),
                self.closed(reason)
            );
        }
        out
    }

    fn refuse(&self, reason: CloseReason, peer: IpAddr) -> CloseReason {
        self.count_close(reason);
        // Monotonic milliseconds since `started`, not a wall-clock time: an
        // atomic holds a u64, not an `Instant`.
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX
            || elapsed_ms.saturating_sub(last) >= WARNING_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_warning_ms
                .compare_exchange(last, elapsed_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %peer,
                cap = reason.label(),
                open = self.open(),
                "connection cap reached: new connections are closed at once (logged at most every 10 s)"
            );
        } else {
            tracing::debug!(%peer, cap = reason.label(), "connection refused");
        }
        reason
    }

    fn release(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&peer);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// IPv4 peers of a dual-stack socket arrive as IPv4-mapped IPv6
/// addresses; they count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One admitted connection's place under the caps.
#[derive(Debug)]
pub struct Admission {
    tracker: Arc<ConnectionTracker>,
    counted_peer: Option<IpAddr>,
}

impl Admission {
    /// The tracker that admitted it.
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.tracker.release(self.counted_peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::connections::ConnectionsConfig;

    fn tracker(total: usize, per_address: usize, exempt: &[&str]) -> Arc<ConnectionTracker> {
        let config = ConnectionsConfig {
            max_connections: Some(total),
            max_connections_per_address: Some(per_address),
            per_address_exempt: IpRanges::parse_all(exempt).unwrap(),
            ..ConnectionsConfig::default()
        };
        Arc::new(ConnectionTracker::new(config.resolve(None)))
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let t = tracker(3, 2, &["10.0.0.0/8"]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = t.admit(a).unwrap();
        let _second = t.admit(a).unwrap();
        assert_eq!(t.admit(a).unwrap_err(), CloseReason::AddressCap);
        // A mapped address is the same client.
        assert_eq!(
            t.admit("::ffff:192.0.2.1".parse().unwrap()).unwrap_err(),
            CloseReason::AddressCap
        );
        let _third = t.admit(b).unwrap();
        assert_eq!(t.admit(b).unwrap_err(), CloseReason::TotalCap);
        assert_eq!(t.open(), 3);
        drop(first);
        assert_eq!(t.open(), 2);
        let _again = t.admit(a).unwrap();
        assert_eq!(t.closed(CloseReason::AddressCap), 2);
        assert_eq!(t.closed(CloseReason::TotalCap), 1);
    }

    #[test]
    fn exempt_peers_count_only_in_the_total() {
        let t = tracker(3, 1, &["10.0.0.0/8"]);
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| t.admit(proxy).unwrap()).collect();
        assert_eq!(t.admit(proxy).unwrap_err(), CloseReason::TotalCap);
        drop(held);
        assert_eq!(t.open(), 0);
        assert!(t.per_address.lock().unwrap().is_empty());
    }
}
