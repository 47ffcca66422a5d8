//! The membership index: rooms per user (kept in the user slots), members
//! per room and remote servers per room. Only joins count.

use std::collections::HashSet;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use ruma_common::{OwnedRoomId, OwnedServerName, RoomId, ServerName};
use smallvec::SmallVec;

use crate::stream::{RecentLog, StreamPos};
use crate::users::{RoomIdx, UserIdx};

/// One room as presence sees it.
#[derive(Debug)]
pub(crate) struct Room {
    /// Joined members, local and remote, in join order.
    pub(crate) members: SmallVec<[UserIdx; 4]>,
    /// Remote servers with at least one joined member, with their count.
    /// Boxed because most rooms have none.
    pub(crate) servers: Option<Box<Vec<(OwnedServerName, u32)>>>,
    /// Listed in `exclude_rooms_from_presence`.
    pub(crate) excluded: bool,
    /// Recent presence changes of members, kept only for large rooms so a
    /// sync costs what changed there rather than the member count.
    pub(crate) log: Option<Box<RecentLog<UserIdx>>>,
    /// Syncs of members waiting to be woken, as (user, wait generation);
    /// entries of earlier registrations are skipped when drained.
    pub(crate) waiters: Option<Box<Vec<(UserIdx, u32)>>>,
}

/// Rooms with more members than this keep their own change log.
pub(crate) const LARGE_ROOM: usize = 64;
/// Changes a large room remembers; older tokens scan the members instead.
const ROOM_LOG_CAPACITY: usize = 16_384;

impl Room {
    /// Remote servers in this room.
    pub(crate) fn servers(&self) -> impl Iterator<Item = &ServerName> {
        self.servers
            .iter()
            .flat_map(|s| s.iter().map(|(n, _)| &**n))
    }

    pub(crate) fn has_server(&self, server: &ServerName) -> bool {
        self.servers().any(|s| s == server)
    }

    pub(crate) fn add_server(&mut self, server: &ServerName) -> bool {
        let servers = self.servers.get_or_insert_with(Default::default);
        if let Some(entry) = servers.iter_mut().find(|(s, _)| s == server) {
            entry.1 += 1;
            false
        } else {
            servers.push((server.to_owned(), 1));
            true
        }
    }

    /// Starts the room's change log once it is large; it is complete only
    /// for changes from `now_pos` on.
    pub(crate) fn grow_log(&mut self, now_pos: StreamPos) {
        if self.log.is_none() && self.members.len() > LARGE_ROOM {
            self.log = Some(Box::new(RecentLog::new(ROOM_LOG_CAPACITY, now_pos)));
        }
    }

    pub(crate) fn remove_server(&mut self, server: &ServerName) {
        if let Some(servers) = &mut self.servers {
            if let Some(pos) = servers.iter().position(|(s, _)| s == server) {
                servers[pos].1 -= 1;
                if servers[pos].1 == 0 {
                    servers.swap_remove(pos);
                }
            }
            if servers.is_empty() {
                self.servers = None;
            }
        }
    }
}

/// All rooms by index, with a hash index from room id.
#[derive(Debug, Default)]
pub(crate) struct RoomTable {
    rooms: Vec<Room>,
    /// Room ids, apart from the hot per-room data.
    ids: Vec<OwnedRoomId>,
    index: HashTable<RoomIdx>,
    hasher: foldhash::fast::FixedState,
}

impl RoomTable {
    pub(crate) fn find(&self, room: &RoomId) -> Option<RoomIdx> {
        let hash = self.hasher.hash_one(room.as_str());
        self.index
            .find(hash, |&i| self.ids[i as usize] == room)
            .copied()
    }

    pub(crate) fn intern(&mut self, room: &RoomId, excluded: &HashSet<OwnedRoomId>) -> RoomIdx {
        if let Some(idx) = self.find(room) {
            return idx;
        }
        let idx = self.rooms.len() as RoomIdx;
        self.ids.push(room.to_owned());
        self.rooms.push(Room {
            members: SmallVec::new(),
            servers: None,
            excluded: excluded.contains(room),
            log: None,
            waiters: None,
        });
        let hash = self.hasher.hash_one(room.as_str());
        let ids = &self.ids;
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, idx, |&i| hasher.hash_one(ids[i as usize].as_str()));
        idx
    }

    pub(crate) fn get(&self, idx: RoomIdx) -> &Room {
        &self.rooms[idx as usize]
    }

    /// A room's id.
    pub(crate) fn id(&self, idx: RoomIdx) -> &OwnedRoomId {
        &self.ids[idx as usize]
    }

    pub(crate) fn get_mut(&mut self, idx: RoomIdx) -> &mut Room {
        &mut self.rooms[idx as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Approximate heap bytes held by the table (for the memory benchmark).
    pub(crate) fn heap_bytes(&self) -> usize {
        let mut bytes = self.rooms.capacity() * size_of::<Room>() + self.index.capacity() * 5;
        bytes += self.ids.capacity() * size_of::<OwnedRoomId>();
        for (room, id) in self.rooms.iter().zip(&self.ids) {
            bytes += id.as_str().len();
            if let Some(w) = &room.waiters {
                bytes += w.capacity() * 8 + 24;
            }
            if room.members.spilled() {
                bytes += room.members.capacity() * 4;
            }
            if let Some(s) = &room.servers {
                bytes += s.capacity() * 40;
            }
            if let Some(log) = &room.log {
                bytes += log.capacity_bytes();
            }
        }
        bytes
    }
}
