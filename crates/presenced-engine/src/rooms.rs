//! The membership index: rooms per user (kept in the user slots), members
//! per room and remote servers per room. Only joins count.

use std::collections::HashSet;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use ruma_common::{OwnedRoomId, OwnedServerName, RoomId, ServerName};
use smallvec::SmallVec;

use crate::chunked::ChunkedVec;
use crate::stream::{RecentLog, StreamPos};
use crate::users::{RoomIdx, UserIdx};

/// One room as presence sees it. Kept small: most rooms are DMs with only
/// local members, so everything else lives in a box that most rooms lack.
#[derive(Debug)]
pub(crate) struct Room {
    /// Joined members, local and remote, in join order.
    pub(crate) members: SmallVec<[UserIdx; 4]>,
    extra: Option<Box<RoomExtra>>,
}

/// What only rooms with remote members or many members need.
#[derive(Debug, Default)]
struct RoomExtra {
    /// Remote servers with at least one joined member, with their count.
    servers: Vec<(OwnedServerName, u32)>,
    /// Recent presence changes of members, kept only for large rooms so a
    /// sync costs what changed there rather than the member count.
    log: Option<RecentLog<UserIdx>>,
    /// Large rooms: syncs of members waiting to be woken, as (user, wait
    /// generation); entries of earlier registrations are skipped. Small
    /// rooms scan their members' waiting bits instead.
    waiters: Vec<(UserIdx, u32)>,
}

/// Rooms with more members than this keep their own change log.
pub(crate) const LARGE_ROOM: usize = 64;
/// Changes a large room remembers; older tokens scan the members instead.
const ROOM_LOG_CAPACITY: usize = 16_384;

impl Room {
    /// Remote servers in this room.
    pub(crate) fn servers(&self) -> impl Iterator<Item = &ServerName> {
        self.extra
            .iter()
            .flat_map(|e| e.servers.iter().map(|(n, _)| &**n))
    }

    pub(crate) fn has_server(&self, server: &ServerName) -> bool {
        self.servers().any(|s| s == server)
    }

    fn add_server(&mut self, server: &ServerName) -> bool {
        let servers = &mut self.extra.get_or_insert_with(Default::default).servers;
        if let Some(entry) = servers.iter_mut().find(|(s, _)| s == server) {
            entry.1 += 1;
            false
        } else {
            servers.push((server.to_owned(), 1));
            true
        }
    }

    fn remove_server(&mut self, server: &ServerName) {
        if let Some(extra) = &mut self.extra {
            if let Some(pos) = extra.servers.iter().position(|(s, _)| s == server) {
                extra.servers[pos].1 -= 1;
                if extra.servers[pos].1 == 0 {
                    extra.servers.swap_remove(pos);
                }
            }
        }
    }

    /// Whether the room keeps its own change log and waiter list.
    pub(crate) fn is_large(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.log.is_some())
    }

    /// Starts the room's change log once it is large; it is complete only
    /// for changes after `now_pos`. Returns whether it just became large.
    fn grow_log(&mut self, now_pos: StreamPos) -> bool {
        if !self.is_large() && self.members.len() > LARGE_ROOM {
            self.extra.get_or_insert_with(Default::default).log =
                Some(RecentLog::new(ROOM_LOG_CAPACITY, now_pos));
            return true;
        }
        false
    }

    /// The large room's change log.
    pub(crate) fn log(&self) -> Option<&RecentLog<UserIdx>> {
        self.extra.as_ref().and_then(|e| e.log.as_ref())
    }

    pub(crate) fn log_mut(&mut self) -> Option<&mut RecentLog<UserIdx>> {
        self.extra.as_mut().and_then(|e| e.log.as_mut())
    }

    /// The large room's waiter list.
    pub(crate) fn waiters_mut(&mut self) -> Option<&mut Vec<(UserIdx, u32)>> {
        self.extra
            .as_mut()
            .filter(|e| e.log.is_some())
            .map(|e| &mut e.waiters)
    }

    fn extra_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| {
            size_of::<RoomExtra>()
                + e.servers.capacity() * 40
                + e.log.as_ref().map_or(0, RecentLog::capacity_bytes)
                + e.waiters.capacity() * 8
        })
    }
}

/// Where a room id's text lies in the id blocks.
#[derive(Clone, Copy, Debug)]
struct IdRef {
    block: u32,
    start: u32,
    len: u32,
}

/// Size of one block of room id text.
const ID_BLOCK: usize = 1 << 16;

/// The per-room facts on the hot path.
#[derive(Clone, Copy, Debug, Default)]
struct RoomHot {
    /// Members with a sync waiting.
    waiting: u32,
    flags: u8,
}

/// Listed in `exclude_rooms_from_presence`.
const EXCLUDED: u8 = 1;
/// More joined members than `max_room_size`.
const OVERSIZED: u8 = 2;
/// Keeps its own change log and waiter list.
const LARGE: u8 = 4;
/// Has remote members.
const REMOTE: u8 = 8;

/// All rooms by index, with a hash index from room id.
#[derive(Debug, Default)]
pub(crate) struct RoomTable {
    rooms: ChunkedVec<Room>,
    /// What fan-out asks of every room on every update, kept dense and
    /// apart from the member lists so that rooms with nothing to do cost
    /// one small read.
    hot: ChunkedVec<RoomHot>,
    /// Room ids, apart from the hot per-room data, as text in a few large
    /// blocks (one small record per room instead of one allocation).
    ids: ChunkedVec<IdRef>,
    id_blocks: Vec<String>,
    index: HashTable<RoomIdx>,
    hasher: foldhash::fast::FixedState,
}

fn id_text<'a>(ids: &ChunkedVec<IdRef>, blocks: &'a [String], idx: RoomIdx) -> &'a str {
    let r = ids[idx as usize];
    &blocks[r.block as usize][r.start as usize..(r.start + r.len) as usize]
}

impl RoomTable {
    pub(crate) fn find(&self, room: &RoomId) -> Option<RoomIdx> {
        let hash = self.hasher.hash_one(room.as_str());
        self.index
            .find(hash, |&i| self.name(i) == room.as_str())
            .copied()
    }

    pub(crate) fn intern(&mut self, room: &RoomId, excluded: &HashSet<OwnedRoomId>) -> RoomIdx {
        if let Some(idx) = self.find(room) {
            return idx;
        }
        let idx = self.rooms.len() as RoomIdx;
        let text = room.as_str();
        if self
            .id_blocks
            .last()
            .is_none_or(|b| b.len() + text.len() > b.capacity())
        {
            self.id_blocks
                .push(String::with_capacity(ID_BLOCK.max(text.len())));
        }
        let block = self.id_blocks.len() - 1;
        let start = self.id_blocks[block].len();
        self.id_blocks[block].push_str(text);
        self.ids.push(IdRef {
            block: block as u32,
            start: start as u32,
            len: text.len() as u32,
        });
        self.rooms.push(Room {
            members: SmallVec::new(),
            extra: None,
        });
        let flags = if excluded.contains(room) { EXCLUDED } else { 0 };
        self.hot.push(RoomHot { waiting: 0, flags });
        let hash = self.hasher.hash_one(room.as_str());
        let (ids, blocks, hasher) = (&self.ids, &self.id_blocks, &self.hasher);
        self.index
            .insert_unique(hash, idx, |&i| hasher.hash_one(id_text(ids, blocks, i)));
        idx
    }

    pub(crate) fn get(&self, idx: RoomIdx) -> &Room {
        &self.rooms[idx as usize]
    }

    fn set_flag(&mut self, idx: RoomIdx, flag: u8, on: bool) {
        let flags = &mut self.hot[idx as usize].flags;
        *flags = if on { *flags | flag } else { *flags & !flag };
    }

    fn has_flag(&self, idx: RoomIdx, flag: u8) -> bool {
        self.hot[idx as usize].flags & flag != 0
    }

    /// Whether the room, on its own, makes its members see each other:
    /// not excluded and not above `max_room_size`.
    pub(crate) fn eligible(&self, idx: RoomIdx) -> bool {
        !self.has_flag(idx, EXCLUDED | OVERSIZED)
    }

    /// Whether the room keeps its own change log and waiter list.
    pub(crate) fn is_large(&self, idx: RoomIdx) -> bool {
        self.has_flag(idx, LARGE)
    }

    /// Whether the room has remote members.
    pub(crate) fn has_remote(&self, idx: RoomIdx) -> bool {
        self.has_flag(idx, REMOTE)
    }

    /// Members with a sync waiting.
    pub(crate) fn waiting(&self, idx: RoomIdx) -> u32 {
        self.hot[idx as usize].waiting
    }

    pub(crate) fn add_waiting(&mut self, idx: RoomIdx, waiting: bool) {
        let count = &mut self.hot[idx as usize].waiting;
        *count = if waiting {
            *count + 1
        } else {
            count.saturating_sub(1)
        };
    }

    /// Re-derives the size-dependent flags after a join or leave.
    pub(crate) fn resized(&mut self, idx: RoomIdx, max_room_size: Option<usize>) {
        let members = self.rooms[idx as usize].members.len();
        self.set_flag(
            idx,
            OVERSIZED,
            max_room_size.is_some_and(|max| members > max),
        );
    }

    /// A remote server's member joined; returns whether the server is new here.
    pub(crate) fn add_server(&mut self, idx: RoomIdx, server: &ServerName) -> bool {
        let new = self.rooms[idx as usize].add_server(server);
        self.set_flag(idx, REMOTE, true);
        new
    }

    /// A remote server's member left.
    pub(crate) fn remove_server(&mut self, idx: RoomIdx, server: &ServerName) {
        let room = &mut self.rooms[idx as usize];
        room.remove_server(server);
        let any = room.servers().next().is_some();
        self.set_flag(idx, REMOTE, any);
    }

    /// Starts the room's own change log once it is large; returns whether
    /// it just became large.
    pub(crate) fn grow_log(&mut self, idx: RoomIdx, now_pos: StreamPos) -> bool {
        let grew = self.rooms[idx as usize].grow_log(now_pos);
        if grew {
            self.set_flag(idx, LARGE, true);
        }
        grew
    }

    fn name(&self, idx: RoomIdx) -> &str {
        id_text(&self.ids, &self.id_blocks, idx)
    }

    /// A room's id.
    pub(crate) fn id(&self, idx: RoomIdx) -> OwnedRoomId {
        // Validated when interned.
        <&RoomId>::try_from(self.name(idx))
            .expect("interned room ids are valid")
            .to_owned()
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
        bytes += self.ids.capacity() * size_of::<IdRef>();
        bytes += self.id_blocks.iter().map(String::capacity).sum::<usize>();
        for room in self.rooms.iter() {
            if room.members.spilled() {
                bytes += room.members.capacity() * 4;
            }
            bytes += room.extra_bytes();
        }
        bytes
    }
}
