//! Companion mode in a cluster: an application-service transaction that
//! Synapse pushes to one node reaches the presence engine of every node,
//! once each. Two nodes run in this process on one fresh PostgreSQL
//! database and a `nats-server` of their own, in front of a stand-in
//! Synapse with no rooms (the bootstrap and the ping need an answer).
//! Skipped with a message without PostgreSQL or nats-server (failures
//! under `PRESENCED_REQUIRE_POSTGRES=1` / `PRESENCED_REQUIRE_NATS=1`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::{Json, Router};
use presenced_cluster::testing::NatsServers;
use presenced_server::companion::members::MembershipFeed;
use presenced_server::companion::registration::Registration;
use presenced_server::config::cluster::ClusterConfig;
use presenced_server::config::companion::CompanionConfig;
use presenced_server::config::Secret;
use presenced_server::federation::keys::NoKeyFetcher;
use presenced_server::store::testing::FreshPgDatabase;
use presenced_server::AppState;
use reqwest::StatusCode;
use ruma_common::OwnedUserId;
use serde_json::json;

use crate::cluster_backend::{start_node, wait_for_owners};
use crate::helpers::test_config;

/// A Synapse with no rooms: enough for the first bootstrap and the ping.
async fn roomless_synapse() -> String {
    let app = Router::new()
        .route(
            "/_synapse/admin/v1/rooms",
            get(|| async { Json(json!({"rooms": [], "offset": 0, "total_rooms": 0})) }),
        )
        .route(
            "/_matrix/client/v1/appservice/{id}/ping",
            post(|| async { Json(json!({"duration_ms": 1})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn uid(s: &str) -> OwnedUserId {
    s.try_into().unwrap()
}

fn join(user: &str, ts: u64) -> serde_json::Value {
    json!({
        "type": "m.room.member", "room_id": "!r:test.local", "state_key": user,
        "sender": user, "event_id": format!("$join{ts}"), "origin_server_ts": ts,
        "content": {"membership": "join"},
    })
}

fn feed(state: &AppState) -> &MembershipFeed {
    let companion = state.companion.as_ref().expect("companion mode");
    companion
        .membership_feed
        .as_deref()
        .expect("a membership feed")
}

async fn sees(state: &AppState, observer: &str, target: &str) -> bool {
    (state.presence)
        .get_presence(&uid(observer), &uid(target))
        .await
        .is_some()
}

/// PUTs transaction `txn` to the node at `base`; its status.
async fn push(base: &str, registration: &Registration, txn: &str, body: &str) -> StatusCode {
    reqwest::Client::new()
        .put(format!("{base}/_matrix/app/v1/transactions/{txn}"))
        .bearer_auth(&registration.hs_token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_pushed_to_one_node_reaches_every_nodes_presence_once() {
    let Some(db) = FreshPgDatabase::create("companion_cluster") else {
        return;
    };
    let Some(nats) = NatsServers::start(1, "companion mode in a cluster") else {
        return;
    };
    let nats_url = nats.urls()[0].clone();
    let synapse = roomless_synapse().await;
    let registration = Registration::generate("http://127.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let registration_path = dir.path().join("presenced-appservice.yaml");
    std::fs::write(&registration_path, registration.to_yaml()).unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let mut config = test_config(&dir);
        config.database.url = Some(db.url());
        config.data_dir = dir.path().join(name);
        std::fs::create_dir_all(&config.data_dir).unwrap();
        config.signing_key_path = Some(dir.path().join("signing.key"));
        config.cluster = Some(ClusterConfig {
            node_name: name.to_owned(),
            nats_servers: vec![nats_url.clone()],
            nats_credentials: None,
            allow_unreplicated: true,
        });
        config.synapse = Some(CompanionConfig {
            url: synapse.clone(),
            appservice_registration: registration_path.clone(),
            admin_token: Some(Secret::new("syt_admin")),
            admin_token_path: None,
        });
        nodes.push(start_node(config, Arc::new(NoKeyFetcher)).await);
    }
    let bases: Vec<String> = nodes.iter().map(|(_, base, _, _)| base.clone()).collect();
    wait_for_owners(&bases).await;
    let (a, b) = (&nodes[0].2, &nodes[1].2);
    let (alice, bob) = ("@alice:test.local", "@bob:test.local");
    assert!(!sees(b, alice, bob).await);

    let body = json!({"events": [join(alice, 1), join(bob, 2)]}).to_string();
    assert_eq!(
        push(&bases[0], &registration, "t1", &body).await,
        StatusCode::OK
    );
    // Node a took the transaction; node b's engine learns it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(sees(b, alice, bob).await && sees(b, bob, alice).await) {
        assert!(
            Instant::now() < deadline,
            "node b's presence never heard the memberships node a stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sees(a, alice, bob).await && sees(a, bob, alice).await);

    // Synapse re-sends the transaction, this time to node b: stored once,
    // so nothing is told again, on either node, however long they follow.
    assert_eq!(
        push(&bases[1], &registration, "t1", &body).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(feed(a).changes_told(), 2, "node a told its changes once");
    assert_eq!(feed(b).changes_told(), 2, "node b told a's changes once");
    drop(nodes);
    drop(nats);
}
