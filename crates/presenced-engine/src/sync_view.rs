//! What a syncing user sees (spec §10): the presence section of `/sync`.

use ruma_common::{OwnedRoomId, UserId};

use crate::joins::Meeting;
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
        picked.sort_unstable();
        picked.dedup();
        let states = picked
            .into_iter()
            .map(|m| &self.users.get(m).state)
            .filter(|s| include_offline || s.presence != Presence::Offline)
            .collect();
        SyncView { states, next }
    }

    /// Cluster mode's view for a sync: everyone `user` may see now, and
    /// those among them met after `met_since` (a join or invite, spec
    /// §10.4; `None`: none). The server keeps, of the first, only states
    /// the partition logs carry past the client's token, and shows the
    /// second whatever their position: stream positions are this node's
    /// own, so the engine's change logs cannot answer a token from another
    /// node, while meetings are mapped from the room stream, which all
    /// nodes share.
    pub fn cluster_view(
        &self,
        user: &UserId,
        met_since: Option<StreamPos>,
        interest: &Interest,
    ) -> (Vec<&UserId>, Vec<&UserId>) {
        let me = self.users.find(user);
        let mut audience = self.snapshot(me, interest);
        audience.sort_unstable();
        audience.dedup();
        let mut met = Vec::new();
        if let (Some(me), Some(since)) = (me, met_since) {
            if *interest != Interest::All {
                self.newly_met(me, since, interest, &mut met);
            }
            met.sort_unstable();
            met.dedup();
        }
        let ids = |v: Vec<UserIdx>| {
            v.into_iter()
                .map(|u| &*self.users.get(u).state.user_id)
                .collect()
        };
        (ids(audience), ids(met))
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

    /// Users the syncing user may see whose presence changed after `since`,
    /// plus users newly met through a join or an invite (spec §10.4).
    ///
    /// Small rooms are scanned member by member; large rooms answer from
    /// their own change log, so the cost follows what changed, not the
    /// member count. `Interest::All` walks the server-wide change log.
    fn changed_since(
        &self,
        me: Option<UserIdx>,
        since: StreamPos,
        interest: &Interest,
    ) -> Vec<UserIdx> {
        let users = &self.users;
        let latest = |&(pos, u): &(StreamPos, UserIdx)| users.last_change(u) == pos;
        let mut picked = if *interest == Interest::All {
            match self.log.since(since) {
                Some(changes) => changes.filter(latest).map(|(_, u)| u).collect(),
                // Older than the log: slower but exact.
                None => (0..users.index_bound())
                    .filter(|&u| users.last_change(u) > since)
                    .collect(),
            }
        } else {
            self.extra_changed(interest, since)
        };
        let Some(me) = me else {
            // No slot: no rooms, no meetings; only router-named users can
            // be visible.
            return picked;
        };
        if *interest != Interest::All {
            let audience = self.audience();
            if users.last_change(me) > since {
                picked.push(me);
            }
            for &r in &users.get(me).rooms {
                if !audience.eligible(r) {
                    continue;
                }
                let room = self.rooms.get(r);
                match room.log().and_then(|log| log.since(since)) {
                    // Leavers' records are dropped from the log when they
                    // leave, so every record is of a current member.
                    Some(changes) => picked.extend(changes.filter(latest).map(|(_, u)| u)),
                    None => picked.extend(
                        room.members
                            .iter()
                            .copied()
                            .filter(|&m| users.last_change(m) > since),
                    ),
                }
            }
        }
        self.newly_met(me, since, interest, &mut picked);
        picked
    }

    /// Users `me` met after `since` whose current presence the meeting
    /// reveals: co-members of a room `me` joined, users who joined a room
    /// of `me` (and are still in it), users invited to a room of `me`, and
    /// the inviter of `me` (while still joined).
    fn newly_met(
        &self,
        me: UserIdx,
        since: StreamPos,
        interest: &Interest,
        picked: &mut Vec<UserIdx>,
    ) {
        let audience = self.audience();
        let users = &self.users;
        let joined = |u: UserIdx, r| users.get(u).rooms.binary_search(&r).is_ok();
        let Some(meetings) = self.meetings.since(since) else {
            // Meetings older than we remember: show every co-member.
            picked.extend(audience.co_members(me));
            return;
        };
        for (_, meeting) in meetings {
            match meeting {
                // The syncing user is not a new co-member of themself
                // (spec §10.4), and a joiner who left since is not one.
                Meeting::Join { room, user } if user == me => {
                    if joined(me, room) {
                        picked.extend(
                            self.rooms.get(room).members.iter().copied().filter(|&m| {
                                m != me && audience.meeting_reveals(m, room, interest)
                            }),
                        );
                    }
                }
                Meeting::Join { room, user } => {
                    if joined(me, room)
                        && joined(user, room)
                        && audience.meeting_reveals(user, room, interest)
                    {
                        picked.push(user);
                    }
                }
                Meeting::Invite {
                    room,
                    invitee,
                    inviter,
                } if invitee == me => {
                    if inviter != me
                        && joined(inviter, room)
                        && audience.meeting_reveals(inviter, room, interest)
                    {
                        picked.push(inviter);
                    }
                }
                Meeting::Invite { room, invitee, .. } => {
                    if joined(me, room) && audience.meeting_reveals(invitee, room, interest) {
                        picked.push(invitee);
                    }
                }
            }
        }
    }

    fn extra_changed(&self, interest: &Interest, since: StreamPos) -> Vec<UserIdx> {
        match interest {
            Interest::Users(extra) => extra
                .iter()
                .filter_map(|e| self.users.find(e))
                .filter(|&u| self.users.last_change(u) > since)
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
                .map(|&r| self.rooms.id(r))
                .collect();
        }
        visibility
    }
}
