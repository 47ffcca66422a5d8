//! The user table: one slot per user the engine has reason to remember,
//! addressed by a dense index so the membership index and the stream can
//! refer to users with four bytes.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use ruma_common::{OwnedUserId, UserId};
use smallvec::SmallVec;

use crate::chunked::ChunkedVec;
use crate::machine::DeviceState;
use crate::stream::StreamPos;
use crate::{PresenceState, Timestamp};

/// Dense index of a user in the [`UserTable`].
pub(crate) type UserIdx = u32;
/// Dense index of a room in the membership index.
pub(crate) type RoomIdx = u32;

/// A user's part in the batch being collected for fan-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pending {
    /// Not in the batch.
    None,
    /// Unchanged, but due for a federation keepalive (servers only).
    Ping,
    /// A notifiable change: wake the audience and federate.
    Notify,
}

/// Everything the engine keeps per user.
#[derive(Debug)]
pub(crate) struct UserSlot {
    /// Current presence; its `user_id` is the only stored copy of the id.
    pub(crate) state: PresenceState,
    /// Whether the user belongs to this server.
    pub(crate) is_local: bool,
    /// Joined rooms, sorted, so two users' lists intersect by merging.
    pub(crate) rooms: SmallVec<[RoomIdx; 4]>,
    /// Device records (local users only; usually zero to two).
    pub(crate) devices: Vec<DeviceState>,
    /// The deadline this user is filed under in the timer queue.
    pub(crate) deadline: Option<Timestamp>,
    /// Bumped on every wait registration, so stale room-waiter entries
    /// from earlier registrations are recognised and skipped.
    pub(crate) wait_gen: u32,
    /// How this user takes part in the batch being collected for fan-out.
    pub(crate) pending: Pending,
    /// A full-presence snapshot is owed to syncs from tokens at or before this.
    pub(crate) full_presence_at: Option<StreamPos>,
}

/// Users by index, with a hash index from user id to slot.
#[derive(Debug, Default)]
pub(crate) struct UserTable {
    slots: ChunkedVec<UserSlot>,
    /// Stream position of each user's last notifiable change (0: never),
    /// apart from the slots so the sync view's "changed since" checks
    /// stay in cache.
    changes: Vec<StreamPos>,
    /// One bit per user: a sync is waiting to be woken. Dense so that
    /// fan-out can test a small room's members without touching their slots.
    waiting: Vec<u64>,
    index: HashTable<UserIdx>,
    hasher: foldhash::fast::FixedState,
}

impl UserTable {
    fn hash(&self, user: &UserId) -> u64 {
        self.hasher.hash_one(user.as_str())
    }

    /// The index of a known user.
    pub(crate) fn find(&self, user: &UserId) -> Option<UserIdx> {
        let hash = self.hash(user);
        self.index
            .find(hash, |&i| self.slots[i as usize].state.user_id == user)
            .copied()
    }

    /// The index of a user, creating a default slot if needed.
    pub(crate) fn intern(&mut self, user: &UserId, is_local: bool) -> UserIdx {
        if let Some(idx) = self.find(user) {
            return idx;
        }
        let idx = self.slots.len() as UserIdx;
        self.changes.push(0);
        if (idx as usize).is_multiple_of(64) {
            self.waiting.push(0);
        }
        self.slots.push(UserSlot {
            state: PresenceState::new(user.to_owned()),
            is_local,
            rooms: SmallVec::new(),
            devices: Vec::new(),
            deadline: None,
            wait_gen: 0,
            pending: Pending::None,
            full_presence_at: None,
        });
        let hash = self.hash(user);
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, idx, |&i| {
            hasher.hash_one(slots[i as usize].state.user_id.as_str())
        });
        idx
    }

    pub(crate) fn get(&self, idx: UserIdx) -> &UserSlot {
        &self.slots[idx as usize]
    }

    pub(crate) fn get_mut(&mut self, idx: UserIdx) -> &mut UserSlot {
        &mut self.slots[idx as usize]
    }

    /// Stream position of the user's last notifiable change (0: never).
    pub(crate) fn last_change(&self, idx: UserIdx) -> StreamPos {
        self.changes[idx as usize]
    }

    pub(crate) fn set_last_change(&mut self, idx: UserIdx, pos: StreamPos) {
        self.changes[idx as usize] = pos;
    }

    pub(crate) fn is_waiting(&self, idx: UserIdx) -> bool {
        self.waiting[idx as usize / 64] & (1 << (idx % 64)) != 0
    }

    /// Sets the waiting bit; returns whether it was set before.
    pub(crate) fn set_waiting(&mut self, idx: UserIdx, waiting: bool) -> bool {
        let word = &mut self.waiting[idx as usize / 64];
        let bit = 1 << (idx % 64);
        let was = *word & bit != 0;
        if waiting {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        was
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (UserIdx, &UserSlot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i as UserIdx, s))
    }

    /// Approximate heap bytes held by the table (for the memory benchmark).
    pub(crate) fn heap_bytes(&self) -> usize {
        let per_slot = size_of::<UserSlot>();
        let mut bytes = self.slots.capacity() * per_slot
            + self.index.capacity() * 5
            + self.changes.capacity() * 8;
        for slot in self.slots.iter() {
            bytes += slot.state.user_id.as_str().len();
            bytes += slot.state.status_msg.as_ref().map_or(0, |m| m.len() + 16);
            if slot.rooms.spilled() {
                bytes += slot.rooms.capacity() * 4;
            }
            bytes += slot.devices.capacity() * size_of::<DeviceState>();
        }
        bytes
    }

    /// An owned copy of a user's id.
    pub(crate) fn user_id(&self, idx: UserIdx) -> OwnedUserId {
        self.get(idx).state.user_id.clone()
    }
}
