//! The bound on `/sync` long-polls open at once per device
//! (`connections.max_long_polls_per_device`).
//!
//! A client keeps one long-poll open, two for a moment when it retries
//! over a new connection while the old one is not yet seen closed. A
//! device with more is retrying in a loop or misbehaving; each open
//! long-poll holds a connection and a waiter. Past the bound, the oldest
//! of the device's long-polls answers at once with what it has (usually
//! nothing new, and its own token as `next_batch`), so the client loses
//! nothing and the newest request, the one it waits for, stays open.
//!
//! It lives with the sync service because only the long-poll loop reads
//! it: the service owns the table and asks each request's place in it
//! whether to stop waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use crate::presence::PresenceService;

type Key = (OwnedUserId, OwnedDeviceId);

/// The open long-polls of every device, oldest first.
#[derive(Debug)]
pub(crate) struct LongPolls {
    max_per_device: usize,
    open: Mutex<HashMap<Key, VecDeque<Arc<AtomicBool>>>>,
}

impl LongPolls {
    pub(crate) fn new(max_per_device: usize) -> Self {
        Self {
            max_per_device: max_per_device.max(1),
            open: Mutex::default(),
        }
    }

    /// Registers a long-poll; returns its flag and whether an older one
    /// was told to answer.
    fn register(&self, key: &Key) -> (Arc<AtomicBool>, bool) {
        let flag = Arc::new(AtomicBool::new(false));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let polls = open.entry(key.clone()).or_default();
        polls.push_back(Arc::clone(&flag));
        let mut superseded = false;
        while polls.len() > self.max_per_device {
            if let Some(oldest) = polls.pop_front() {
                oldest.store(true, Ordering::Relaxed);
                superseded = true;
            }
        }
        (flag, superseded)
    }

    fn unregister(&self, key: &Key, flag: &Arc<AtomicBool>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(polls) = open.get_mut(key) {
            polls.retain(|f| !Arc::ptr_eq(f, flag));
            if polls.is_empty() {
                open.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn devices(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

/// One `/sync` request's place among its device's long-polls.
pub(crate) struct LongPoll<'a> {
    registered: Option<(&'a LongPolls, Key, Arc<AtomicBool>)>,
}

impl<'a> LongPoll<'a> {
    /// Registers a sync that may wait `timeout`; one that cannot wait takes
    /// no place. When an older long-poll of the device is superseded, the
    /// user's waiting syncs are woken so that it answers now.
    pub(crate) fn start(
        polls: &'a LongPolls,
        presence: &PresenceService,
        user: &UserId,
        device: &DeviceId,
        timeout: Duration,
    ) -> Self {
        if timeout.is_zero() {
            return Self { registered: None };
        }
        let key = (user.to_owned(), device.to_owned());
        let (flag, superseded) = polls.register(&key);
        if superseded {
            presence.wake_syncs([user]);
        }
        Self {
            registered: Some((polls, key, flag)),
        }
    }

    /// Whether a newer long-poll of the device took this one's place.
    pub(crate) fn superseded(&self) -> bool {
        self.registered
            .as_ref()
            .is_some_and(|(_, _, flag)| flag.load(Ordering::Relaxed))
    }
}

impl Drop for LongPoll<'_> {
    fn drop(&mut self) {
        if let Some((polls, key, flag)) = self.registered.take() {
            polls.unregister(&key, &flag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str) -> Key {
        (
            "@alice:example.org".try_into().unwrap(),
            device.to_owned().into(),
        )
    }

    #[test]
    fn the_oldest_past_the_bound_is_superseded() {
        let polls = LongPolls::new(2);
        let (first, s1) = polls.register(&key("A"));
        let (second, s2) = polls.register(&key("A"));
        let (other_device, _) = polls.register(&key("B"));
        assert!(!s1 && !s2);
        let (third, s3) = polls.register(&key("A"));
        assert!(s3);
        assert!(first.load(Ordering::Relaxed));
        assert!(!second.load(Ordering::Relaxed) && !third.load(Ordering::Relaxed));
        assert!(!other_device.load(Ordering::Relaxed));
        // The superseded one is already out; the others leave on their own.
        polls.unregister(&key("A"), &first);
        polls.unregister(&key("A"), &second);
        polls.unregister(&key("A"), &third);
        polls.unregister(&key("B"), &other_device);
        assert_eq!(polls.devices(), 0);
    }
}
