//! Presence over HTTP: PUT/GET, visibility, `/sync` (initial, incremental,
//! long-poll wake-ups), `rc_presence`, routing by a built-in router.

use std::time::{Duration, Instant};

use presenced_server::config::presence::ModuleConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, enc, spawn_app_with, spawn_single_node_with, sqlite_only, TestApp, User,
};
use crate::ops::{
    eventually, generous, get_presence, presence_of, shared_room, spawn_rate_limited, sync,
};

async fn app() -> TestApp {
    spawn_app_with(generous).await
}

/// A PUT whose answer the test inspects (`ops::put_presence` asserts 200).
async fn put_presence(app: &TestApp, user: &User, body: Value) -> (StatusCode, Value) {
    app.put(
        &format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id)),
        Some(&user.token),
        body,
    )
    .await
}

#[tokio::test]
async fn put_then_get_own_presence() {
    let app = app().await;
    let alice = app.register("alice").await;
    let resp = put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "hello"}),
    )
    .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let (status, body) = get_presence(&app, &alice, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "hello");
    assert_eq!(body["currently_active"], true);
    assert!(body["last_active_ago"].as_u64().unwrap() < 5_000);
    assert!(body.get("user_id").is_none());

    // An explicit null clears the message, like leaving it out.
    put_presence(
        &app,
        &alice,
        json!({"presence": "org.matrix.msc3026.busy", "status_msg": null}),
    )
    .await;
    let (_, body) = get_presence(&app, &alice, &alice.user_id).await;
    assert_eq!(body["presence"], "org.matrix.msc3026.busy");
    assert!(body.get("status_msg").is_none(), "{body}");
}

#[tokio::test]
async fn bad_presence_requests_get_clear_errors_and_change_nothing() {
    let app = app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "kept"}),
    )
    .await;
    assert_error(
        &put_presence(&app, &alice, json!({"presence": "here"})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &put_presence(&app, &alice, json!({"presence": "online", "mood": "x"})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &put_presence(&app, &alice, json!({"presence": "online", "status_msg": 3})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &put_presence(&app, &alice, json!({"status_msg": "no state"})).await,
        400,
        "M_BAD_JSON",
    );
    let other = app
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
            Some(&alice.token),
            json!({"presence": "offline"}),
        )
        .await;
    assert_error(&other, 403, "M_FORBIDDEN");
    let (_, body) = get_presence(&app, &alice, &alice.user_id).await;
    assert_eq!(
        (body["presence"].clone(), body["status_msg"].clone()),
        (json!("online"), json!("kept"))
    );
}

#[tokio::test]
async fn get_visibility_follows_shared_rooms() {
    let app = app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    put_presence(&app, &alice, json!({"presence": "unavailable"})).await;
    assert_error(
        &get_presence(&app, &bob, &alice.user_id).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &get_presence(&app, &bob, "@nobody:test.local").await,
        404,
        "M_NOT_FOUND",
    );
    shared_room(&app, &alice, &bob).await;
    eventually(|| async { get_presence(&app, &bob, &alice.user_id).await.0 == StatusCode::OK })
        .await;
    assert_eq!(
        get_presence(&app, &bob, &alice.user_id).await.1["presence"],
        "unavailable"
    );
    assert_error(
        &get_presence(&app, &carol, &alice.user_id).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn sync_shows_co_members_presence_and_long_polls_wake_up() {
    let app = app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    shared_room(&app, &alice, &bob).await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "first"}),
    )
    .await;

    // Initial sync (not touching bob's own presence) sees alice.
    let deadline = Instant::now() + Duration::from_secs(5);
    let next = loop {
        let body = sync(&app, &bob, "set_presence=offline").await;
        if presence_of(&body, &alice.user_id).is_some_and(|c| c["status_msg"] == "first") {
            break body["next_batch"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "bob never saw alice: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let initial = sync(&app, &bob, "set_presence=offline").await;
    assert!(
        presence_of(&initial, &bob.user_id).is_none(),
        "offline users are left out of initial syncs"
    );

    // Nothing new: an incremental sync with timeout 0 has no presence.
    let body = sync(
        &app,
        &bob,
        &format!("set_presence=offline&since={next}&timeout=0"),
    )
    .await;
    assert!(body.get("presence").is_none(), "{body}");
    let next = body["next_batch"].as_str().unwrap().to_owned();

    // A long-poll is woken by alice's change, well before its timeout.
    let waiter = {
        let (base, token, next) = (app.base.clone(), bob.token.clone(), next.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = reqwest::Client::new()
                .get(format!(
                    "{base}/_matrix/client/v3/sync?set_presence=offline&timeout=10000&since={next}"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "unavailable", "status_msg": "second"}),
    )
    .await;
    let (waited, body) = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    let alice_now = presence_of(&body, &alice.user_id).expect("alice's change");
    assert_eq!(alice_now["presence"], "unavailable");
    assert_eq!(alice_now["status_msg"], "second");
    assert!(
        alice_now.get("currently_active").is_none(),
        "only shown for online users"
    );
}

#[tokio::test]
async fn syncing_sets_presence_and_filters_can_disable_it() {
    let app = app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    shared_room(&app, &alice, &bob).await;
    sync(&app, &alice, "set_presence=online&timeout=0").await;
    let (_, body) = get_presence(&app, &bob, &alice.user_id).await;
    assert_eq!(body["presence"], "online");
    let filter = enc(r#"{"presence":{"not_types":["*"]}}"#);
    eventually(|| async {
        presence_of(
            &sync(&app, &bob, "set_presence=offline").await,
            &alice.user_id,
        )
        .is_some()
    })
    .await;
    let body = sync(&app, &bob, &format!("set_presence=offline&filter={filter}")).await;
    assert!(body.get("presence").is_none(), "{body}");
    let bad = app
        .get(
            "/_matrix/client/v3/sync?set_presence=away",
            Some(&bob.token),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    let bad = app
        .get("/_matrix/client/v3/sync?since=garbage", Some(&bob.token))
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn rc_presence_limits_puts_with_retry_after() {
    let Some(app) = spawn_rate_limited().await else {
        return;
    };
    let alice = app.register("alice").await;
    assert_eq!(
        put_presence(&app, &alice, json!({"presence": "online"}))
            .await
            .0,
        StatusCode::OK
    );
    let limited = put_presence(&app, &alice, json!({"presence": "unavailable"})).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"].as_u64().unwrap();
    assert!((9_000..=10_000).contains(&retry), "{retry}");
    let (_, body) = get_presence(&app, &alice, &alice.user_id).await;
    assert_eq!(
        body["presence"], "online",
        "the limited call changed nothing"
    );
}

#[tokio::test]
async fn static_routes_show_presence_without_a_shared_room() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.modules.push(ModuleConfig {
            module: "presenced.routers.StaticRoutes".to_owned(),
            config: json!({"routes": [{"receiver": "@carol:test.local", "senders": ["@alice:test.local"]}]}),
            deadline_ms: None,
        });
    })
    .await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "routed"}),
    )
    .await;
    // Carol may GET alice's presence (routing counts, W4) and sees it in sync.
    assert_eq!(
        get_presence(&app, &carol, &alice.user_id).await.1["status_msg"],
        "routed"
    );
    eventually(|| async {
        presence_of(
            &sync(&app, &carol, "set_presence=offline").await,
            &alice.user_id,
        )
        .is_some()
    })
    .await;
    // Dave is not routed.
    assert_error(
        &get_presence(&app, &dave, &alice.user_id).await,
        403,
        "M_FORBIDDEN",
    );
    assert!(presence_of(
        &sync(&app, &dave, "set_presence=offline").await,
        &alice.user_id
    )
    .is_none());
}

/// An acknowledged presence change is stored before the PUT answers: a
/// second server started on the same database (as after `kill -9`) has it,
/// and its stream continues past the stored positions.
#[tokio::test]
async fn acknowledged_presence_survives_a_restart() {
    let Some(app) = spawn_single_node_with("restarts its server in-process", |c| {
        generous(c);
        sqlite_only(c);
    })
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let resp = put_presence(
        &app,
        &alice,
        json!({"presence": "unavailable", "status_msg": "persisted"}),
    )
    .await;
    assert_eq!(resp.0, StatusCode::OK);
    let before = app.state.presence.position();

    let config = (*app.state.config).clone();
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));
    let user: ruma_common::OwnedUserId = alice.user_id.as_str().try_into().unwrap();
    let (restarted, _) = state.presence.state_of(&user);
    assert_eq!(restarted.presence.as_str(), "unavailable");
    assert_eq!(restarted.status_msg.as_deref(), Some("persisted"));
    assert!(
        state.presence.position() >= before,
        "the stream resumes where it was"
    );
}

/// Catalogue M1 (legacy config): an observer routed everyone's presence by
/// `presence.presence_router` sees every update, its own included, with no
/// shared room; a room member sees only co-members. M2 (the same under
/// `modules:`) runs the same flow, `presence_catalogue.rs`.
#[tokio::test]
async fn legacy_observers_router_sees_everything() {
    let app = spawn_app_with(|c| {
        generous(c);
        c.presence.presence_router = Some(gobbler_observers());
    })
    .await;
    observers_router_flow(&app).await;
}

/// `presenced.routers.Observers` with `@presence_gobbler` as the observer.
pub(crate) fn gobbler_observers() -> ModuleConfig {
    let mut router = ModuleConfig::new("presenced.routers.Observers");
    router.config = json!({"observers": ["@presence_gobbler:test.local"]});
    router
}

/// The M1/M2 flow against a server routing everything to the gobbler.
pub(crate) async fn observers_router_flow(app: &TestApp) {
    let gobbler = app.register("presence_gobbler").await;
    let one = app.register("other_user_one").await;
    let two = app.register("other_user_two").await;
    shared_room(app, &one, &two).await;
    crate::ops::put_presence(
        app,
        &one,
        json!({"presence": "online", "status_msg": "boop"}),
    )
    .await;
    let first = sync(app, &gobbler, "set_presence=offline").await;
    assert_eq!(
        first["presence"]["events"].as_array().unwrap().len(),
        1,
        "{first}"
    );
    assert_eq!(
        presence_of(&first, &one.user_id).unwrap()["status_msg"],
        "boop"
    );
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let updates = [
        (&one, "user_one"),
        (&two, "user_two"),
        (&gobbler, "presence_gobbler"),
    ];
    for (user, msg) in updates {
        crate::ops::put_presence(app, user, json!({"presence": "online", "status_msg": msg})).await;
    }
    let body = sync(
        app,
        &gobbler,
        &format!("set_presence=offline&since={since}"),
    )
    .await;
    assert_eq!(
        body["presence"]["events"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    for (user, msg) in updates {
        assert_eq!(
            presence_of(&body, &user.user_id).unwrap()["status_msg"],
            msg
        );
    }
    let body = sync(app, &one, "set_presence=offline").await;
    assert_eq!(
        body["presence"]["events"].as_array().unwrap().len(),
        2,
        "{body}"
    );
    assert_eq!(
        presence_of(&body, &two.user_id).unwrap()["status_msg"],
        "user_two"
    );
    assert!(
        presence_of(&body, &gobbler.user_id).is_none(),
        "not routed the other way"
    );
}

/// Catalogue J3 and K2: a room in `exclude_rooms_from_presence` does not
/// make its members see each other; a second, ordinary room does.
#[tokio::test]
async fn excluded_rooms_do_not_share_presence() {
    let Some(app) = spawn_single_node_with("restarts its server in-process", |c| {
        generous(c);
        sqlite_only(c);
    })
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = shared_room(&app, &alice, &bob).await;
    // Restart on the same database with the room excluded.
    let mut config = (*app.state.config).clone();
    config.exclude_rooms_from_presence = vec![room.as_str().try_into().unwrap()];
    let (state, receivers, _) = presenced_server::process::startup::build_state(config).unwrap();
    drop(presenced_server::process::feeds::spawn(&state, receivers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(presenced_server::run(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    let second = TestApp {
        base,
        client: reqwest::Client::new(),
        state,
        membership_rx: tokio::sync::mpsc::unbounded_channel().1,
        activity_rx: tokio::sync::mpsc::unbounded_channel().1,
        _dir: tempfile::tempdir().unwrap(),
        _db: None,
        _cluster: None,
    };
    put_presence(&second, &alice, json!({"presence": "online"})).await;
    assert_error(
        &get_presence(&second, &bob, &alice.user_id).await,
        403,
        "M_FORBIDDEN",
    );
    assert!(presence_of(
        &sync(&second, &bob, "set_presence=offline").await,
        &alice.user_id
    )
    .is_none());
    shared_room(&second, &alice, &bob).await;
    eventually(|| async { get_presence(&second, &bob, &alice.user_id).await.0 == StatusCode::OK })
        .await;
}
