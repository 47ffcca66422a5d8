//! Text with U+0000 in it is refused at the edge, on both backends: 400
//! `M_BAD_JSON` in a body (values and keys), 400 `M_INVALID_PARAM` in a
//! path or query. PostgreSQL cannot store the character, so before this a
//! NUL status message answered 500 there, failed the grouped commit of the
//! other users' PUTs that shared it, and was shown until a restart.
//! Also: a token given both in the header and the query is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, enc, spawn_app_with, TestApp, User};
use crate::ops::{eventually, generous, get_presence, presence_of, presence_path, shared_room};

/// Whether any string in a JSON answer holds U+0000.
fn shows_nul(body: &Value) -> bool {
    body.to_string().contains("\\u0000")
}

/// A PUT of a raw body (not re-encoded by serde_json).
async fn put_raw(app: &TestApp, user: &User, body: &'static str) -> (StatusCode, Value) {
    let resp = app
        .client
        .put(format!("{}{}", app.base, presence_path(&user.user_id)))
        .bearer_auth(&user.token)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_nul_in_a_status_msg_is_refused_and_never_shown() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    shared_room(&app, &alice, &bob).await;
    let path = presence_path(&alice.user_id);
    let ok = app
        .put(
            &path,
            Some(&alice.token),
            json!({"presence": "online", "status_msg": "before"}),
        )
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);

    let nul = app
        .put(
            &path,
            Some(&alice.token),
            json!({"presence": "unavailable", "status_msg": "a\u{0}b"}),
        )
        .await;
    assert_error(&nul, 400, "M_BAD_JSON");
    // In a key too, even one the endpoint does not read.
    let key = app
        .put(
            &path,
            Some(&alice.token),
            json!({"presence": "online", "x\u{0}": 1}),
        )
        .await;
    assert_error(&key, 400, "M_BAD_JSON");

    // Nothing changed: alice and bob still see "before".
    let (status, got) = get_presence(&app, &bob, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status_msg"], "before", "{got}");
    assert_eq!(got["presence"], "online", "{got}");
    eventually(|| async {
        let (_, body) = app
            .get(
                "/_matrix/client/v3/sync?set_presence=offline",
                Some(&bob.token),
            )
            .await;
        assert!(!shows_nul(&body), "{body}");
        presence_of(&body, &alice.user_id).is_some_and(|c| c["status_msg"] == "before")
    })
    .await;

    // An escaped backslash before `u0000` is text, not a NUL: accepted and
    // shown as written.
    let text = put_raw(
        &app,
        &alice,
        r#"{"presence": "online", "status_msg": "C:\\u0000"}"#,
    )
    .await;
    assert_eq!(text.0, StatusCode::OK, "{}", text.1);
    let (_, got) = get_presence(&app, &alice, &alice.user_id).await;
    assert_eq!(got["status_msg"], "C:\\u0000", "{got}");
}

/// Five users PUT concurrently while a sixth keeps sending NUL messages:
/// every PUT of the five is answered 200, every NUL one 400, and no GET or
/// sync ever shows the NUL. (Before: on PostgreSQL about one in ten of the
/// five users' PUTs answered 500, their commits shared with a NUL row.)
#[tokio::test]
async fn others_puts_all_succeed_while_one_user_sends_nul() {
    const USERS: usize = 5;
    const PUTS: usize = 60;
    let app = Arc::new(spawn_app_with(generous).await);
    let bad = app.register("mallory").await;
    let watcher = app.register("watcher").await;
    shared_room(&app, &bad, &watcher).await;
    let mut good = Vec::new();
    for i in 0..USERS {
        let user = app.register(&format!("user{i}")).await;
        shared_room(&app, &user, &watcher).await;
        good.push(user);
    }

    let stop = Arc::new(AtomicBool::new(false));
    // Watches GET and sync while the PUTs run.
    let watching = {
        let (app, watcher, bad, stop) = (app.clone(), watcher.clone(), bad.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut looks, mut nul_seen) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (_, got) = get_presence(&app, &watcher, &bad.user_id).await;
                let (_, body) = app
                    .get(
                        "/_matrix/client/v3/sync?set_presence=offline&timeout=0",
                        Some(&watcher.token),
                    )
                    .await;
                looks += 2;
                nul_seen +=
                    usize::from(shows_nul(&got)) + usize::from(shows_nul(&body["presence"]));
            }
            (looks, nul_seen)
        })
    };

    let mut tasks = Vec::new();
    for (u, user) in good.iter().enumerate() {
        for n in 0..PUTS {
            let (app, user) = (app.clone(), user.clone());
            tasks.push(tokio::spawn(async move {
                let body = json!({"presence": "online", "status_msg": format!("u{u} n{n}")});
                let (status, body) = app
                    .put(&presence_path(&user.user_id), Some(&user.token), body)
                    .await;
                (false, status, body)
            }));
        }
    }
    for n in 0..PUTS {
        let (app, bad) = (app.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"presence": "online", "status_msg": format!("bad\u{0}{n}")});
            let (status, body) = app
                .put(&presence_path(&bad.user_id), Some(&bad.token), body)
                .await;
            (true, status, body)
        }));
    }
    let (mut good_ok, mut bad_refused) = (0, 0);
    let mut unexpected = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (false, StatusCode::OK, _) => good_ok += 1,
            (true, StatusCode::BAD_REQUEST, body) if body["errcode"] == "M_BAD_JSON" => {
                bad_refused += 1;
            }
            (nul, status, body) => unexpected.push(format!("nul={nul} {status} {body}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (looks, nul_seen) = watching.await.unwrap();
    assert!(
        unexpected.is_empty() && nul_seen == 0,
        "{good_ok} of {} good PUTs answered 200, {bad_refused} of {PUTS} NUL ones 400; \
         {} unexpected answers, e.g. {:?}; {nul_seen} of {looks} GETs and syncs showed a NUL",
        USERS * PUTS,
        unexpected.len(),
        &unexpected[..unexpected.len().min(3)]
    );
    assert_eq!((good_ok, bad_refused), (USERS * PUTS, PUTS));
    assert!(looks > 0);
    // Each good user's presence is stored and shown.
    for user in &good {
        let (status, got) = get_presence(&app, &watcher, &user.user_id).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["presence"], "online", "{got}");
    }
}

#[tokio::test]
async fn a_login_with_a_nul_device_name_is_refused() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let login = |name: &str| {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": "password",
            "initial_device_display_name": name,
        })
    };
    let refused = app
        .post("/_matrix/client/v3/login", None, login("phone\u{0}"))
        .await;
    assert_error(&refused, 400, "M_BAD_JSON");
    let (status, body) = app
        .post("/_matrix/client/v3/login", None, login("phone"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_nul_in_a_path_or_query_is_an_invalid_param() {
    let app = spawn_app_with(generous).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = shared_room(&app, &alice, &bob).await;
    let token = Some(alice.token.as_str());

    // A transaction ID.
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t%00x",
        enc(&room)
    );
    let resp = app.put(&send, token, json!({"body": "hi"})).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    // A filter ID.
    let filter = format!(
        "/_matrix/client/v3/user/{}/filter/1%00",
        enc(&alice.user_id)
    );
    assert_error(&app.get(&filter, token).await, 400, "M_INVALID_PARAM");
    // A room alias.
    let join = "/_matrix/client/v3/join/%23a%00b%3Atest.local";
    let resp = app.post(join, token, json!({})).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    // A query parameter (a filter ID given to sync).
    let sync = "/_matrix/client/v3/sync?filter=0%00&timeout=0";
    assert_error(&app.get(sync, token).await, 400, "M_INVALID_PARAM");

    // `%2500` is the text `%00`, not a NUL: an ordinary transaction ID.
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t%2500x",
        enc(&room)
    );
    let (status, body) = app.put(&send, token, json!({"body": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_token_in_both_the_header_and_the_query_is_refused() {
    let app = spawn_app_with(generous).await;
    let alice = app.register_as("alice", true).await;
    let get = |query: &str, header: bool| {
        let mut req = app.client.get(format!(
            "{}/_matrix/client/v3/account/whoami{query}",
            app.base
        ));
        if header {
            req = req.bearer_auth(&alice.token);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let query = format!("?access_token={}", alice.token);
    let (status, body) = get(&query, false).await;
    assert_eq!(status, StatusCode::OK, "the query alone: {body}");
    let (status, body) = get("", true).await;
    assert_eq!(status, StatusCode::OK, "the header alone: {body}");

    let both = get(&query, true).await;
    assert_error(&both, 401, "M_MISSING_TOKEN");
    let message = both.1["error"].as_str().unwrap();
    assert!(
        message.contains("Authorization header") && message.contains("access_token"),
        "{message}"
    );
    // Spelled with an escape, an empty one, another token: still two.
    let escaped = format!("?access%5Ftoken={}", alice.token);
    assert_error(&get(&escaped, true).await, 401, "M_MISSING_TOKEN");
    assert_error(&get("?access_token=", true).await, 401, "M_MISSING_TOKEN");
    assert_error(
        &get("?access_token=other", true).await,
        401,
        "M_MISSING_TOKEN",
    );

    // The admin API's extractor too.
    let admin = format!(
        "{}/_presenced/admin/v1/presence/{}{query}",
        app.base,
        enc(&alice.user_id)
    );
    let resp = app
        .client
        .get(admin)
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    let both = (resp.status(), resp.json::<Value>().await.unwrap());
    assert_error(&both, 401, "M_MISSING_TOKEN");
}
