//! The remaining HTTP-observable catalogue scenarios
//! (`../shared/spec/synapse-presence-tests.md`): A10/A11 (rate-limited
//! syncs), L2/L3 (PUT when presence is disabled or untracked), M2 (router
//! under `modules:`), O2 (a token from the future), P3/P4 (presence
//! filters).

use std::time::{Duration, Instant};

use presenced_server::config::presence::PresenceEnabled;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, enc, spawn_app_with, spawn_single_node_with};
use crate::ops::{
    eventually, generous, get_presence, presence_of, presence_path, put_presence, shared_room,
    spawn_rate_limited, sync,
};
use crate::presence::{gobbler_observers, observers_router_flow};

/// A10: with `rc_presence` at one per 10 s, a second presence-setting sync
/// right after the first is served (200) but does not touch presence.
#[tokio::test]
async fn a10_rate_limited_sync_is_served_but_changes_nothing() {
    let Some(app) = spawn_rate_limited().await else {
        return;
    };
    let user = app.register("user").await;
    let (_, body) = get_presence(&app, &user, &user.user_id).await;
    assert_eq!(body["presence"], "offline");
    sync(&app, &user, "set_presence=online&timeout=0").await;
    let (_, body) = get_presence(&app, &user, &user.user_id).await;
    assert_eq!(body["presence"], "online");
    sync(&app, &user, "set_presence=unavailable&timeout=0").await;
    let (_, body) = get_presence(&app, &user, &user.user_id).await;
    assert_eq!(
        body["presence"], "online",
        "the limited sync changed nothing"
    );
}

/// A11, with the rate scaled so the test does not sleep 30 s: once the
/// bucket refills, the next presence-setting sync counts again.
#[tokio::test]
async fn a11_sync_within_the_rate_changes_presence() {
    let app = spawn_app_with(|c| {
        c.rc_presence.per_user.per_second = 5.0;
        c.rc_presence.per_user.burst_count = 1.0;
    })
    .await;
    let user = app.register("user").await;
    sync(&app, &user, "set_presence=online&timeout=0").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    sync(&app, &user, "set_presence=unavailable&timeout=0").await;
    let (_, body) = get_presence(&app, &user, &user.user_id).await;
    assert_eq!(body["presence"], "unavailable");
}

/// L2: presence disabled. PUT still authenticates and validates (our W21
/// position: every presence value is validated, so `"here"` is a 400 even
/// here, unlike Synapse), answers 200 to a valid body and changes
/// nothing; GET says offline.
#[tokio::test]
async fn l2_put_when_presence_is_disabled() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.presence.enabled = Some(PresenceEnabled::Disabled);
    })
    .await;
    let sid = app.register("sid").await;
    let path = presence_path(&sid.user_id);
    let bad = app
        .put(
            &path,
            Some(&sid.token),
            json!({"presence": "here", "status_msg": "beep boop"}),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    put_presence(
        &app,
        &sid,
        json!({"presence": "online", "status_msg": "beep boop"}),
    )
    .await;
    let (status, body) = get_presence(&app, &sid, &sid.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["presence"], "offline");
    assert!(body.get("status_msg").is_none(), "{body}");
    let (status, _) = app.put(&path, None, json!({"presence": "online"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "still authenticated");
}

/// L3: untracked. PUT answers 200 and changes nothing (only the module
/// API changes presence in this mode).
#[tokio::test]
async fn l3_put_when_presence_is_untracked() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.presence.enabled = Some(PresenceEnabled::Untracked);
    })
    .await;
    let sid = app.register("sid").await;
    put_presence(
        &app,
        &sid,
        json!({"presence": "online", "status_msg": "beep boop"}),
    )
    .await;
    let (status, body) = get_presence(&app, &sid, &sid.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["presence"], "offline", "{body}");
}

/// M2: the same router under `modules:` (new-style config), the M1 flow.
#[tokio::test]
async fn m2_observers_router_under_modules() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.modules = vec![gobbler_observers()];
    })
    .await;
    observers_router_flow(&app).await;
}

/// O2: a token whose presence position is past anything handed out is
/// answered at once (no wait) with a `next_batch` the client can use, so
/// the client neither hangs nor spins.
#[tokio::test]
async fn o2_future_token_does_not_hang_or_spin() {
    let Some(app) = spawn_single_node_with("reads the single-node token format", generous).await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    shared_room(&app, &alice, &bob).await;
    let first = sync(&app, &bob, "set_presence=offline").await;
    let token = first["next_batch"].as_str().unwrap();
    let (events, presence) = token[1..].split_once('_').unwrap();
    let future = format!("s{events}_{}", presence.parse::<u64>().unwrap() + 1_000);
    let started = Instant::now();
    let body = sync(
        &app,
        &bob,
        &format!("set_presence=offline&timeout=0&since={future}"),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let next = body["next_batch"].as_str().unwrap().to_owned();
    // The returned token works: a later change arrives through it.
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    eventually(|| {
        let (app, bob, alice, next) = (&app, &bob, &alice, next.clone());
        async move {
            let body = sync(
                app,
                bob,
                &format!("set_presence=offline&timeout=0&since={next}"),
            )
            .await;
            presence_of(&body, &alice.user_id).is_some()
        }
    })
    .await;
}

/// P3/P4: presence filters by `senders`, `not_senders`, `types` and
/// `limit`, inline or stored.
#[tokio::test]
async fn p3_p4_presence_filters_match_and_exclude() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    shared_room(&app, &alice, &bob).await;
    shared_room(&app, &carol, &bob).await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    put_presence(&app, &carol, json!({"presence": "online"})).await;
    let senders = |body: &serde_json::Value| {
        let mut s: Vec<String> = body["presence"]["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["sender"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        s.sort();
        s
    };
    let query = |filter: serde_json::Value| {
        format!("set_presence=offline&filter={}", enc(&filter.to_string()))
    };
    let all = sync(&app, &bob, "set_presence=offline").await;
    assert_eq!(
        senders(&all),
        vec![alice.user_id.clone(), carol.user_id.clone()]
    );
    let only_alice = json!({"presence": {"senders": [alice.user_id]}});
    assert_eq!(
        senders(&sync(&app, &bob, &query(only_alice)).await),
        vec![alice.user_id.clone()]
    );
    let not_alice = json!({"presence": {"not_senders": [alice.user_id]}});
    assert_eq!(
        senders(&sync(&app, &bob, &query(not_alice)).await),
        vec![carol.user_id.clone()]
    );
    let wrong_type = json!({"presence": {"types": ["m.typing"]}});
    assert!(senders(&sync(&app, &bob, &query(wrong_type)).await).is_empty());
    let right_type = json!({"presence": {"types": ["m.presence"]}});
    assert_eq!(
        senders(&sync(&app, &bob, &query(right_type)).await).len(),
        2
    );
    let limited = json!({"presence": {"limit": 1}});
    assert_eq!(senders(&sync(&app, &bob, &query(limited)).await).len(), 1);
    // A stored filter by ID behaves the same.
    let (status, body) = app
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&bob.user_id)),
            Some(&bob.token),
            json!({"presence": {"not_senders": [carol.user_id]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap();
    let body = sync(&app, &bob, &format!("set_presence=offline&filter={id}")).await;
    assert_eq!(senders(&body), vec![alice.user_id.clone()]);
}
