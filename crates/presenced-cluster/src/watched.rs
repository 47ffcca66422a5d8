//! A value tasks can wait on, woken in a replayable order.
//!
//! `tokio::sync::watch` spreads its waiters over several internal queues
//! picked at random, so the order in which waiting tasks wake differs from
//! run to run; the simulator could then not replay a seed. This is the
//! small part of it the cluster needs, on one `Notify` (first come, first
//! woken).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Watched<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Watched<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self) -> T {
        self.lock().clone()
    }

    /// Changes the value and wakes every waiter.
    pub(crate) fn modify(&self, change: impl FnOnce(&mut T)) {
        change(&mut self.lock());
        self.changed.notify_waiters();
    }

    /// Waits until `ready` holds for the value; returns that value.
    pub(crate) async fn wait_for(&self, ready: impl Fn(&T) -> bool) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between wakes us.
            changed.as_mut().enable();
            {
                let value = self.lock();
                if ready(&value) {
                    return value.clone();
                }
            }
            changed.await;
        }
    }
}
