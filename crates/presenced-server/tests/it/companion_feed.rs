//! Companion mode's membership feed, black-box: application-service
//! transactions PUT to a real presenced over HTTP, and the bootstrap read
//! from a fake Synapse admin API (an axum server standing in for the one
//! edge presenced does not own). Who sees whom is checked with the
//! `GET /presence` rule (`PresenceService::get_presence`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::{get, post};
use axum::{Json, Router};
use presenced_server::companion::registration::Registration;
use presenced_server::config::companion::CompanionConfig;
use presenced_server::config::Secret;
use presenced_server::store::companion::CompanionStore;
use presenced_server::store::Store;
use reqwest::StatusCode;
use ruma_common::OwnedUserId;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_single_node_with, TestApp};

/// The admin token the fake Synapse accepts.
const ADMIN_TOKEN: &str = "syt_admin";

/// What the fake Synapse serves and saw.
#[derive(Default)]
struct FakeSynapse {
    /// `room_id` → its state events.
    rooms: Vec<(String, Vec<Value>)>,
    /// Ping requests received: (service id, bearer token).
    pings: Vec<(String, String)>,
}

type Shared = Arc<Mutex<FakeSynapse>>;

/// Starts the fake on a loopback port; its base URL.
async fn start_fake(fake: Shared) -> String {
    fn admin(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {ADMIN_TOKEN}"))
    }
    async fn rooms(
        State(fake): State<Shared>,
        headers: HeaderMap,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    ) -> (AxumStatus, Json<Value>) {
        if !admin(&headers) {
            return (
                AxumStatus::UNAUTHORIZED,
                Json(json!({"errcode": "M_UNKNOWN_TOKEN"})),
            );
        }
        let from: usize = q.get("from").map_or(0, |f| f.parse().unwrap());
        let limit: usize = q.get("limit").map_or(100, |l| l.parse().unwrap());
        let fake = fake.lock().unwrap();
        // One room per page when asked for more, to exercise paging.
        let _ = limit;
        let page: Vec<_> = (fake.rooms.iter().skip(from).take(1))
            .map(|(id, _)| json!({"room_id": id}))
            .collect();
        let mut answer = json!({"rooms": page, "offset": from, "total_rooms": fake.rooms.len()});
        if from + 1 < fake.rooms.len() {
            answer["next_batch"] = json!(from + 1);
        }
        (AxumStatus::OK, Json(answer))
    }
    async fn state(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path(room): Path<String>,
    ) -> (AxumStatus, Json<Value>) {
        if !admin(&headers) {
            return (
                AxumStatus::UNAUTHORIZED,
                Json(json!({"errcode": "M_UNKNOWN_TOKEN"})),
            );
        }
        let fake = fake.lock().unwrap();
        match fake.rooms.iter().find(|(id, _)| *id == room) {
            Some((_, events)) => (AxumStatus::OK, Json(json!({ "state": events }))),
            None => (
                AxumStatus::NOT_FOUND,
                Json(json!({"errcode": "M_NOT_FOUND"})),
            ),
        }
    }
    async fn ping(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Json<Value> {
        let token = (headers.get("authorization").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_owned();
        fake.lock().unwrap().pings.push((id, token));
        Json(json!({"duration_ms": 1}))
    }
    let app = Router::new()
        .route("/_synapse/admin/v1/rooms", get(rooms))
        .route("/_synapse/admin/v1/rooms/{room}/state", get(state))
        .route("/_matrix/client/v1/appservice/{id}/ping", post(ping))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A companion-mode presenced in front of a fake Synapse serving `rooms`;
/// `None` in a cluster run (the feed is tested on one node here).
async fn companion(rooms: Vec<(String, Vec<Value>)>) -> Option<(TestApp, Registration, Shared)> {
    companion_with(rooms, |_| {}).await
}

/// [`companion`] with a last change to the config.
async fn companion_with(
    rooms: Vec<(String, Vec<Value>)>,
    tweak: impl FnOnce(&mut presenced_server::Config),
) -> Option<(TestApp, Registration, Shared)> {
    let fake: Shared = Arc::new(Mutex::new(FakeSynapse {
        rooms,
        ..FakeSynapse::default()
    }));
    let url = start_fake(fake.clone()).await;
    let registration = Registration::generate("http://127.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.keep().join("presenced-appservice.yaml");
    std::fs::write(&path, registration.to_yaml()).unwrap();
    let app = spawn_single_node_with("companion mode's feed is tested on one node", |c| {
        c.synapse = Some(CompanionConfig {
            url,
            appservice_registration: path,
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            admin_token_path: None,
        });
        tweak(c);
    })
    .await?;
    Some((app, registration, fake))
}

fn member(room: &str, user: &str, membership: &str, ts: u64) -> Value {
    json!({
        "type": "m.room.member", "room_id": room, "state_key": user, "sender": user,
        // Opaque, as room versions 3 and later make them.
        "event_id": format!("$ev_{room}_{user}_{ts}").replace(|c: char| !c.is_ascii_alphanumeric() && c != '$', "_"),
        "origin_server_ts": ts, "content": {"membership": membership},
    })
}

fn uid(s: &str) -> OwnedUserId {
    s.try_into().unwrap()
}

/// PUTs a transaction body; the status, the body and its Content-Length.
async fn put_txn(
    app: &TestApp,
    txn: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app
        .client
        .put(format!("{}/_matrix/app/v1/transactions/{txn}", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let length = (resp.headers().get("content-length")).map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap(), length)
}

async fn sees(app: &TestApp, observer: &str, target: &str) -> bool {
    (app.state.presence)
        .get_presence(&uid(observer), &uid(target))
        .await
        .is_some()
}

/// Waits up to 10 s for `observer` to see (or not see) `target`.
async fn wait_until_sees(app: &TestApp, observer: &str, target: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sees(app, observer, target).await != want {
        assert!(
            Instant::now() < deadline,
            "{observer} should {}see {target}",
            if want { "" } else { "not " }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn joined(app: &TestApp) -> Vec<(String, String)> {
    let store: &dyn Store = &*app.state.homeserver.store;
    (store.companion_joined().unwrap().into_iter())
        .map(|(r, u)| (r.to_string(), u.to_string()))
        .collect()
}

#[tokio::test]
async fn a_transaction_needs_the_hs_token() {
    let Some((app, registration, _)) = companion(vec![]).await else {
        return;
    };
    let body = json!({"events": [member("!r:test.local", "@a:test.local", "join", 5)]}).to_string();
    let (status, answer, _) = put_txn(&app, "1", None, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["errcode"], "M_UNAUTHORIZED");
    let (status, answer, _) = put_txn(&app, "1", Some("not-the-hs-token"), &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["errcode"], "M_FORBIDDEN");
    // The as_token is presenced's own, not Synapse's.
    let (status, _, _) = put_txn(&app, "1", Some(&registration.as_token), &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(joined(&app).is_empty(), "nothing applied");
    // The same transaction id, now with the right token (the query
    // parameter older Synapses use): it was not recorded by the refusals.
    let resp = app
        .client
        .put(format!(
            "{}/_matrix/app/v1/transactions/1?access_token={}",
            app.base, registration.hs_token
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        joined(&app),
        [("!r:test.local".to_owned(), "@a:test.local".to_owned())]
    );
    // The ping Synapse sends when asked to.
    let ping = |token: &str| {
        app.client
            .post(format!("{}/_matrix/app/v1/ping", app.base))
            .bearer_auth(token)
            .json(&json!({"transaction_id": "t"}))
            .send()
    };
    let resp = ping(&registration.hs_token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(ping("wrong").await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_malformed_transaction_is_refused_and_bad_events_are_skipped() {
    let Some((app, registration, _)) = companion(vec![]).await else {
        return;
    };
    let token = Some(registration.hs_token.as_str());
    for body in ["{", "[]", "{\"events\": {}}"] {
        let (status, answer, _) = put_txn(&app, "m", token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["errcode"], "M_BAD_JSON", "{body}");
    }
    // One bad event among good ones and a message: the good one applies.
    let mut bad = member("!r:test.local", "@b:test.local", "join", 6);
    bad["state_key"] = json!("not a user");
    let body = json!({"events": [
        bad,
        {"type": "m.room.message", "room_id": "!r:test.local", "sender": "@a:test.local",
         "event_id": "$msg", "origin_server_ts": 7, "content": {"body": "hi"}},
        member("!r:test.local", "@a:test.local", "join", 5),
    ]})
    .to_string();
    let (status, answer, length) = put_txn(&app, "m", token, &body).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(
        length.as_deref(),
        Some("2"),
        "Synapse needs a Content-Length"
    );
    assert_eq!(
        joined(&app),
        [("!r:test.local".to_owned(), "@a:test.local".to_owned())]
    );
}

/// Issue 27, item 8: a refused transaction that carries real memberships
/// applies none of them, and its id is not taken: when Synapse sends the
/// transaction again, whole, it applies.
#[tokio::test]
async fn a_refused_transaction_applies_nothing_and_keeps_its_id_free() {
    let Some((app, registration, _)) = companion(vec![]).await else {
        return;
    };
    let room = "!r:test.local";
    let joins = json!({"events": [
        member(room, "@alice:test.local", "join", 10),
        member(room, "@bob:remote.org", "join", 11),
    ]})
    .to_string();
    let hs_token = Some(registration.hs_token.as_str());
    // Cut short (a delivery broken off mid-body), and with a stray byte
    // after the JSON: both 400, the joins they hold not applied.
    let cut = &joins[..joins.len() - 1];
    let trailing = format!("{joins}x");
    for body in [cut, trailing.as_str()] {
        let (status, answer, _) = put_txn(&app, "9", hs_token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["errcode"], "M_BAD_JSON", "{body}");
    }
    // The whole body without the token (401), or with a wrong one (403):
    // refused, sound as it is.
    let (status, answer, _) = put_txn(&app, "9", None, &joins).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer, _) = put_txn(&app, "9", Some("wrong"), &joins).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(joined(&app).is_empty(), "nothing stored");
    assert!(!sees(&app, "@alice:test.local", "@bob:remote.org").await);
    assert!(!sees(&app, "@bob:remote.org", "@alice:test.local").await);
    // Synapse's retry of transaction 9, whole and with the token: applied,
    // not taken for a repeat of the refused ones.
    let (status, answer, _) = put_txn(&app, "9", hs_token, &joins).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(joined(&app).len(), 2);
    wait_until_sees(&app, "@alice:test.local", "@bob:remote.org", true).await;
}

#[tokio::test]
async fn a_membership_transaction_applies_once_and_shares_presence() {
    let Some((app, registration, _)) = companion(vec![]).await else {
        return;
    };
    let token = Some(registration.hs_token.as_str());
    let room = "!r:test.local";
    let joins = json!({"events": [
        member(room, "@alice:test.local", "join", 10),
        member(room, "@bob:remote.org", "join", 11),
    ]})
    .to_string();
    assert_eq!(put_txn(&app, "7", token, &joins).await.0, StatusCode::OK);
    wait_until_sees(&app, "@alice:test.local", "@bob:remote.org", true).await;
    wait_until_sees(&app, "@bob:remote.org", "@alice:test.local", true).await;
    assert!(!sees(&app, "@alice:test.local", "@carol:test.local").await);

    // Synapse re-sends transaction 7 (our answer was lost), now holding
    // other events: nothing changes.
    let leave = json!({"events": [member(room, "@bob:remote.org", "leave", 12)]}).to_string();
    assert_eq!(put_txn(&app, "7", token, &leave).await.0, StatusCode::OK);
    assert_eq!(joined(&app).len(), 2);
    assert!(sees(&app, "@alice:test.local", "@bob:remote.org").await);
    // As a new transaction it applies.
    assert_eq!(put_txn(&app, "8", token, &leave).await.0, StatusCode::OK);
    wait_until_sees(&app, "@alice:test.local", "@bob:remote.org", false).await;
    assert_eq!(joined(&app).len(), 1);
}

#[tokio::test]
async fn the_bootstrap_shows_existing_rooms_and_a_replay_does_not_undo_it() {
    let old = "!old:test.local";
    let other = "!other:test.local";
    let rooms = vec![
        (
            old.to_owned(),
            vec![
                json!({"type": "m.room.create", "room_id": old, "state_key": "",
                       "sender": "@alice:test.local", "event_id": "$create",
                       "origin_server_ts": 1, "content": {}}),
                member(old, "@alice:test.local", "join", 200),
                member(old, "@bob:test.local", "join", 210),
                member(old, "@carol:test.local", "leave", 300),
            ],
        ),
        (
            other.to_owned(),
            // The admin API may leave the room ID out of its state events.
            vec![
                {
                    let mut e = member(other, "@dave:test.local", "join", 50);
                    e.as_object_mut().unwrap().remove("room_id");
                    e
                },
                member(other, "@alice:test.local", "join", 60),
            ],
        ),
    ];
    let Some((app, registration, fake)) = companion(rooms).await else {
        return;
    };
    wait_until_sees(&app, "@alice:test.local", "@bob:test.local", true).await;
    wait_until_sees(&app, "@dave:test.local", "@alice:test.local", true).await;
    assert!(!sees(&app, "@alice:test.local", "@carol:test.local").await);

    // Synapse replays old history: carol's join from before her leave.
    let token = Some(registration.hs_token.as_str());
    let replay = json!({"events": [
        member(old, "@carol:test.local", "join", 100),
        member(old, "@bob:test.local", "leave", 150),
    ]})
    .to_string();
    assert_eq!(put_txn(&app, "1", token, &replay).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sees(&app, "@alice:test.local", "@carol:test.local").await);
    assert!(sees(&app, "@alice:test.local", "@bob:test.local").await);

    // The ping at start, as the service, with presenced's as_token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.lock().unwrap().pings.is_empty() {
        assert!(Instant::now() < deadline, "no ping");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.lock().unwrap().pings[0],
        (registration.id.clone(), registration.as_token.clone())
    );
}

#[tokio::test]
async fn standalone_has_no_application_service_api() {
    let app = spawn_app().await;
    let (status, answer, _) = put_txn(&app, "1", Some("x"), "{\"events\": []}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn stored_memberships_reach_presence_after_a_restart() {
    // An earlier run stored a room's members (SQLite: this test opens the
    // file before the server does; the store conformance tests cover
    // PostgreSQL's rows).
    let dir = tempfile::tempdir().unwrap();
    {
        let store = presenced_server::store::sqlite::SqliteStore::open(
            &dir.path().join("presenced.db"),
            "test.local".try_into().unwrap(),
        )
        .unwrap();
        let events: Vec<Value> = vec![
            member("!r:test.local", "@alice:test.local", "join", 1),
            member("!r:test.local", "@bob:test.local", "join", 2),
        ];
        let body = json!({ "events": events }).to_string();
        let parsed =
            presenced_server::companion::members::parse_transaction(body.as_bytes()).unwrap();
        store.apply_membership_transaction("1", &parsed).unwrap();
    }
    let data_dir = dir.path().to_owned();
    // Synapse's admin API has no rooms now: what is seen comes from the
    // database (and the bootstrap does not run, something being stored).
    let Some((app, _, _)) = companion_with(vec![], move |c| {
        crate::helpers::sqlite_only(c);
        c.data_dir = data_dir;
    })
    .await
    else {
        return;
    };
    assert!(sees(&app, "@alice:test.local", "@bob:test.local").await);
    assert!(sees(&app, "@bob:test.local", "@alice:test.local").await);
}

#[tokio::test]
async fn synapse_resync_stores_every_rooms_members() {
    let room = "!r:test.local";
    let fake: Shared = Arc::new(Mutex::new(FakeSynapse {
        rooms: vec![(
            room.to_owned(),
            vec![
                member(room, "@alice:test.local", "join", 1),
                member(room, "@bob:test.local", "join", 2),
            ],
        )],
        ..FakeSynapse::default()
    }));
    let url = start_fake(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("as.yaml");
    std::fs::write(&registration, Registration::generate("http://x").to_yaml()).unwrap();
    let token_file = dir.path().join("admin_token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let config = dir.path().join("presenced.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: test.local\ndata_dir: {}\nsigning_key_path: {}\nsynapse:\n  url: {url}\n  \
             appservice_registration: {}\n  admin_token_path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("synapse.signing.key").display(),
            registration.display(),
            token_file.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(["--config", &config_arg, "synapse-resync"])
            .env_remove("PRESENCED_DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Read 1 rooms and 2 memberships"),
        "{stdout}"
    );
    let store = presenced_server::store::sqlite::SqliteStore::open(
        &dir.path().join("data").join("presenced.db"),
        "test.local".try_into().unwrap(),
    )
    .unwrap();
    assert_eq!(store.companion_joined().unwrap().len(), 2);
}
