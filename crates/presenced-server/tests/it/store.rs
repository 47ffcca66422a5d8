//! The store queries `/sync` will build on, checked directly.

use presenced_server::store::sqlite::SqliteStore;
use presenced_server::store::{NewEvent, Store};
use presenced_server::Membership;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde_json::json;

fn member_event(room: &OwnedRoomId, user: &OwnedUserId, membership: &str) -> NewEvent {
    NewEvent {
        event_id: presenced_server::util::ids::new_event_id(),
        room_id: room.clone(),
        sender: user.clone(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(user.to_string()),
        content: json!({ "membership": membership }),
        origin_server_ts: 1,
        txn: None,
    }
}

fn message(room: &OwnedRoomId, user: &OwnedUserId, body: &str) -> NewEvent {
    NewEvent {
        state_key: None,
        event_type: "m.room.message".to_owned(),
        content: json!({ "body": body }),
        ..member_event(room, user, "join")
    }
}

#[test]
fn membership_changes_and_timelines_since_a_position() {
    let store = SqliteStore::in_memory().unwrap();
    let alice: OwnedUserId = "@alice:x.org".try_into().unwrap();
    let bob: OwnedUserId = "@bob:x.org".try_into().unwrap();
    let r1: OwnedRoomId = "!one:x.org".try_into().unwrap();
    let r2: OwnedRoomId = "!two:x.org".try_into().unwrap();
    store
        .create_room(&r1, &alice, 0, &[member_event(&r1, &alice, "join")])
        .unwrap();
    store
        .create_room(&r2, &alice, 0, &[member_event(&r2, &alice, "join")])
        .unwrap();
    let before_bob = store.max_stream().unwrap();

    store
        .append_events(&[member_event(&r1, &bob, "invite")])
        .unwrap();
    store
        .append_events(&[member_event(&r1, &bob, "join")])
        .unwrap();
    store
        .append_events(&[member_event(&r2, &bob, "invite")])
        .unwrap();
    store
        .append_events(&[message(&r1, &alice, "one"), message(&r1, &bob, "two")])
        .unwrap();
    let now = store.max_stream().unwrap();

    // Bob's rooms since before he was invited: joined r1, invited to r2.
    let changes = store.membership_changes(&bob, before_bob, now).unwrap();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.room_id.as_str(), c.membership))
        .collect();
    assert_eq!(
        summary,
        [
            ("!one:x.org", Membership::Join),
            ("!two:x.org", Membership::Invite)
        ]
    );
    assert!(store.membership_changes(&bob, now, now).unwrap().is_empty());

    // Leaving shows up as a leave.
    store
        .append_events(&[member_event(&r2, &bob, "leave")])
        .unwrap();
    let later = store.max_stream().unwrap();
    let changes = store.membership_changes(&bob, now, later).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].membership, Membership::Leave);

    // Timeline of r1 since Bob's join: the two messages.
    let join_pos = store
        .user_memberships(&bob)
        .unwrap()
        .iter()
        .find(|m| m.room_id == r1)
        .unwrap()
        .stream;
    let tl = store.timeline(&r1, Some(join_pos), later, 10).unwrap();
    assert!(!tl.limited);
    let bodies: Vec<_> = tl
        .events
        .iter()
        .map(|e| e.content["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two"]);

    // State at a position: before Bob joined r1 he was only invited.
    let state = store.state_at(&r1, join_pos - 1).unwrap();
    let bob_member = state
        .iter()
        .find(|e| e.state_key.as_deref() == Some("@bob:x.org"))
        .unwrap();
    assert_eq!(bob_member.content["membership"], "invite");
    let state = store.state_at(&r1, later).unwrap();
    let bob_member = state
        .iter()
        .find(|e| e.state_key.as_deref() == Some("@bob:x.org"))
        .unwrap();
    assert_eq!(bob_member.content["membership"], "join");

    assert_eq!(
        store.membership(&r2, &bob).unwrap(),
        Some(Membership::Leave)
    );
    assert_eq!(store.room_memberships(&r1).unwrap().len(), 2);
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let alice: OwnedUserId = "@alice:x.org".try_into().unwrap();
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_user(&presenced_server::store::NewUser {
                user_id: alice.clone(),
                password_hash: None,
                admin: true,
                created_ts: 0,
            })
            .unwrap();
    }
    // Reopening runs no migration twice and finds the user.
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.user(&alice).unwrap().unwrap().admin);
}
