//! Rooms: create, invite, join, leave, listings, sends, activity.

use presenced_server::Membership;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, enc, spawn_app, spawn_single_node_with, TestApp, User};

async fn create_room(app: &TestApp, user: &User, body: serde_json::Value) -> String {
    let (status, body) = app
        .post("/_matrix/client/v3/createRoom", Some(&user.token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn joined_members(app: &TestApp, user: &User, room: &str) -> Vec<String> {
    let (status, body) = app
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut members: Vec<String> = body["joined"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    members.sort();
    members
}

#[tokio::test]
async fn create_invite_join_leave() {
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let room = create_room(
        &app,
        &alice,
        json!({ "name": "Chat", "preset": "private_chat" }),
    )
    .await;
    let change = app.next_membership().await;
    assert_eq!(
        (change.room_id.as_str(), change.user_id.as_str()),
        (room.as_str(), "@alice:test.local")
    );
    assert_eq!(change.membership, Membership::Join);

    // Bob cannot join uninvited.
    let join_path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_error(
        &app.post(&join_path, Some(&bob.token), json!({})).await,
        403,
        "M_FORBIDDEN",
    );

    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (status, body) = app
        .post(
            &invite_path,
            Some(&alice.token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let change = app.next_membership().await;
    assert_eq!(
        (change.user_id.as_str(), change.membership),
        ("@bob:test.local", Membership::Invite)
    );

    // Members list shows the invite; joined_members does not.
    let (_, members) = app
        .get(
            &format!("/_matrix/client/v3/rooms/{}/members", enc(&room)),
            Some(&alice.token),
        )
        .await;
    let chunk = members["chunk"].as_array().unwrap();
    assert!(chunk
        .iter()
        .any(|e| e["state_key"] == "@bob:test.local" && e["content"]["membership"] == "invite"));
    assert_eq!(
        joined_members(&app, &alice, &room).await,
        vec!["@alice:test.local"]
    );

    // Join via /join/{roomIdOrAlias} with no body at all.
    let resp = app
        .client
        .post(format!(
            "{}/_matrix/client/v3/join/{}",
            app.base,
            enc(&room)
        ))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let change = app.next_membership().await;
    assert_eq!(
        (change.user_id.as_str(), change.membership),
        ("@bob:test.local", Membership::Join)
    );
    assert_eq!(
        joined_members(&app, &bob, &room).await,
        vec!["@alice:test.local", "@bob:test.local"]
    );

    // Joining again changes nothing and emits nothing.
    assert_eq!(
        app.post(&join_path, Some(&bob.token), json!({})).await.0,
        StatusCode::OK
    );

    let (_, rooms) = app
        .get("/_matrix/client/v3/joined_rooms", Some(&bob.token))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([room]));

    let leave_path = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(
        app.post(&leave_path, Some(&bob.token), json!({})).await.0,
        StatusCode::OK
    );
    let change = app.next_membership().await;
    assert_eq!(
        (change.user_id.as_str(), change.membership),
        ("@bob:test.local", Membership::Leave)
    );
    assert_eq!(
        joined_members(&app, &alice, &room).await,
        vec!["@alice:test.local"]
    );
    let (_, rooms) = app
        .get("/_matrix/client/v3/joined_rooms", Some(&bob.token))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));

    // A leaver cannot list members, nor leave twice.
    assert_error(
        &app.get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            Some(&bob.token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &app.post(&leave_path, Some(&bob.token), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert!(
        app.membership_rx.try_recv().is_err(),
        "no change for refused or idempotent calls"
    );
}

#[tokio::test]
async fn create_room_with_invites_and_public_join() {
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;

    let dm = create_room(
        &app,
        &alice,
        json!({ "invite": [bob.user_id], "is_direct": true, "preset": "trusted_private_chat" }),
    )
    .await;
    let first = app.next_membership().await;
    let second = app.next_membership().await;
    assert_eq!(
        (first.user_id.as_str(), first.membership),
        ("@alice:test.local", Membership::Join)
    );
    assert_eq!(
        (second.user_id.as_str(), second.membership),
        ("@bob:test.local", Membership::Invite)
    );
    assert_eq!(second.room_id.as_str(), dm);
    assert!(second.stream > first.stream);
    let (_, members) = app
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/members?membership=invite",
                enc(&dm)
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(members["chunk"][0]["content"]["is_direct"], true);
    assert_eq!(members["chunk"].as_array().unwrap().len(), 1);

    // Invites to unknown or remote users are refused.
    let unknown = json!({ "invite": ["@ghost:test.local"] });
    assert_error(
        &app.post("/_matrix/client/v3/createRoom", Some(&alice.token), unknown)
            .await,
        404,
        "M_NOT_FOUND",
    );
    let remote = json!({ "invite": ["@x:elsewhere.org"] });
    assert_error(
        &app.post("/_matrix/client/v3/createRoom", Some(&alice.token), remote)
            .await,
        403,
        "M_FORBIDDEN",
    );

    let public = create_room(&app, &alice, json!({ "visibility": "public" })).await;
    let _ = app.next_membership().await;
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc(&public));
    let (status, body) = app.post(&path, Some(&carol.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["room_id"], public);
    let change = app.next_membership().await;
    assert_eq!(
        (change.user_id.as_str(), change.membership),
        ("@carol:test.local", Membership::Join)
    );

    // Unknown room.
    assert_error(
        &app.post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc("!nope:test.local")),
            Some(&carol.token),
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn send_is_idempotent_and_counts_as_activity() {
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, json!({})).await;

    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/txn1",
        enc(&room)
    );
    let msg = json!({ "msgtype": "m.text", "body": "hi" });
    let (status, first) = app.put(&path, Some(&alice.token), msg.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = app.put(&path, Some(&alice.token), msg.clone()).await;
    assert_eq!(first["event_id"], again["event_id"]);
    if crate::cluster_backend::single_node_only(
        "reads node 0's activity feed; requests go to any node",
    ) {
        return;
    }
    let activity = app.next_activity().await;
    assert_eq!(
        (activity.user.as_str(), activity.device.as_str()),
        ("@alice:test.local", alice.device_id.as_str())
    );

    // Encrypted events are stored like any other.
    let enc_path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/txn2",
        enc(&room)
    );
    let (status, _) = app
        .put(
            &enc_path,
            Some(&alice.token),
            json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Non-members cannot send.
    let bob_path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t",
        enc(&room)
    );
    assert_error(
        &app.put(&bob_path, Some(&bob.token), msg).await,
        403,
        "M_FORBIDDEN",
    );

    // Timeline holds the two sends after the initial state.
    let room_id: &ruma_common::RoomId = room.as_str().try_into().unwrap();
    let upto = app.state.homeserver.store.max_stream().unwrap();
    let timeline = app
        .state
        .homeserver
        .store
        .timeline(room_id, None, upto, 2)
        .unwrap();
    assert!(timeline.limited);
    let types: Vec<_> = timeline
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["m.room.message", "m.room.encrypted"]);
    assert_eq!(
        timeline.events[0].event_id.as_str(),
        first["event_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn typing_receipts_and_read_markers_count_as_activity() {
    if crate::cluster_backend::single_node_only(
        "reads node 0's activity feed; requests go to any node",
    ) {
        return;
    }
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, json!({})).await;
    let r = enc(&room);

    let typing = format!(
        "/_matrix/client/v3/rooms/{r}/typing/{}",
        enc(&alice.user_id)
    );
    assert_eq!(
        app.put(
            &typing,
            Some(&alice.token),
            json!({ "typing": true, "timeout": 3000 })
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(app.next_activity().await.user.as_str(), "@alice:test.local");
    // Someone else's typing state: forbidden, no activity.
    assert_error(
        &app.put(&typing, Some(&bob.token), json!({ "typing": true }))
            .await,
        403,
        "M_FORBIDDEN",
    );

    let receipt = format!(
        "/_matrix/client/v3/rooms/{r}/receipt/m.read/{}",
        enc("$event")
    );
    assert_eq!(
        app.post(&receipt, Some(&alice.token), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(app.next_activity().await.user.as_str(), "@alice:test.local");

    let markers = format!("/_matrix/client/v3/rooms/{r}/read_markers");
    assert_eq!(
        app.post(
            &markers,
            Some(&alice.token),
            json!({ "m.fully_read": "$event", "m.read": "$event" })
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(app.next_activity().await.device.as_str(), alice.device_id);
    assert!(app.activity_rx.try_recv().is_err());
}

#[tokio::test]
async fn filters_round_trip() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let filter = json!({ "presence": { "not_types": ["*"] } });
    let (status, body) = app.post(&path, Some(&alice.token), filter.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["filter_id"].as_str().unwrap();
    let (status, back) = app.get(&format!("{path}/{id}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(back, filter);
    assert_error(
        &app.get(&format!("{path}/999"), Some(&alice.token)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &app.post(&path, Some(&bob.token), filter).await,
        403,
        "M_FORBIDDEN",
    );
}

/// Room writes check and wake from the members kept in memory: many joins
/// at once all land, each joiner may send at once, and a leaver may not.
#[tokio::test]
async fn concurrent_joins_all_land_and_count_at_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(app.register(&format!("u{i}")).await);
    }
    let invite: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    let room = create_room(
        &app,
        &alice,
        json!({ "preset": "private_chat", "invite": invite }),
    )
    .await;
    let join_path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    let joins = users.iter().map(|u| {
        let (app, path) = (&app, &join_path);
        async move { app.post(path, Some(&u.token), json!({})).await }
    });
    for (status, body) in futures::future::join_all(joins).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut expected: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    expected.push(alice.user_id.clone());
    expected.sort();
    assert_eq!(joined_members(&app, &alice, &room).await, expected);

    let send = |user: &User, txn: &str| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(&room)
        );
        let token = user.token.clone();
        let app = &app;
        async move {
            app.put(
                &path,
                Some(&token),
                json!({ "msgtype": "m.text", "body": "hi" }),
            )
            .await
        }
    };
    assert_eq!(send(&users[7], "t1").await.0, StatusCode::OK);
    let leave_path = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    let (status, body) = app
        .post(&leave_path, Some(&users[7].token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(&send(&users[7], "t2").await, 403, "M_FORBIDDEN");
    // Leaving twice is refused: the leaver is gone from the room.
    assert_error(
        &app.post(&leave_path, Some(&users[7].token), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

/// The members in memory are loaded from the database at start-up:
/// joins, invites and join rules survive a restart, leaves stay gone.
#[tokio::test]
async fn room_members_survive_a_restart() {
    let Some(app) = spawn_single_node_with(
        "restarts its server in-process",
        crate::helpers::sqlite_only,
    )
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let private = create_room(
        &app,
        &alice,
        json!({ "preset": "private_chat", "invite": [bob.user_id, carol.user_id] }),
    )
    .await;
    let public = create_room(&app, &alice, json!({ "preset": "public_chat" })).await;
    let (status, _) = app
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&private)),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let config = (*app.state.config).clone();
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));
    let members = state.homeserver.room_stream.members();
    let id = |s: &str| -> ruma_common::OwnedUserId { s.try_into().unwrap() };
    let room = |s: &str| -> ruma_common::OwnedRoomId { s.try_into().unwrap() };
    let (private, public) = (room(&private), room(&public));
    assert_eq!(members.room_count(), 2);
    assert!(members.is_joined(&private, &id(&alice.user_id)));
    assert_eq!(
        members.membership(&private, &id(&bob.user_id)),
        Some(Membership::Invite)
    );
    assert_eq!(members.membership(&private, &id(&carol.user_id)), None);
    assert!(!members.room(&private).unwrap().is_public());
    assert!(members.room(&public).unwrap().is_public());
    assert_eq!(members.room(&public).unwrap().joined_count(), 1);
}

/// `room.rooms` / `room.not_rooms` in a sync filter choose the rooms the
/// `rooms` section covers; `{"room": {"rooms": []}}` (presence-only
/// clients) gets none.
#[tokio::test]
async fn sync_room_filter_chooses_the_rooms() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = create_room(&app, &alice, json!({ "name": "One" })).await;
    let second = create_room(&app, &alice, json!({ "name": "Two" })).await;
    let joined = |filter: serde_json::Value| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            let path = format!(
                "/_matrix/client/v3/sync?filter={}",
                enc(&filter.to_string())
            );
            let (status, body) = app.get(&path, Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let mut rooms: Vec<String> = body["rooms"]["join"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            rooms.sort();
            rooms
        }
    };
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(joined(json!({})).await, both);
    assert_eq!(
        joined(json!({"room": {"rooms": []}})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        joined(json!({"room": {"rooms": [first]}})).await,
        vec![first.clone()]
    );
    assert_eq!(
        joined(json!({"room": {"not_rooms": [first]}})).await,
        vec![second.clone()]
    );
}
