//! What a syncing user sees (spec §10): the presence section of `/sync`.

use ruma_common::{OwnedRoomId, UserId};

use crate::stream::StreamPos;
use crate::users::UserIdx;
use crate::{Engine, Interest, Presence, PresenceState};

/// The presence part of one sync response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncView<'a> {
    /// States to return, one per user, in no particular order.
    pub states: Vec<&'a PresenceState>,
    /// The presence position for `next_batch`.
    pub next: StreamPos,
}

/// Why an observer may see a target, for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Observer and target are the same user.
    pub same_user: bool,
    /// Eligible rooms both are joined to.
    pub shared_rooms: Vec<OwnedRoomId>,
    /// Rooms both are joined to that do not count (excluded or oversized).
    pub ineligible_shared_rooms: Vec<OwnedRoomId>,
}

impl Visibility {
    /// Whether room membership alone makes the target visible.
    pub fn visible(&self) -> bool {
        self.same_user || !self.shared_rooms.is_empty()
    }
}

impl Engine {
    /// The presence a sync of `user` returns.
    ///
    /// `since` is the presence position of the sync token (`None` for an
    /// initial or full-state sync); `interest` is the router's answer to
    /// `get_interested_users(user)`. Offline users are left out of
    /// snapshots unless `include_offline`; incremental syncs pass `true`.
    pub fn sync_view(
        &self,
        user: &UserId,
        since: Option<StreamPos>,
        include_offline: bool,
        interest: &Interest,
    ) -> SyncView<'_> {
        let next = self.log.current();
        let me = self.users.find(user);
        let mut since = since;
        let mut include_offline = include_offline;
        // A full-presence resend turns this sync into a snapshot of the
        // online users the user may see, once per token (W7 fixed).
        if let (Some(p), Some(u)) = (since, me) {
            if self.users.get(u).full_presence_at.is_some_and(|at| at >= p) {
                since = None;
                include_offline = false;
            }
        }
        let mut picked: Vec<UserIdx> = match since {
            Some(p) if p >= next => {
                return SyncView {
                    states: Vec::new(),
                    next,
                }
            }
            Some(p) => self.changed_since(me, p, interest),
            None => self.snapshot(me, interest),
        };
        if let (Some(p), Some(u)) = (since, me) {
            // Users newly sharing a room with this user since the token.
            picked.extend(
                self.users
                    .get(u)
                    .catch_up
                    .iter()
                    .filter(|&&(at, _)| at > p)
                    .map(|&(_, m)| m),
            );
        }
        picked.sort_unstable();
        picked.dedup();
        let catch_up_ok = |m: UserIdx| {
            since.is_some()
                && me.is_some_and(|u| self.users.get(u).catch_up.iter().any(|&(_, c)| c == m))
        };
        let states = picked
            .into_iter()
            .filter(|&m| {
                include_offline
                    || self.users.get(m).state.presence != Presence::Offline
                    || catch_up_ok(m)
            })
            .map(|m| &self.users.get(m).state)
            .collect();
        SyncView { states, next }
    }

    /// Everyone the user may see (initial sync, snapshot).
    fn snapshot(&self, me: Option<UserIdx>, interest: &Interest) -> Vec<UserIdx> {
        if *interest == Interest::All {
            return self.users.iter().map(|(u, _)| u).collect();
        }
        let mut picked: Vec<UserIdx> = me.map_or_else(Vec::new, |u| {
            let mut v: Vec<_> = self.audience().co_members(u).collect();
            v.push(u);
            v
        });
        if let Interest::Users(extra) = interest {
            picked.extend(extra.iter().filter_map(|e| self.users.find(e)));
        }
        picked
    }

    /// Users the syncing user may see whose presence changed after `since`.
    /// Picks the cheaper of walking the change log and walking the user's
    /// candidates, so the cost follows min(updates since, audience size).
    fn changed_since(
        &self,
        me: Option<UserIdx>,
        since: StreamPos,
        interest: &Interest,
    ) -> Vec<UserIdx> {
        let latest = |&(pos, u): &(StreamPos, UserIdx)| self.users.get(u).last_change == pos;
        if *interest == Interest::All {
            return match self.log.since(since) {
                Some(changes) => changes.filter(latest).map(|(_, u)| u).collect(),
                // Older than the log: slower but exact.
                None => self
                    .users
                    .iter()
                    .filter(|(_, s)| s.last_change > since)
                    .map(|(u, _)| u)
                    .collect(),
            };
        }
        let Some(me) = me else {
            // No slot: no rooms; only router-named users can be visible.
            return self.extra_changed(interest, since);
        };
        let audience = self.audience();
        let candidates = audience.co_member_estimate(me);
        if (self.log.distance(since) as usize) < candidates {
            if let Some(changes) = self.log.since(since) {
                return changes
                    .filter(latest)
                    .map(|(_, u)| u)
                    .filter(|&u| audience.sees(me, u, interest))
                    .collect();
            }
        }
        let mut picked: Vec<UserIdx> = audience
            .co_members(me)
            .chain(std::iter::once(me))
            .filter(|&u| self.users.get(u).last_change > since)
            .collect();
        picked.extend(self.extra_changed(interest, since));
        picked
    }

    fn extra_changed(&self, interest: &Interest, since: StreamPos) -> Vec<UserIdx> {
        match interest {
            Interest::Users(extra) => extra
                .iter()
                .filter_map(|e| self.users.find(e))
                .filter(|&u| self.users.get(u).last_change > since)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `observer` may see `target`'s presence (`GET /presence`),
    /// given the router's interest for the observer (W4: routing counts).
    pub fn can_see(&self, observer: &UserId, target: &UserId, interest: &Interest) -> bool {
        if observer == target || interest.includes(target) {
            return true;
        }
        match (self.users.find(observer), self.users.find(target)) {
            (Some(o), Some(t)) => self.audience().sees(o, t, interest),
            _ => false,
        }
    }

    /// The room-membership reasons `observer` may (or may not) see `target`.
    pub fn explain(&self, observer: &UserId, target: &UserId) -> Visibility {
        let mut visibility = Visibility {
            same_user: observer == target,
            ..Visibility::default()
        };
        if let (Some(o), Some(t)) = (self.users.find(observer), self.users.find(target)) {
            let audience = self.audience();
            visibility.shared_rooms = audience.explain_rooms(o, t);
            let (a, b) = (&self.users.get(o).rooms, &self.users.get(t).rooms);
            visibility.ineligible_shared_rooms = a
                .iter()
                .filter(|r| b.contains(r) && !audience.eligible(**r))
                .map(|&r| self.rooms.get(r).id.clone())
                .collect();
        }
        visibility
    }
}
