//! Helpers shared by the operator-facing tests (`admin`, `deactivate`,
//! `metrics`, `server_wide`).

use std::time::{Duration, Instant};

use presenced_server::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{enc, spawn_single_node_with, TestApp, User};

/// Lifts `rc_presence` so tests can PUT and sync freely.
pub fn generous(config: &mut Config) {
    config.rc_presence.per_user.per_second = 1000.0;
    config.rc_presence.per_user.burst_count = 1000.0;
}

/// A server whose `rc_presence` allows one update, then 429 for ten
/// seconds (0.1 a second, burst 1), for the tests of the limit: `None` on
/// the cluster backend, where rate limits are per node.
pub async fn spawn_rate_limited() -> Option<TestApp> {
    spawn_single_node_with("rate limits are per node (issue 16 left)", |config| {
        config.rc_presence.per_user.per_second = 0.1;
        config.rc_presence.per_user.burst_count = 1.0;
    })
    .await
}

pub fn presence_path(user_id: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user_id))
}

pub async fn put_presence(app: &TestApp, user: &User, body: Value) {
    let (status, body) = app
        .put(&presence_path(&user.user_id), Some(&user.token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub async fn get_presence(app: &TestApp, who: &User, target: &str) -> (StatusCode, Value) {
    app.get(&presence_path(target), Some(&who.token)).await
}

pub async fn sync(app: &TestApp, user: &User, query: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/_matrix/client/v3/sync?{query}"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The content of `sender`'s presence event in a sync response.
pub fn presence_of(body: &Value, sender: &str) -> Option<Value> {
    body["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == sender)
        .map(|e| e["content"].clone())
}

/// Waits (bounded) until a condition on fresh data holds.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
/// `a` creates a room, invites `b`, `b` joins; returns the room ID.
pub async fn shared_room(app: &TestApp, a: &User, b: &User) -> String {
    let (status, body) = app
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&a.token),
            json!({"invite": [b.user_id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            Some(&b.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    room
}

/// Registers a server admin through the shared-secret admin API.
pub async fn register_admin(app: &TestApp, localpart: &str) -> User {
    app.register_as(localpart, true).await
}
