//! The per-server cap on remote users learnt from federation (W9/W10).
//!
//! A server may push presence for any number of its users, whether or not
//! they share a room with anyone here. The engine keeps at most
//! [`EngineConfig::max_remote_users_per_server`](crate::EngineConfig) of
//! them per server; when a new user would pass the cap, the server's
//! offline users are forgotten first, then the ones updated longest ago.
//! A forgotten user's slot is released for reuse, so memory stays bounded
//! however many distinct users a server names, and the driver is told to
//! delete their stored state ([`crate::Output::Forget`]), so storage stays
//! bounded too.
//!
//! Remote users who are members of a room we know are held by the
//! membership index (which local state bounds): they do not count and are
//! never forgotten. Neither are users in the batch being collected for
//! fan-out; if every candidate is, the new user is dropped instead.

use std::collections::{BTreeSet, HashMap};

use ruma_common::{OwnedServerName, ServerName};

use crate::users::{Pending, UserIdx};
use crate::{Engine, Presence, Timestamp};

/// Eviction order: offline before not offline, then oldest update first.
type EvictKey = (bool, Timestamp, UserIdx);

/// Room-less remote users by server, in eviction order.
#[derive(Debug, Default)]
pub(crate) struct RemoteIndex {
    by_server: HashMap<OwnedServerName, BTreeSet<EvictKey>>,
    /// The key each tracked user is filed under.
    filed: HashMap<UserIdx, EvictKey>,
}

impl RemoteIndex {
    fn remove(&mut self, server: &ServerName, u: UserIdx) {
        if let Some(key) = self.filed.remove(&u) {
            if let Some(set) = self.by_server.get_mut(server) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_server.remove(server);
                }
            }
        }
    }

    fn file(&mut self, server: &ServerName, key: EvictKey) {
        self.filed.insert(key.2, key);
        match self.by_server.get_mut(server) {
            Some(set) => {
                set.insert(key);
            }
            None => {
                self.by_server
                    .insert(server.to_owned(), BTreeSet::from([key]));
            }
        }
    }

    /// Room-less remote users of `server` the engine holds.
    pub(crate) fn count(&self, server: &ServerName) -> usize {
        self.by_server.get(server).map_or(0, BTreeSet::len)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.filed.capacity() * 32 + self.filed.len() * 48
    }
}

impl Engine {
    /// Refiles a user in the remote index after any change to their state
    /// or rooms; local users are never filed.
    pub(crate) fn track_remote(&mut self, u: UserIdx) {
        let slot = self.users.get(u);
        if slot.is_local {
            return;
        }
        let server = slot.state.user_id.server_name();
        let key = slot.rooms.is_empty().then(|| {
            (
                slot.state.presence != Presence::Offline,
                slot.state.last_federation_update_ts,
                u,
            )
        });
        if self.remote.filed.get(&u).copied() == key {
            return;
        }
        self.remote.remove(server, u);
        if let Some(key) = key {
            self.remote.file(server, key);
        }
    }

    /// Makes room for one more room-less user of `server`; false if every
    /// candidate is pinned by the batch being collected.
    pub(crate) fn make_room_for(&mut self, server: &ServerName) -> bool {
        let cap = self.config.max_remote_users_per_server;
        while self.remote.count(server) >= cap {
            let victim = self.remote.by_server.get(server).and_then(|set| {
                set.iter()
                    .map(|&(_, _, u)| u)
                    .find(|&u| self.users.get(u).pending == Pending::None)
            });
            let Some(u) = victim else {
                return false;
            };
            self.forget_remote(server, u);
        }
        true
    }

    /// Forgets a room-less remote user entirely.
    fn forget_remote(&mut self, server: &ServerName, u: UserIdx) {
        self.remote.remove(server, u);
        let slot = self.users.get_mut(u);
        let filed = slot.deadline.take();
        self.timers.refile(u, filed, None);
        let user_id = self.users.user_id(u);
        tracing::debug!(user = %user_id, "remote user forgotten (per-server cap)");
        self.forgotten.push((user_id, self.users.last_change(u)));
        self.users.release(u);
        self.counters.remote_evicted += 1;
    }

    /// After a restore: each server's room-less users within the cap.
    pub(crate) fn enforce_remote_cap(&mut self) {
        let over: Vec<OwnedServerName> = self
            .remote
            .by_server
            .iter()
            .filter(|(_, set)| set.len() > self.config.max_remote_users_per_server)
            .map(|(server, _)| server.clone())
            .collect();
        for server in over {
            let cap = self.config.max_remote_users_per_server;
            while self.remote.count(&server) > cap {
                let Some(&(_, _, u)) = self.remote.by_server.get(&server).and_then(|s| s.first())
                else {
                    break;
                };
                self.forget_remote(&server, u);
            }
        }
    }
}
