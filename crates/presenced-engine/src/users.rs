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
    /// Cluster mode: another node owns this user (runs its state machine,
    /// timers and federation sends); here its state is only applied.
    pub(crate) replicated: bool,
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
    /// One bit per slot: released and waiting for reuse.
    released: Vec<u64>,
    /// Released slots, reused before the table grows.
    free: Vec<UserIdx>,
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

    /// The index of a user, creating a default slot if needed (reusing a
    /// released one first).
    pub(crate) fn intern(&mut self, user: &UserId, is_local: bool) -> UserIdx {
        if let Some(idx) = self.find(user) {
            return idx;
        }
        let fresh = UserSlot {
            state: PresenceState::new(user.to_owned()),
            is_local,
            rooms: SmallVec::new(),
            devices: Vec::new(),
            deadline: None,
            wait_gen: 0,
            pending: Pending::None,
            full_presence_at: None,
            replicated: false,
        };
        let idx = if let Some(idx) = self.free.pop() {
            set_bit(&mut self.released, idx, false);
            let slot = &mut self.slots[idx as usize];
            // The generation moves on, so waiter entries of the slot's
            // earlier user can never match the new one.
            let wait_gen = slot.wait_gen.wrapping_add(1);
            *slot = UserSlot { wait_gen, ..fresh };
            idx
        } else {
            let idx = self.slots.len() as UserIdx;
            self.changes.push(0);
            if (idx as usize).is_multiple_of(64) {
                self.waiting.push(0);
                self.released.push(0);
            }
            self.slots.push(fresh);
            idx
        };
        let hash = self.hash(user);
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, idx, |&i| {
            hasher.hash_one(slots[i as usize].state.user_id.as_str())
        });
        idx
    }

    /// Forgets a user whose slot nothing else refers to any more: no rooms,
    /// no timer, not in the batch being collected. The slot is kept for the
    /// next new user; its last change position is cleared, so stream
    /// entries that still name the index are recognised as stale.
    pub(crate) fn release(&mut self, idx: UserIdx) {
        let slot = &self.slots[idx as usize];
        debug_assert!(slot.rooms.is_empty() && slot.deadline.is_none());
        debug_assert!(slot.pending == Pending::None);
        let hash = self.hash(&slot.state.user_id);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        let slot = &mut self.slots[idx as usize];
        // Keep no copy of the forgotten user's data.
        slot.state = PresenceState::new(released_placeholder());
        slot.devices = Vec::new();
        slot.full_presence_at = None;
        self.changes[idx as usize] = 0;
        set_bit(&mut self.waiting, idx, false);
        set_bit(&mut self.released, idx, true);
        self.free.push(idx);
    }

    fn is_released(&self, idx: UserIdx) -> bool {
        self.released[idx as usize / 64] & (1 << (idx % 64)) != 0
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
        set_bit(&mut self.waiting, idx, waiting)
    }

    /// Users with a slot (released slots do not count).
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// One past the highest index ever handed out (released slots
    /// included), for walks over every index.
    pub(crate) fn index_bound(&self) -> UserIdx {
        self.slots.len() as UserIdx
    }

    /// Every user with a slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (UserIdx, &UserSlot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i as UserIdx, s))
            .filter(|&(i, _)| !self.is_released(i))
    }

    /// Approximate heap bytes held by the table (for the memory benchmark).
    pub(crate) fn heap_bytes(&self) -> usize {
        let per_slot = size_of::<UserSlot>();
        let mut bytes = self.slots.capacity() * per_slot
            + self.index.capacity() * 5
            + self.changes.capacity() * 8
            + self.free.capacity() * 4;
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

/// Sets bit `idx` of a bitset; returns whether it was set before.
fn set_bit(words: &mut [u64], idx: UserIdx, value: bool) -> bool {
    let word = &mut words[idx as usize / 64];
    let bit = 1 << (idx % 64);
    let was = *word & bit != 0;
    if value {
        *word |= bit;
    } else {
        *word &= !bit;
    }
    was
}

/// The id a released slot holds until it is reused (a slot always holds
/// some id; this one is short and can never be a real user of ours).
fn released_placeholder() -> OwnedUserId {
    UserId::parse("@released:invalid").expect("a valid user id")
}
