//! Federation, outbound side, up to the outbox: what the engine sends to
//! remote servers lands in the durable per-destination outbox (the store
//! is read back directly), policies keep things out of it, and
//! `send_local_online_presence_to` with a remote user queues local states
//! only (W5/W6). The destinations are `127.0.0.1:1` and `127.0.0.1:2`:
//! loopback ports where nothing listens, so every delivery fails at once,
//! nothing leaves the machine, and what was queued stays queued.
//! (Delivery between two real servers: `federation_two_servers`.)

use std::sync::Arc;
use std::time::Duration;

use presenced_engine::{Presence, RemotePresence};
use presenced_router::ModuleCommand;
use presenced_server::config::{Config, ModuleConfig};
use presenced_server::federation::keys::{BoxFuture, FetchError, KeyFetcher};
use presenced_server::federation::ServerSigningKey;
use presenced_server::store::outbox::OutboxEntry;
use ruma_common::{OwnedServerName, OwnedUserId, ServerName};
use serde_json::json;

use crate::helpers::{spawn_app_with, spawn_app_with_fetcher, TestApp};
use crate::ops::{eventually, generous, put_presence};

const NOWHERE: &str = "127.0.0.1:1";
const NOWHERE_ELSE: &str = "127.0.0.1:2";

/// Routes alice's presence (and carol's, a remote user) to bob on
/// [`NOWHERE`] and to dave on [`NOWHERE_ELSE`]; a failed destination is
/// retried only after an hour, so the test sees one attempt at most.
fn routed(config: &mut Config) {
    generous(config);
    config.federation.destination_min_retry_interval = Duration::from_secs(3600);
    config.federation.destination_max_retry_interval = Duration::from_secs(3600);
    config.modules.push(ModuleConfig {
        module: "presenced.routers.StaticRoutes".to_owned(),
        config: json!({"routes": [
            {"receiver": format!("@bob:{NOWHERE}"), "senders": ["@alice:test.local", format!("@carol:{NOWHERE}")]},
            {"receiver": format!("@dave:{NOWHERE_ELSE}"), "senders": ["@alice:test.local"]},
        ]}),
        deadline_ms: None,
    });
}

fn server(name: &str) -> OwnedServerName {
    name.try_into().unwrap()
}

async fn pending(app: &TestApp, destination: &str) -> Vec<OutboxEntry> {
    let destination = server(destination);
    app.state
        .db(move |s| s.pending_presence(&destination, 100))
        .await
        .unwrap()
}

fn users(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.state.user_id.as_str()).collect()
}

#[tokio::test]
async fn local_presence_for_a_remote_server_is_kept_in_the_outbox_latest_first() {
    let app = spawn_app_with(routed).await;
    let alice = app.register("alice").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "first"}),
    )
    .await;
    eventually(|| async { users(&pending(&app, NOWHERE).await) == ["@alice:test.local"] }).await;
    // The delivery failed and is retried later; a newer state replaces the
    // queued one.
    eventually(|| async {
        app.state
            .outbound
            .stats()
            .transactions_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "unavailable", "status_msg": "second"}),
    )
    .await;
    eventually(|| async {
        let entries = pending(&app, NOWHERE).await;
        entries.len() == 1
            && entries[0].state.presence == Presence::Unavailable
            && entries[0].state.status_msg.as_deref() == Some("second")
    })
    .await;
    let stats = app.state.outbound.stats();
    assert_eq!(
        stats
            .states_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn send_local_online_presence_to_a_remote_user_queues_local_states_only() {
    let app = spawn_app_with(routed).await;
    let alice = app.register("alice").await;
    put_presence(
        &app,
        &alice,
        json!({"presence": "online", "status_msg": "hi"}),
    )
    .await;
    // carol, a remote user bob is routed to, is online here too.
    let carol: OwnedUserId = format!("@carol:{NOWHERE}").try_into().unwrap();
    app.state.presence.remote_presence(
        &server(NOWHERE),
        vec![RemotePresence {
            user_id: carol,
            presence: Presence::Online,
            last_active_ago: Some(0),
            currently_active: Some(true),
            status_msg: None,
        }],
    );
    eventually(|| async { users(&pending(&app, NOWHERE).await) == ["@alice:test.local"] }).await;
    // Pretend NOWHERE acknowledged it: the outbox is empty again.
    let acked: Vec<(OwnedUserId, i64)> = pending(&app, NOWHERE)
        .await
        .into_iter()
        .map(|e| (e.state.user_id, e.seq))
        .collect();
    let removed = app
        .state
        .db(move |s| s.remove_sent_presence(&server(NOWHERE), &acked))
        .await
        .unwrap();
    assert_eq!(removed, 1);

    let bob: OwnedUserId = format!("@bob:{NOWHERE}").try_into().unwrap();
    app.state
        .presence
        .module_command(ModuleCommand::SendLocalOnlinePresenceTo(vec![bob]));
    eventually(|| async { !pending(&app, NOWHERE).await.is_empty() }).await;
    let entries = pending(&app, NOWHERE).await;
    assert_eq!(users(&entries), ["@alice:test.local"], "never carol (W6)");
    assert_eq!(entries[0].state.presence, Presence::Online);
    assert_eq!(entries[0].state.status_msg.as_deref(), Some("hi"));
}

#[tokio::test]
async fn destinations_outside_the_whitelist_get_nothing_queued() {
    let app = spawn_app_with(|c| {
        routed(c);
        c.federation_domain_whitelist = Some(vec![server(NOWHERE_ELSE)]);
    })
    .await;
    let alice = app.register("alice").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    // Both destinations come out of the same fan-out, so once one is
    // queued the other was decided too.
    eventually(|| async { users(&pending(&app, NOWHERE_ELSE).await) == ["@alice:test.local"] })
        .await;
    assert!(pending(&app, NOWHERE).await.is_empty());
}

#[tokio::test]
async fn send_false_queues_nothing() {
    let app = spawn_app_with(|c| {
        routed(c);
        c.presence.federation.send = false;
    })
    .await;
    let alice = app.register("alice").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    // The engine still decides where presence would go ...
    eventually(|| async { app.state.presence.stats().federation_states_sent >= 2 }).await;
    // ... but nothing reaches the outbox. (No event marks "the queue task
    // saw it", so give it time; this can only pass wrongly, never fail
    // wrongly.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = app.state.db(|s| s.outbox_len()).await.unwrap();
    assert_eq!(total, 0);
}

/// The key server of [`NOWHERE`], answered in-process: its key is made in
/// the test.
struct NowhereKeys(ServerSigningKey);

impl KeyFetcher for NowhereKeys {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<serde_json::Value, FetchError>> {
        let mut body = json!({
            "server_name": server,
            "valid_until_ts": presenced_server::util::clock::now().as_millis() + 3_600_000,
            "verify_keys": { self.0.key_id(): { "key": self.0.public_key_base64() } },
            "old_verify_keys": {},
        });
        self.0.sign_json(server, &mut body).unwrap();
        Box::pin(async move { Ok(body) })
    }
}

fn failed_transactions(app: &TestApp) -> u64 {
    app.state
        .outbound
        .stats()
        .transactions_failed
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_destination_that_reaches_us_is_retried_at_once() {
    let key = Arc::new(NowhereKeys(ServerSigningKey::generate()));
    let app = spawn_app_with_fetcher(routed, key.clone()).await;
    let alice = app.register("alice").await;
    put_presence(&app, &alice, json!({"presence": "online"})).await;
    // One failed attempt per destination (NOWHERE and NOWHERE_ELSE), then
    // an hour's wait.
    eventually(|| async { failed_transactions(&app) == 2 }).await;

    // NOWHERE sends us a (signed, empty) transaction: it is up.
    let body = json!({"origin": NOWHERE, "origin_server_ts": 1, "pdus": [], "edus": []});
    let path = "/_matrix/federation/v1/send/up-1";
    let auth = key
        .0
        .x_matrix_authorization(
            &server(NOWHERE),
            &server("test.local"),
            "PUT",
            path,
            Some(&body),
        )
        .unwrap();
    let response = app
        .client
        .put(format!("{}{path}", app.base))
        .header("Authorization", auth)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    // The sender tried again without waiting out its hour (and failed:
    // nothing listens there), and the state is still queued. NOWHERE_ELSE
    // keeps waiting.
    eventually(|| async { failed_transactions(&app) == 3 }).await;
    assert_eq!(users(&pending(&app, NOWHERE).await), ["@alice:test.local"]);
}

#[tokio::test]
async fn what_an_earlier_run_queued_is_sent_after_a_start() {
    use presenced_server::store::outbox::OutboxStore;
    use presenced_server::store::sqlite::SqliteStore;

    // An earlier run left alice's state queued for NOWHERE.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(
            &dir.path().join("presenced.db"),
            "test.local".try_into().unwrap(),
        )
        .unwrap();
        let mut alice =
            presenced_engine::PresenceState::new("@alice:test.local".try_into().unwrap());
        alice.presence = Presence::Online;
        store.queue_presence(&[(server(NOWHERE), alice)]).unwrap();
    }
    let data_dir = dir.path().to_owned();
    // The earlier run's file is SQLite's (the same on PostgreSQL is the
    // outbox conformance test plus crash.rs).
    let app = spawn_app_with(move |c| {
        routed(c);
        crate::helpers::sqlite_only(c);
        c.data_dir = data_dir;
    })
    .await;
    // Nobody changed presence in this run, yet the sender tried NOWHERE
    // (nothing listens there, so the state stays queued).
    eventually(|| async { failed_transactions(&app) >= 1 }).await;
    assert_eq!(users(&pending(&app, NOWHERE).await), ["@alice:test.local"]);
}
