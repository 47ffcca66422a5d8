//! Room events wake a waiting `/sync` (no polling), and dead access tokens
//! are refused at once although tokens are cached in memory.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, enc, spawn_app, TestApp, User};

/// A filter that leaves presence out, so only room changes can end a wait.
const NO_PRESENCE: &str = r#"{"presence":{"not_types":["*"]}}"#;

/// Long enough that "returned before the timeout" cannot be luck.
const LONG_POLL_MS: u64 = 60_000;

async fn create_room(app: &TestApp, user: &User, body: Value) -> String {
    let (status, body) = app
        .post("/_matrix/client/v3/createRoom", Some(&user.token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn sync(app: &TestApp, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!(
        "/_matrix/client/v3/sync?timeout={timeout_ms}&set_presence=offline&filter={}",
        enc(NO_PRESENCE)
    );
    if let Some(since) = since {
        path.push_str(&format!("&since={}", enc(since)));
    }
    let (status, body) = app.get(&path, Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

/// Starts a long-poll from `since` in the background.
fn long_poll(
    app: &TestApp,
    user: &User,
    since: &str,
) -> tokio::task::JoinHandle<(Duration, StatusCode, Value)> {
    let (client, token) = (app.client.clone(), user.token.clone());
    let url = format!(
        "{}/_matrix/client/v3/sync?timeout={LONG_POLL_MS}&set_presence=offline&filter={}&since={}",
        app.base,
        enc(NO_PRESENCE),
        enc(since)
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let resp = client.get(url).bearer_auth(token).send().await.unwrap();
        let status = resp.status();
        let body = resp.json().await.unwrap();
        (started.elapsed(), status, body)
    })
}

/// Gives the background sync time to start waiting (a loaded machine may
/// need a while; arriving late only makes the test pass without waiting).
async fn let_it_wait() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn timeline_types(body: &Value, room: &str) -> Vec<String> {
    body["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_message_wakes_a_waiting_sync() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_eq!(app.post(&join, Some(&bob.token), json!({})).await.0, 200);
    let since = next_batch(&sync(&app, &alice, None, 0).await);

    let waiting = long_poll(&app, &alice, &since);
    let_it_wait().await;
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
        enc(&room)
    );
    let sent = app
        .put(
            &send,
            Some(&bob.token),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!(sent.0, 200, "{}", sent.1);

    let (took, status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        took < Duration::from_millis(LONG_POLL_MS / 2),
        "the sync waited {took:?}"
    );
    assert_eq!(timeline_types(&body, &room), ["m.room.message"], "{body}");
    assert_ne!(next_batch(&body), since);
}

#[tokio::test]
async fn a_join_wakes_the_members_and_an_invite_the_invitee() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = create_room(&app, &alice, json!({})).await;
    let alice_since = next_batch(&sync(&app, &alice, None, 0).await);
    let bob_since = next_batch(&sync(&app, &bob, None, 0).await);

    // The invite wakes bob, who is in no room with alice yet.
    let bob_waiting = long_poll(&app, &bob, &bob_since);
    let_it_wait().await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invited = app
        .post(&invite, Some(&alice.token), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    let (took, _, body) = bob_waiting.await.unwrap();
    assert!(took < Duration::from_millis(LONG_POLL_MS / 2), "{took:?}");
    assert!(body["rooms"]["invite"][&room].is_object(), "{body}");

    // Alice's sync from before the invite returns at once (the invite is
    // news for her); from its token on she waits until bob joins.
    let alice_since = next_batch(&sync(&app, &alice, Some(&alice_since), 0).await);
    let alice_waiting = long_poll(&app, &alice, &alice_since);
    let_it_wait().await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_eq!(app.post(&join, Some(&bob.token), json!({})).await.0, 200);
    let (took, _, body) = alice_waiting.await.unwrap();
    assert!(took < Duration::from_millis(LONG_POLL_MS / 2), "{took:?}");
    assert_eq!(timeline_types(&body, &room), ["m.room.member"], "{body}");
}

#[tokio::test]
async fn without_room_changes_a_sync_waits_for_its_timeout() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    create_room(&app, &alice, json!({})).await;
    let bobs_room = create_room(&app, &bob, json!({})).await;
    let since = next_batch(&sync(&app, &alice, None, 0).await);

    // Activity in a room alice is not in does not end her wait.
    let chatter = {
        let (app_base, client, token) = (app.base.clone(), app.client.clone(), bob.token.clone());
        tokio::spawn(async move {
            for i in 0..5 {
                let url = format!(
                    "{app_base}/_matrix/client/v3/rooms/{}/send/m.room.message/c{i}",
                    enc(&bobs_room)
                );
                let body = json!({"msgtype": "m.text", "body": "hi"});
                client
                    .put(url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let body = sync(&app, &alice, Some(&since), 2_000).await;
    let took = started.elapsed();
    chatter.await.unwrap();
    assert!(
        took >= Duration::from_millis(1_900),
        "returned after {took:?}: {body}"
    );
    assert_eq!(
        body["rooms"],
        json!({"join": {}, "invite": {}, "leave": {}}),
        "{body}"
    );
}

async fn whoami(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/_matrix/client/v3/account/whoami", Some(token))
        .await
}

async fn login(app: &TestApp, localpart: &str, device: Option<&str>) -> String {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": "password",
    });
    if let Some(device) = device {
        body["device_id"] = json!(device);
    }
    let (status, body) = app.post("/_matrix/client/v3/login", None, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dead_tokens_are_refused_at_once_though_cached() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let second = login(&app, "alice", None).await;
    let third = login(&app, "alice", Some("PHONE")).await;
    // Each token is used first, so it sits in the cache.
    for token in [&alice.token, &second, &third] {
        assert_eq!(whoami(&app, token).await.0, 200);
    }

    // Logging in again on the same device replaces its token.
    let fourth = login(&app, "alice", Some("PHONE")).await;
    assert_error(&whoami(&app, &third).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(whoami(&app, &fourth).await.0, 200);

    // Logout kills this device's token only.
    let (status, _) = app
        .post("/_matrix/client/v3/logout", Some(&second), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_error(&whoami(&app, &second).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(whoami(&app, &alice.token).await.0, 200);

    // Logout/all kills the rest.
    let (status, _) = app
        .post(
            "/_matrix/client/v3/logout/all",
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    for token in [&alice.token, &fourth] {
        assert_error(&whoami(&app, token).await, 401, "M_UNKNOWN_TOKEN");
    }
}

#[tokio::test]
async fn a_deactivated_users_cached_token_dies_at_once() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    assert_eq!(whoami(&app, &bob.token).await.0, 200);
    let (status, body) = app
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&bob.token),
            json!({"auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "bob"},
                "password": "password",
            }}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(&whoami(&app, &bob.token).await, 401, "M_UNKNOWN_TOKEN");
}
