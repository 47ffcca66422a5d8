//! Issue 12 §1: `/sync` behaviours a real client relies on, over HTTP.
//!
//! - A long-poll keeps its user online whatever its filter lets through,
//!   also when `rc_presence` limits it, with `set_presence=unavailable`,
//!   and with a `since` token from before a restart; its end restarts the
//!   sync timeout.
//! - The client's `timeout` is honoured as given (no cap unless
//!   `max_sync_timeout` sets one).
//! - A join or an invite shows each side the other's current presence in
//!   the same or the next sync, also through a router route.
//!
//! Timeouts are shortened (a sync timeout of 2 s) so the tests wait
//! seconds, not minutes; `rc_presence` keeps Synapse's defaults unless a
//! test says otherwise, as a real client would meet them.

use std::time::{Duration, Instant};

use presenced_server::config::presence::ModuleConfig;
use presenced_server::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{enc, spawn_app_with, spawn_single_node_with, TestApp, User};
use crate::ops::{generous, get_presence, presence_of, put_presence};

/// The sync timeout of these tests.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Longer than twice the sync timeout: a user whose long-poll did not count
/// would go offline in the middle of it.
const LONG_POLL: Duration = Duration::from_millis(5_000);

/// Why the tests of the sync timeout run on a single server only.
const SYNC_GRACE: &str =
    "the cluster's 5 s sync grace adds to the 2 s sync timeout these tests use";

/// Filters that drop all presence, as bots and presence-blind clients send.
const NO_PRESENCE: [&str; 3] = [
    r#"{"presence":{"types":[]}}"#,
    r#"{"presence":{"not_types":["m.presence"]}}"#,
    r#"{"presence":{"not_types":["*"]}}"#,
];

fn short_sync_timeout(c: &mut Config) {
    c.presence.sync_online_timeout = SYNC_TIMEOUT;
}

async fn sync(app: &TestApp, user: &User, query: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/_matrix/client/v3/sync?{query}"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

async fn own_presence(app: &TestApp, user: &User) -> String {
    let (status, body) = get_presence(app, user, &user.user_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["presence"].as_str().unwrap().to_owned()
}

/// Uploads a filter and returns its id.
async fn upload_filter(app: &TestApp, user: &User, filter: &str) -> String {
    let (status, body) = app
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&user.user_id)),
            Some(&user.token),
            serde_json::from_str(filter).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["filter_id"].as_str().unwrap().to_owned()
}

/// What a real client does: a sync, then at once a long-poll from its
/// token (or from `since`, the token of both when given), with the same
/// query. While the long-poll is open the user's presence must stay
/// `expected`; after it returns the user must stay `expected` for about
/// the sync timeout, then go offline.
async fn long_poll_keeps_user(
    app: &TestApp,
    user: &User,
    query: &str,
    expected: &str,
    since: Option<&str>,
) {
    let mut first = format!("{query}&timeout=0");
    if let Some(since) = since {
        first.push_str(&format!("&since={}", enc(since)));
    }
    let answer = next_batch(&sync(app, user, &first).await);
    let token = since.map_or(answer, ToOwned::to_owned);
    let url = format!(
        "{}/_matrix/client/v3/sync?{query}&timeout={}&since={}",
        app.base,
        LONG_POLL.as_millis(),
        enc(&token)
    );
    let request = app.client.get(url).bearer_auth(&user.token).send();
    // The answer's arrival is timed where it arrives, not when the loop
    // below notices (a loaded machine may take a while to look).
    let poll = tokio::spawn(async move {
        let status = request.await.unwrap().status();
        (status, Instant::now())
    });
    let started = Instant::now();
    while !poll.is_finished() {
        let now = own_presence(app, user).await;
        if poll.is_finished() {
            break; // the answer may have come before this look
        }
        assert_eq!(
            now,
            expected,
            "{query}: {:?} into an open long-poll",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, returned) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        returned - started >= LONG_POLL - Duration::from_millis(200),
        "{query}: the long-poll returned early, after {:?}",
        returned - started
    );
    // The sync timeout counts from the end of the long-poll.
    loop {
        let now = own_presence(app, user).await;
        let after = returned.elapsed();
        if now == "offline" {
            assert!(
                after >= SYNC_TIMEOUT - Duration::from_millis(200),
                "{query}: offline {after:?} after the long-poll ended"
            );
            break;
        }
        assert_eq!(now, expected, "{query}");
        assert!(
            after < SYNC_TIMEOUT + Duration::from_secs(3),
            "{query}: still {now} {after:?} after the long-poll ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bullet 1: inline filters and a stored filter that drop presence count
/// as syncing, with Synapse's `rc_presence` defaults (the long-poll right
/// after the initial sync is rate-limited, and still counts).
#[tokio::test]
async fn long_polls_that_drop_presence_keep_their_user_online() {
    let Some(app) = spawn_single_node_with(SYNC_GRACE, short_sync_timeout).await else {
        return;
    };
    let mut users = Vec::new();
    for (i, filter) in NO_PRESENCE.iter().enumerate() {
        users.push((app.register(&format!("inline{i}")).await, enc(filter)));
    }
    let stored = app.register("stored").await;
    let id = upload_filter(&app, &stored, NO_PRESENCE[0]).await;
    users.push((stored, id));
    let plain = app.register("plain").await;
    let queries: Vec<String> = users.iter().map(|(_, f)| format!("filter={f}")).collect();
    let runs = users
        .iter()
        .zip(&queries)
        .map(|((user, _), query)| long_poll_keeps_user(&app, user, query, "online", None));
    let ((), _) = tokio::join!(
        long_poll_keeps_user(&app, &plain, "set_presence=online", "online", None),
        futures::future::join_all(runs),
    );
}

/// `set_presence=unavailable` long-polls keep the user unavailable (not
/// offline), whatever the filter; `rc_presence` lifted so each sync applies
/// its `set_presence`.
#[tokio::test]
async fn unavailable_long_polls_keep_their_user_unavailable() {
    let Some(app) = spawn_single_node_with(SYNC_GRACE, |c| {
        short_sync_timeout(c);
        generous(c);
    })
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let query = format!("set_presence=unavailable&filter={}", enc(NO_PRESENCE[1]));
    tokio::join!(
        long_poll_keeps_user(&app, &alice, &query, "unavailable", None),
        long_poll_keeps_user(&app, &bob, "set_presence=unavailable", "unavailable", None),
    );
}

/// `set_presence=offline` is the one way a sync does not count (Synapse's
/// rule: it neither keeps the device alive nor marks the user offline): a
/// user who only PUT online goes offline one sync timeout after the PUT,
/// in the middle of such a long-poll.
#[tokio::test]
async fn set_presence_offline_long_polls_do_not_count() {
    let app = spawn_app_with(|c| {
        short_sync_timeout(c);
        generous(c);
    })
    .await;
    let alice = app.register("alice").await;
    let token = next_batch(&sync(&app, &alice, "set_presence=offline&timeout=0").await);
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    let put = Instant::now();
    let url = format!(
        "{}/_matrix/client/v3/sync?set_presence=offline&filter={}&timeout={}&since={}",
        app.base,
        enc(NO_PRESENCE[0]),
        LONG_POLL.as_millis(),
        enc(&token)
    );
    let request = app.client.get(url).bearer_auth(&alice.token).send();
    let poll = tokio::spawn(async move { request.await.unwrap().status() });
    while own_presence(&app, &alice).await == "online" {
        assert!(put.elapsed() < LONG_POLL, "still online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offline_after = put.elapsed();
    assert!(
        offline_after >= SYNC_TIMEOUT - Duration::from_millis(200),
        "offline {offline_after:?} after the PUT"
    );
    assert!(!poll.is_finished(), "offline while the long-poll was open");
    assert_eq!(poll.await.unwrap(), StatusCode::OK);
}

/// A long-poll longer than the sync timeout, `rc_presence` lifted: four
/// sync timeouts long, the user stays online throughout and goes offline
/// one sync timeout after it returns (the 120 s long-poll of a 30 s sync
/// timeout, scaled down).
#[tokio::test]
async fn long_poll_longer_than_the_sync_timeout() {
    let Some(app) = spawn_single_node_with(SYNC_GRACE, |c| {
        c.presence.sync_online_timeout = Duration::from_millis(1_200);
        generous(c);
    })
    .await
    else {
        return;
    };
    let alice = app.register("alice").await;
    let token = next_batch(&sync(&app, &alice, "timeout=0").await);
    let started = Instant::now();
    let long = format!("timeout=4800&since={}", enc(&token));
    let (client, base, tok) = (app.client.clone(), app.base.clone(), alice.token.clone());
    let poll = tokio::spawn(async move {
        let status = client
            .get(format!("{base}/_matrix/client/v3/sync?{long}"))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap()
            .status();
        (status, Instant::now())
    });
    while !poll.is_finished() {
        let now = own_presence(&app, &alice).await;
        if poll.is_finished() {
            break;
        }
        assert_eq!(now, "online", "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, returned) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(returned - started >= Duration::from_millis(4_600));
    while own_presence(&app, &alice).await != "offline" {
        assert!(returned.elapsed() < Duration::from_secs(5), "never offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        returned.elapsed() >= Duration::from_millis(1_000),
        "offline {:?} after the end",
        returned.elapsed()
    );
}

/// A client whose long-polls last exactly the sync timeout: each one ends
/// at the instant the timer armed by the end of the one before fires.
/// Whichever the server sees first, the user never goes offline between
/// them, and goes offline one sync timeout after the last.
#[tokio::test]
async fn long_polls_ending_as_the_timer_fires() {
    let Some(app) = spawn_single_node_with(SYNC_GRACE, short_sync_timeout).await else {
        return;
    };
    let alice = app.register("alice").await;
    let filter = enc(NO_PRESENCE[0]);
    let mut token = next_batch(&sync(&app, &alice, &format!("filter={filter}&timeout=0")).await);
    let (client, base, tok) = (app.client.clone(), app.base.clone(), alice.token.clone());
    let query = format!("filter={filter}&timeout={}", SYNC_TIMEOUT.as_millis());
    let polls = tokio::spawn(async move {
        for _ in 0..3 {
            let url = format!(
                "{base}/_matrix/client/v3/sync?{query}&since={}",
                enc(&token)
            );
            let body: Value = client
                .get(url)
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            token = next_batch(&body);
        }
        Instant::now()
    });
    let started = Instant::now();
    while !polls.is_finished() {
        let now = own_presence(&app, &alice).await;
        if polls.is_finished() {
            break;
        }
        assert_eq!(
            now,
            "online",
            "{:?} into back-to-back long-polls",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let returned = polls.await.unwrap();
    assert!(returned - started >= SYNC_TIMEOUT * 3 - Duration::from_millis(300));
    while own_presence(&app, &alice).await != "offline" {
        assert!(returned.elapsed() < SYNC_TIMEOUT * 3, "never offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(returned.elapsed() >= SYNC_TIMEOUT - Duration::from_millis(200));
}

/// A client that goes away in the middle of a long-poll stops counting as
/// syncing then: its user goes offline one sync timeout after it left, not
/// after the long-poll's timeout (nor never).
#[tokio::test]
async fn a_client_that_goes_away_stops_syncing() {
    let app = spawn_app_with(|c| {
        short_sync_timeout(c);
        generous(c);
    })
    .await;
    let alice = app.register("alice").await;
    let token = next_batch(&sync(&app, &alice, "timeout=0").await);
    let url = format!(
        "{}/_matrix/client/v3/sync?timeout=60000&since={}",
        app.base,
        enc(&token)
    );
    let request = app.client.get(url).bearer_auth(&alice.token).send();
    let poll = tokio::spawn(request);
    tokio::time::sleep(SYNC_TIMEOUT + Duration::from_millis(500)).await;
    assert_eq!(own_presence(&app, &alice).await, "online");
    poll.abort();
    let left = Instant::now();
    // A cluster node tells the owner a device stopped syncing only after
    // its grace (`SYNC_GRACE` in presence/cluster/link.rs, 5 s), which adds
    // to the sync timeout by design: a bound without it made this test
    // race its own limit (offline at 7.01-7.05 s against 7 s).
    let grace = if crate::cluster_backend::enabled() {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    };
    while own_presence(&app, &alice).await != "offline" {
        assert!(
            left.elapsed() < SYNC_TIMEOUT + grace + Duration::from_secs(5),
            "still online {:?} after the client left",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.elapsed() >= SYNC_TIMEOUT - Duration::from_millis(200));
}

/// A `since` token from before a restart: the restarted server counts the
/// long-poll (a presence-blind one) as syncing, and the token, whose
/// presence position can be ahead of the restarted stream (join markers
/// are not stored), still gets every change made after the restart.
#[tokio::test]
async fn since_token_from_before_a_restart() {
    if crate::cluster_backend::single_node_only("restarts its server in-process") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let tweak = move |c: &mut Config| {
        short_sync_timeout(c);
        generous(c);
        crate::helpers::sqlite_only(c);
        c.data_dir = dir.clone();
    };
    let before = spawn_app_with(tweak.clone()).await;
    let alice = before.register("alice").await;
    let bob = before.register("bob").await;
    crate::ops::shared_room(&before, &alice, &bob).await;
    let filter = enc(NO_PRESENCE[0]);
    // Markers of the joins move the stream past every stored change.
    let presence_token = next_batch(&sync(&before, &alice, "set_presence=offline").await);

    let after = spawn_app_with(tweak).await;
    put_presence(
        &after,
        &bob,
        json!({"presence": "online", "status_msg": "after the restart"}),
    )
    .await;
    let body = sync(
        &after,
        &alice,
        &format!(
            "set_presence=offline&timeout=0&since={}",
            enc(&presence_token)
        ),
    )
    .await;
    let seen = presence_of(&body, &bob.user_id).expect("bob's change after the restart");
    assert_eq!(seen["presence"], "online");
    assert_eq!(seen["status_msg"], "after the restart");

    long_poll_keeps_user(
        &after,
        &alice,
        &format!("filter={filter}"),
        "online",
        Some(&presence_token),
    )
    .await;
}

/// The client's timeout is honoured as given: a huge one is accepted (no
/// overflow, no cap) and a room event still ends it; `max_sync_timeout`
/// caps it when set.
#[tokio::test]
async fn client_timeouts_are_honoured_and_capped_only_when_configured() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = crate::ops::shared_room(&app, &alice, &bob).await;
    let token = next_batch(&sync(&app, &alice, "set_presence=offline").await);
    let url = format!(
        "{}/_matrix/client/v3/sync?set_presence=offline&timeout={}&since={}",
        app.base,
        u64::MAX,
        enc(&token)
    );
    let request = app.client.get(url).bearer_auth(&alice.token).send();
    let poll = tokio::spawn(async move { request.await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!poll.is_finished(), "a long timeout is not cut short");
    let (status, body) = app
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            Some(&bob.token),
            json!({"msgtype": "m.text", "body": "wake up"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken by the message")
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let capped = spawn_app_with(|c| c.max_sync_timeout = Some(Duration::from_millis(800))).await;
    let carol = capped.register("carol").await;
    let token = next_batch(&sync(&capped, &carol, "set_presence=offline").await);
    let started = Instant::now();
    sync(
        &capped,
        &carol,
        &format!("set_presence=offline&timeout=60000&since={}", enc(&token)),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(10),
        "waited {waited:?} with max_sync_timeout 800 ms"
    );
}

/// Syncs `user` from `since` until `target`'s presence shows up, at most
/// twice ("the same or the next sync"); returns it with the rooms of the
/// first answer.
async fn presence_in_the_same_or_next_sync(
    app: &TestApp,
    user: &User,
    since: &str,
    target: &str,
) -> (Value, Value) {
    let first = sync(
        app,
        user,
        &format!("set_presence=offline&timeout=5000&since={}", enc(since)),
    )
    .await;
    if let Some(found) = presence_of(&first, target) {
        return (found, first);
    }
    let second = sync(
        app,
        user,
        &format!(
            "set_presence=offline&timeout=5000&since={}",
            enc(&next_batch(&first))
        ),
    )
    .await;
    let found = presence_of(&second, target).unwrap_or_else(|| {
        panic!(
            "{target}'s presence in neither sync of {}: {first} then {second}",
            user.user_id
        )
    });
    (found, first)
}

/// Bullet 3: an invite shows the inviter the invitee's current presence
/// and the invitee the inviter's, in an invite after the room's creation
/// and in `createRoom`'s own invite list.
#[tokio::test]
async fn invites_show_presence_on_both_sides() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "inviting"}),
    )
    .await;
    put_presence(
        &app,
        &bob,
        json!({"presence": "unavailable", "status_msg": "invited"}),
    )
    .await;
    put_presence(
        &app,
        &carol,
        json!({"presence": "online", "status_msg": "invited at creation"}),
    )
    .await;
    let (status, body) = app
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({"preset": "private_chat"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let alice_token = next_batch(&sync(&app, &alice, "set_presence=offline").await);
    let bob_token = next_batch(&sync(&app, &bob, "set_presence=offline").await);
    let carol_token = next_batch(&sync(&app, &carol, "set_presence=offline").await);
    // Strangers so far.
    let (status, _) = get_presence(&app, &alice, &bob.user_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            Some(&alice.token),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (seen, _) =
        presence_in_the_same_or_next_sync(&app, &alice, &alice_token, &bob.user_id).await;
    assert_eq!(seen["presence"], "unavailable");
    assert_eq!(seen["status_msg"], "invited");
    let (seen, first) =
        presence_in_the_same_or_next_sync(&app, &bob, &bob_token, &alice.user_id).await;
    assert_eq!(seen["presence"], "online");
    assert_eq!(seen["status_msg"], "inviting");
    assert!(
        first["rooms"]["invite"].get(&room).is_some(),
        "bob's sync shows the invite: {first}"
    );
    // Carol was not involved.
    let body = sync(
        &app,
        &carol,
        &format!("set_presence=offline&timeout=0&since={}", enc(&carol_token)),
    )
    .await;
    assert!(presence_of(&body, &bob.user_id).is_none(), "{body}");
    assert!(presence_of(&body, &alice.user_id).is_none(), "{body}");

    // Invited in createRoom: the same on both sides.
    let alice_token = next_batch(&sync(&app, &alice, "set_presence=offline").await);
    let (status, body) = app
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({"preset": "private_chat", "invite": [carol.user_id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (seen, _) =
        presence_in_the_same_or_next_sync(&app, &alice, &alice_token, &carol.user_id).await;
    assert_eq!(seen["status_msg"], "invited at creation");
    let (seen, _) =
        presence_in_the_same_or_next_sync(&app, &carol, &carol_token, &alice.user_id).await;
    assert_eq!(seen["status_msg"], "inviting");
}

/// A join shows each side the other's current presence, and the joiner's
/// current presence reaches a member of a room that does not count
/// (oversized here) through a router route; a member without the route
/// gets nothing.
#[tokio::test]
async fn joins_show_presence_also_through_a_router_route() {
    let app = spawn_app_with(|c| {
        generous(c);
        // Rooms of three or more do not make members see each other.
        c.presence.max_room_size = Some(2);
        c.modules.push(ModuleConfig {
            module: "presenced.routers.StaticRoutes".to_owned(),
            config: json!({"routes": [
                {"receiver": "@carol:test.local", "senders": ["@dave:test.local"]}
            ]}),
            deadline_ms: None,
        });
    })
    .await;
    let carol = app.register("carol").await;
    let eve = app.register("eve").await;
    let dave = app.register("dave").await;
    let (status, body) = app
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&carol.token),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let join = |user: User| {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
        let app = &app;
        async move {
            let (status, body) = app.post(&path, Some(&user.token), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    put_presence(
        &app,
        &eve,
        json!({"presence": "online", "status_msg": "eve"}),
    )
    .await;
    put_presence(
        &app,
        &carol,
        json!({"presence": "online", "status_msg": "carol"}),
    )
    .await;
    let carol_token = next_batch(&sync(&app, &carol, "set_presence=offline").await);
    let eve_token = next_batch(&sync(&app, &eve, "set_presence=offline").await);
    // A plain join into an eligible room (two members): both sides.
    join(eve.clone()).await;
    let (seen, _) =
        presence_in_the_same_or_next_sync(&app, &carol, &carol_token, &eve.user_id).await;
    assert_eq!(seen["status_msg"], "eve");
    let (seen, _) = presence_in_the_same_or_next_sync(&app, &eve, &eve_token, &carol.user_id).await;
    assert_eq!(seen["status_msg"], "carol");

    put_presence(
        &app,
        &dave,
        json!({"presence": "online", "status_msg": "dave"}),
    )
    .await;
    let carol_token = next_batch(&sync(&app, &carol, "set_presence=offline").await);
    let eve_token = next_batch(&sync(&app, &eve, "set_presence=offline").await);
    // Dave's join makes the room three: only the route reveals him.
    join(dave.clone()).await;
    let (seen, _) =
        presence_in_the_same_or_next_sync(&app, &carol, &carol_token, &dave.user_id).await;
    assert_eq!(seen["status_msg"], "dave");
    let first = sync(
        &app,
        &eve,
        &format!(
            "set_presence=offline&timeout=3000&since={}",
            enc(&eve_token)
        ),
    )
    .await;
    let second = sync(
        &app,
        &eve,
        &format!(
            "set_presence=offline&timeout=1000&since={}",
            enc(&next_batch(&first))
        ),
    )
    .await;
    assert!(presence_of(&first, &dave.user_id).is_none(), "{first}");
    assert!(presence_of(&second, &dave.user_id).is_none(), "{second}");
}
