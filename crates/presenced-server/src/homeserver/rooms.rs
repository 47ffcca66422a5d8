//! Local rooms: creation and membership rules.
//!
//! Rooms are local only (no federation), and membership is the only state
//! that has rules: join needs an invite or a public join rule, invite needs
//! the inviter to be joined, leave needs the user to be joined or invited.
//! Every stored change is reported through `Homeserver::emit_membership`.

use std::sync::Arc;

use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Map, Value};

use crate::homeserver::room_members::{Room, RoomMembers};
use crate::homeserver::room_stream::Committed;
use crate::homeserver::Error;
use crate::homeserver::Homeserver;
use crate::store::membership::{Membership, MembershipChange};
use crate::store::{NewEvent, StoreError};
use crate::util::{clock, ids};

/// The room presets of `POST /createRoom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Join rule `invite`.
    PrivateChat,
    /// Join rule `invite`, and invitees get the creator's power level.
    TrustedPrivateChat,
    /// Join rule `public`.
    PublicChat,
}

/// What the creator asked for.
#[derive(Clone, Debug)]
pub struct NewRoom {
    /// The creator, who joins at once.
    pub creator: OwnedUserId,
    /// Preset (already defaulted from `visibility`).
    pub preset: Preset,
    /// Marks the invites as direct-chat invites.
    pub is_direct: bool,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// Users to invite.
    pub invite: Vec<OwnedUserId>,
}

/// The join rule that lets anyone join without an invite.
pub const PUBLIC_JOIN_RULE: &str = "public";

/// The room version presenced stamps on new rooms.
pub const ROOM_VERSION: &str = "10";

/// Creates a room with its initial state and invites.
pub async fn create_room(state: &Arc<Homeserver>, req: NewRoom) -> Result<OwnedRoomId, Error> {
    check_invitees(state, &req.invite).await?;
    let room_id = ids::new_room_id(&state.server_name);
    let events = initial_events(&room_id, &req);
    let (room, creator, invite) = (room_id.clone(), req.creator.clone(), req.invite);
    let public = req.preset == Preset::PublicChat;
    let st = Arc::clone(state);
    state
        .room_write(move |s, _| {
            let streams = s.create_room(&room, &creator, clock::now(), &events)?;
            // Reported under the room write lock, so membership changes
            // reach the engine in commit order. The creator's join is the
            // second event; invites are the last ones.
            let members: Vec<(OwnedUserId, Membership)> =
                std::iter::once((creator, Membership::Join))
                    .chain(invite.into_iter().map(|u| (u, Membership::Invite)))
                    .collect();
            let member_streams = std::iter::once(streams[1]).chain(
                streams[streams.len() - (members.len() - 1)..]
                    .iter()
                    .copied(),
            );
            // The creator sends every initial membership event.
            let sender = &members[0].0;
            for ((user_id, membership), stream) in members.iter().zip(member_streams) {
                st.emit_membership(MembershipChange {
                    room_id: room.clone(),
                    user_id: user_id.clone(),
                    sender: sender.clone(),
                    membership: *membership,
                    stream,
                });
            }
            let committed = streams.last().map(|&top| Committed {
                created: Some(public),
                memberships: members,
                ..Committed::events(room, top)
            });
            Ok(((), committed))
        })
        .await?;
    Ok(room_id)
}

fn initial_events(room_id: &RoomId, req: &NewRoom) -> Vec<NewEvent> {
    let creator = &req.creator;
    let mut users = Map::new();
    users.insert(creator.to_string(), json!(100));
    if req.preset == Preset::TrustedPrivateChat {
        for u in &req.invite {
            users.insert(u.to_string(), json!(100));
        }
    }
    let join_rule = match req.preset {
        Preset::PublicChat => PUBLIC_JOIN_RULE,
        Preset::PrivateChat | Preset::TrustedPrivateChat => "invite",
    };
    let mut state: Vec<(&str, String, Value)> = vec![
        (
            "m.room.create",
            String::new(),
            json!({ "creator": creator, "room_version": ROOM_VERSION }),
        ),
        (
            "m.room.member",
            creator.to_string(),
            json!({ "membership": "join" }),
        ),
        (
            "m.room.power_levels",
            String::new(),
            json!({
                "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
                "ban": 50, "kick": 50, "redact": 50, "invite": 0,
                "events": {
                    "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                    "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                    "m.room.server_acl": 100, "m.room.encryption": 100
                },
            }),
        ),
        (
            "m.room.join_rules",
            String::new(),
            json!({ "join_rule": join_rule }),
        ),
        (
            "m.room.history_visibility",
            String::new(),
            json!({ "history_visibility": "shared" }),
        ),
    ];
    if req.preset != Preset::PublicChat {
        state.push((
            "m.room.guest_access",
            String::new(),
            json!({ "guest_access": "can_join" }),
        ));
    }
    if let Some(name) = &req.name {
        state.push(("m.room.name", String::new(), json!({ "name": name })));
    }
    if let Some(topic) = &req.topic {
        state.push(("m.room.topic", String::new(), json!({ "topic": topic })));
    }
    for invitee in &req.invite {
        let mut content = json!({ "membership": "invite" });
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        state.push(("m.room.member", invitee.to_string(), content));
    }
    let now = clock::now();
    state
        .into_iter()
        .map(|(event_type, state_key, content)| NewEvent {
            event_id: ids::new_event_id(),
            room_id: room_id.to_owned(),
            sender: creator.clone(),
            event_type: event_type.to_owned(),
            state_key: Some(state_key),
            content,
            origin_server_ts: now,
            txn: None,
        })
        .collect()
}

/// Invites can only go to existing local users: presenced does not federate.
async fn check_invitee(state: &Homeserver, invitee: &UserId) -> Result<(), Error> {
    check_invitees(state, &[invitee.to_owned()]).await
}

/// [`check_invitee`] for many, with one trip to the blocking pool.
async fn check_invitees(state: &Homeserver, invitees: &[OwnedUserId]) -> Result<(), Error> {
    if let Some(remote) = invitees
        .iter()
        .find(|u| u.server_name() != state.server_name)
    {
        return Err(Error::Forbidden(format!(
            "Cannot invite {remote}: presenced does not federate"
        )));
    }
    if invitees.is_empty() {
        return Ok(());
    }
    let ids = invitees.to_vec();
    let unknown = state
        .db(move |s| {
            for id in ids {
                match s.user(&id)? {
                    Some(u) if !u.deactivated => {}
                    _ => return Ok::<_, StoreError>(Some(id)),
                }
            }
            Ok(None)
        })
        .await?;
    match unknown {
        Some(id) => Err(Error::NotFound(format!("Unknown user {id}"))),
        None => Ok(()),
    }
}

/// Changes `target`'s membership of `room_id` on `sender`'s behalf.
///
/// Returns the new membership event, or `None` when nothing changed (joining
/// a room one is in, re-inviting an invited user): clients retry these
/// calls, so they are idempotent.
pub async fn set_membership(
    state: &Arc<Homeserver>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    new: Membership,
    extra_content: Map<String, Value>,
) -> Result<Option<OwnedEventId>, Error> {
    if new == Membership::Invite {
        check_invitee(state, target).await?;
    }
    let mut content = extra_content;
    content.insert("membership".to_owned(), json!(new.as_str()));
    let event = NewEvent {
        event_id: ids::new_event_id(),
        room_id: room_id.to_owned(),
        sender: sender.to_owned(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(target.to_string()),
        content: Value::Object(content),
        origin_server_ts: clock::now(),
        txn: None,
    };
    let event_id = event.event_id.clone();
    let (room, snd, tgt) = (room_id.to_owned(), sender.to_owned(), target.to_owned());
    let st = Arc::clone(state);
    // Checked against the members under the room write lock, so two
    // requests cannot both see the old membership.
    let outcome = state
        .room_write(move |s, members| {
            let current = Current::of(members, &room, &snd, &tgt);
            match current.allows(&room, &snd, &tgt, new) {
                Ok(true) => {
                    let stream = s.append_events(&[event])?[0];
                    // Under the room write lock: the engine gets membership
                    // changes in commit order.
                    st.emit_membership(MembershipChange {
                        room_id: room.clone(),
                        user_id: tgt.clone(),
                        sender: snd.clone(),
                        membership: new,
                        stream,
                    });
                    let committed = Committed {
                        memberships: vec![(tgt, new)],
                        ..Committed::events(room, stream)
                    };
                    Ok((Ok(true), Some(committed)))
                }
                Ok(false) => Ok((Ok(false), None)),
                Err(e) => Ok((Err(e), None)),
            }
        })
        .await?;
    Ok(outcome?.then_some(event_id))
}

/// The memberships a change is checked against.
struct Current {
    exists: bool,
    sender: Option<Membership>,
    target: Option<Membership>,
    /// The join rule is `public`.
    public: bool,
}

impl Current {
    /// The facts as the members know them.
    fn of(members: &RoomMembers, room_id: &RoomId, sender: &UserId, target: &UserId) -> Self {
        let room = members.room(room_id);
        Self {
            exists: room.is_some(),
            sender: room.and_then(|r| r.membership(sender)),
            target: room.and_then(|r| r.membership(target)),
            public: room.is_some_and(Room::is_public),
        }
    }

    /// Whether `new` may be stored (`Ok(false)`: it changes nothing).
    fn allows(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        new: Membership,
    ) -> Result<bool, Error> {
        if !self.exists {
            return Err(Error::NotFound(format!("Unknown room {room_id}")));
        }
        match new {
            Membership::Join => match self.target {
                Some(Membership::Join) => Ok(false),
                Some(Membership::Invite) => Ok(true),
                _ if self.public => Ok(true),
                _ => Err(Error::Forbidden(
                    "You are not invited to this room.".to_owned(),
                )),
            },
            Membership::Invite => {
                if self.sender != Some(Membership::Join) {
                    return Err(Error::Forbidden(format!(
                        "{sender} is not in room {room_id}."
                    )));
                }
                match self.target {
                    Some(Membership::Join) => Err(Error::Forbidden(format!(
                        "{target} is already in the room."
                    ))),
                    Some(Membership::Invite) => Ok(false),
                    _ => Ok(true),
                }
            }
            Membership::Leave => {
                if matches!(self.target, Some(Membership::Join | Membership::Invite)) {
                    Ok(true)
                } else {
                    Err(Error::Forbidden(format!(
                        "{target} is not in room {room_id}."
                    )))
                }
            }
        }
    }
}

/// Fails with 403 unless `user` is joined to `room_id`. An unknown room
/// gives the same answer, as in Synapse, so room IDs cannot be probed.
pub fn require_joined(state: &Homeserver, room_id: &RoomId, user: &UserId) -> Result<(), Error> {
    if !state.room_stream.members().is_joined(room_id, user) {
        return Err(Error::Forbidden(format!(
            "{user} is not in room {room_id}."
        )));
    }
    Ok(())
}
