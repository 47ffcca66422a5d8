//! Edge-triggered sync participation (design §5.3, Synapse's USER_SYNC
//! fixed): which long-polls a front node tells partition owners about.
//!
//! A client's device keeps a long-poll open most of the time; telling the
//! owner about every request start and end would cost two bus round trips
//! per sync. The front node instead counts in-flight long-polls per
//! (user, device) and relays only the edges: the first one starting
//! (0 → 1) and, after a grace period without any, the last one ending
//! (1 → 0, "stopped at t", the time the last request ended, so the owner's
//! timeouts count from then, W13). When a partition gets a new owner, every
//! node re-announces its devices of that partition (`announce_partition`),
//! since the new owner starts without them.
//!
//! Sans-IO: time comes in, edges come out.

use std::collections::BTreeMap;
use std::time::Duration;

use presenced_engine::Timestamp;

use crate::partition::partition_of;

/// An edge to relay to the user's partition owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEdge {
    Started {
        user: String,
        device: Option<String>,
    },
    /// The last long-poll ended at `at` and none started within the grace.
    Stopped {
        user: String,
        device: Option<String>,
        at: Timestamp,
    },
}

#[derive(Debug, Default)]
struct Device {
    in_flight: u32,
    /// Set while `in_flight` is 0: when the last request ended.
    ended_at: Option<Timestamp>,
}

/// The front node's count of in-flight long-polls.
#[derive(Debug)]
pub struct SyncRelay {
    grace: Duration,
    devices: BTreeMap<(String, Option<String>), Device>,
}

impl SyncRelay {
    /// `grace`: how long a device may have no long-poll before its stop is
    /// relayed (the design's 10 s: clients reconnect between long-polls).
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            devices: BTreeMap::new(),
        }
    }

    /// A long-poll starts. Returns the edge to relay, if this is one.
    pub fn start(&mut self, user: &str, device: Option<&str>) -> Option<SyncEdge> {
        let key = (user.to_owned(), device.map(str::to_owned));
        let entry = self.devices.entry(key).or_default();
        entry.in_flight += 1;
        // A device back within the grace never stopped, as far as the
        // owner knows: no edge.
        let was_idle_and_relayed = entry.in_flight == 1 && entry.ended_at.is_none();
        entry.ended_at = None;
        was_idle_and_relayed.then(|| SyncEdge::Started {
            user: user.to_owned(),
            device: device.map(str::to_owned),
        })
    }

    /// A long-poll ends at `now`.
    pub fn end(&mut self, user: &str, device: Option<&str>, now: Timestamp) {
        let key = (user.to_owned(), device.map(str::to_owned));
        if let Some(entry) = self.devices.get_mut(&key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.in_flight == 0 {
                entry.ended_at = Some(now);
            }
        }
    }

    /// Stops whose grace has run out by `now`; those devices are forgotten.
    pub fn poll(&mut self, now: Timestamp) -> Vec<SyncEdge> {
        let grace = self.grace;
        let mut edges = Vec::new();
        self.devices
            .retain(|(user, device), entry| match entry.ended_at {
                Some(at) if entry.in_flight == 0 && now >= at + grace => {
                    edges.push(SyncEdge::Stopped {
                        user: user.clone(),
                        device: device.clone(),
                        at,
                    });
                    false
                }
                _ => true,
            });
        edges
    }

    /// When the next stop may be due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.devices
            .values()
            .filter_map(|entry| entry.ended_at.map(|at| at + self.grace))
            .min()
    }

    /// `partition` has a new owner: the `Started` edges of every device of
    /// it that is syncing here or within its grace.
    pub fn announce_partition(&self, partition: u16) -> Vec<SyncEdge> {
        self.devices
            .keys()
            .filter(|(user, _)| partition_of(user) == partition)
            .map(|(user, device)| SyncEdge::Started {
                user: user.clone(),
                device: device.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    const U: &str = "@u:example.org";

    fn started(device: &str) -> Option<SyncEdge> {
        Some(SyncEdge::Started {
            user: U.to_owned(),
            device: Some(device.to_owned()),
        })
    }

    #[test]
    fn only_the_first_start_and_the_last_end_are_relayed() {
        let mut relay = SyncRelay::new(GRACE);
        assert_eq!(relay.start(U, Some("d")), started("d"));
        assert_eq!(
            relay.start(U, Some("d")),
            None,
            "a second long-poll of the device"
        );
        relay.end(U, Some("d"), Timestamp(1_000));
        relay.end(U, Some("d"), Timestamp(2_000));
        assert_eq!(relay.next_due(), Some(Timestamp(12_000)));
        assert!(relay.poll(Timestamp(11_999)).is_empty());
        assert_eq!(
            relay.poll(Timestamp(12_000)),
            [SyncEdge::Stopped {
                user: U.to_owned(),
                device: Some("d".to_owned()),
                at: Timestamp(2_000)
            }],
            "stopped at the end of the last request, not at the grace"
        );
        assert!(relay.poll(Timestamp(20_000)).is_empty(), "once");
        assert_eq!(
            relay.start(U, Some("d")),
            started("d"),
            "a new start after the stop"
        );
    }

    #[test]
    fn a_client_reconnecting_within_the_grace_makes_no_edges() {
        let mut relay = SyncRelay::new(GRACE);
        assert!(relay.start(U, Some("d")).is_some());
        for n in 0..100u64 {
            relay.end(U, Some("d"), Timestamp(n * 30_000 + 29_000));
            assert!(relay.poll(Timestamp(n * 30_000 + 29_500)).is_empty());
            assert_eq!(relay.start(U, Some("d")), None);
        }
    }

    #[test]
    fn devices_are_counted_apart() {
        let mut relay = SyncRelay::new(GRACE);
        assert_eq!(relay.start(U, Some("a")), started("a"));
        assert_eq!(relay.start(U, Some("b")), started("b"));
        relay.end(U, Some("a"), Timestamp::ZERO);
        let stopped = relay.poll(Timestamp::ZERO + GRACE);
        assert_eq!(stopped.len(), 1);
        assert!(
            matches!(&stopped[0], SyncEdge::Stopped { device, .. } if device.as_deref() == Some("a"))
        );
    }

    #[test]
    fn a_new_owner_hears_of_every_device_of_its_partition() {
        let mut relay = SyncRelay::new(GRACE);
        let users: Vec<String> = (0..50).map(|n| format!("@u{n}:example.org")).collect();
        for user in &users {
            relay.start(user, None);
        }
        // One of them ended but is within its grace: still announced.
        relay.end(&users[0], None, Timestamp::ZERO);
        let p = partition_of(&users[0]);
        let announced = relay.announce_partition(p);
        let expected = users.iter().filter(|u| partition_of(u) == p).count();
        assert_eq!(announced.len(), expected);
        assert!(announced
            .iter()
            .all(|edge| matches!(edge, SyncEdge::Started { user, .. } if partition_of(user) == p)));
    }
}
