//! Federation, inbound side: the key server and signed transactions
//! (`PUT /_matrix/federation/v1/send/{txnId}`) from a test peer whose key
//! is made in the test and reached through an injected key fetcher.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use presenced_server::config::{Config, ModuleConfig};
use presenced_server::federation::keys::{BoxFuture, FetchError, KeyFetcher};
use presenced_server::federation::signing::to_canonical_object;
use presenced_server::federation::ServerSigningKey;
use reqwest::StatusCode;
use ruma_common::serde::Base64;
use ruma_common::{OwnedServerName, ServerName};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_with, spawn_app_with_fetcher, TestApp};
use crate::ops::{eventually, generous, get_presence, presence_of, sync};

/// Our test server's name (helpers' `test_config`).
const US: &str = "test.local";
/// The test peer.
const PEER: &str = "peer.test";

/// A remote server made in the test: a name and a key pair.
struct Peer {
    name: OwnedServerName,
    key: ServerSigningKey,
}

impl Peer {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.try_into().unwrap(),
            key: ServerSigningKey::generate(),
        })
    }

    /// Its `/_matrix/key/v2/server` answer, valid for an hour.
    fn key_response(&self) -> Value {
        let mut body = json!({
            "server_name": self.name,
            "valid_until_ts": presenced_server::util::clock::now().as_millis() + 3_600_000,
            "verify_keys": { self.key.key_id(): { "key": self.key.public_key_base64() } },
            "old_verify_keys": {},
        });
        self.key.sign_json(&self.name, &mut body).unwrap();
        body
    }
}

/// The key-fetching edge: answers for the peers it knows, counting calls.
struct PeerKeys {
    peers: Vec<Arc<Peer>>,
    calls: AtomicUsize,
}

impl KeyFetcher for PeerKeys {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Value, FetchError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let found = self.peers.iter().find(|p| p.name == server);
        let result = found
            .map(|p| p.key_response())
            .ok_or(FetchError::Unreachable {
                server: server.to_owned(),
                message: "unknown test server".to_owned(),
            });
        Box::pin(async move { result })
    }
}

/// A server that knows `peers`' keys, with `tweak` applied to its config.
async fn app_knowing(
    peers: &[&Arc<Peer>],
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, Arc<PeerKeys>) {
    let keys = Arc::new(PeerKeys {
        peers: peers.iter().map(|p| Arc::clone(p)).collect(),
        calls: AtomicUsize::new(0),
    });
    let app = spawn_app_with_fetcher(
        |c| {
            generous(c);
            tweak(c);
        },
        keys.clone(),
    )
    .await;
    (app, keys)
}

/// Lets `@alice:test.local` see every user (remote ones included).
fn alice_observes(config: &mut Config) {
    config.modules.push(ModuleConfig {
        module: "presenced.routers.Observers".to_owned(),
        config: json!({"observers": ["@alice:test.local"]}),
        deadline_ms: None,
    });
}

fn transaction(origin: &str, edus: Value) -> Value {
    json!({
        "origin": origin,
        "origin_server_ts": presenced_server::util::clock::now().as_millis(),
        "pdus": [],
        "edus": edus,
    })
}

fn presence_edu(push: Value) -> Value {
    json!({"edu_type": "m.presence", "content": {"push": push}})
}

fn send_path(txn_id: &str) -> String {
    format!("/_matrix/federation/v1/send/{txn_id}")
}

/// PUTs `body` to `path` with `authorization` (if any) as the header.
async fn put_raw(
    app: &TestApp,
    path: &str,
    authorization: Option<String>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = app.client.put(format!("{}{path}", app.base)).json(body);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// A transaction from `peer`, correctly signed for us.
async fn send(app: &TestApp, peer: &Peer, txn_id: &str, body: &Value) -> (StatusCode, Value) {
    let path = send_path(txn_id);
    let auth = peer
        .key
        .x_matrix_authorization(&peer.name, name(US), "PUT", &path, Some(body))
        .unwrap();
    put_raw(app, &path, Some(auth), body).await
}

fn name(s: &str) -> &ServerName {
    <&ServerName>::try_from(s).unwrap()
}

#[tokio::test]
async fn key_server_answers_self_signed_keys_valid_in_the_future() {
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("test.local.signing.key");
    let path = key_path.clone();
    let app = spawn_app_with(move |c| c.signing_key_path = Some(path)).await;
    let (status, body) = app.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_name"], "test.local");
    assert_eq!(body["old_verify_keys"], serde_json::json!({}));
    let now = presenced_server::util::clock::now().as_millis();
    let valid_until = body["valid_until_ts"].as_u64().unwrap();
    assert!(valid_until > now + 3_600_000, "{valid_until} vs {now}");

    // The key listed is the one in the generated key file.
    let stored = ServerSigningKey::load_or_generate(&key_path).unwrap();
    let verify_keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    assert_eq!(
        verify_keys[stored.key_id()]["key"],
        stored.public_key_base64()
    );

    // The response verifies with ruma against the key it lists.
    let public_keys = BTreeMap::from([(
        "test.local".to_owned(),
        BTreeMap::from([(
            stored.key_id().to_owned(),
            Base64::parse(stored.public_key_base64()).unwrap(),
        )]),
    )]);
    let object = to_canonical_object(body.clone()).unwrap();
    ruma_signatures::verify_json(&public_keys, &object).unwrap();

    // The deprecated by-key-ID form answers the same keys.
    let (status, by_id) = app
        .get(&format!("/_matrix/key/v2/server/{}", stored.key_id()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["verify_keys"], body["verify_keys"]);
}

#[tokio::test]
async fn signing_key_is_generated_in_the_data_dir_and_kept() {
    let app = spawn_app_with(|_| {}).await;
    let path = app._dir.path().join("test.local.signing.key");
    let on_disk = ServerSigningKey::load_or_generate(&path).unwrap();
    assert_eq!(on_disk.key_id(), app.state.signing_key.key_id());
    assert_eq!(
        on_disk.public_key_base64(),
        app.state.signing_key.public_key_base64()
    );
}

#[tokio::test]
async fn signed_presence_reaches_a_routed_local_user_only() {
    let peer = Peer::new(PEER);
    let (app, keys) = app_knowing(&[&peer], |c| {
        c.modules.push(ModuleConfig {
            module: "presenced.routers.StaticRoutes".to_owned(),
            config: json!({"routes": [{"receiver": "@alice:test.local", "senders": ["@bob:peer.test"]}]}),
            deadline_ms: None,
        });
    })
    .await;
    let alice = app.register("alice").await;
    let dave = app.register("dave").await;
    let initial = sync(&app, &alice, "set_presence=offline").await;
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    let body = transaction(
        PEER,
        json!([presence_edu(json!([{
            "user_id": "@bob:peer.test", "presence": "online",
            "last_active_ago": 2000, "currently_active": true, "status_msg": "from afar"
        }]))]),
    );
    let (status, answer) = send(&app, &peer, "txn1", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"pdus": {}}));
    assert_eq!(keys.calls.load(Ordering::SeqCst), 1, "one key fetch");

    // Alice's incremental sync carries bob's state.
    let since_query = format!("set_presence=offline&since={since}");
    eventually(|| async {
        presence_of(&sync(&app, &alice, &since_query).await, "@bob:peer.test").is_some()
    })
    .await;
    let content = presence_of(&sync(&app, &alice, &since_query).await, "@bob:peer.test").unwrap();
    assert_eq!(content["presence"], "online");
    assert_eq!(content["status_msg"], "from afar");
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].as_u64().unwrap() >= 2000);

    // Alice may GET it (routing counts); dave, not routed, may not.
    let (status, got) = get_presence(&app, &alice, "@bob:peer.test").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["presence"], "online");
    let (status, got) = get_presence(&app, &dave, "@bob:peer.test").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{got}");
    let dave_sync = sync(&app, &dave, "set_presence=offline").await;
    assert!(presence_of(&dave_sync, "@bob:peer.test").is_none());

    // A second transaction reuses the cached key.
    let body = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@bob:peer.test", "presence": "unavailable"}])
        )]),
    );
    assert_eq!(send(&app, &peer, "txn2", &body).await.0, StatusCode::OK);
    assert_eq!(
        get_presence(&app, &alice, "@bob:peer.test").await.1["presence"],
        "unavailable"
    );
    assert_eq!(keys.calls.load(Ordering::SeqCst), 1, "the key was cached");
}

#[tokio::test]
async fn unauthenticated_or_misaddressed_requests_get_401() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], alice_observes).await;
    let body = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@bob:peer.test", "presence": "online"}])
        )]),
    );
    let path = send_path("t1");

    // No Authorization header.
    let resp = put_raw(&app, &path, None, &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // Not an X-Matrix header.
    let resp = put_raw(&app, &path, Some("Bearer abc".to_owned()), &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // Signed by a key that is not the peer's (same key ID, other key).
    let impostor =
        ServerSigningKey::from_seed(peer.key.key_id().trim_start_matches("ed25519:"), [42; 32])
            .unwrap();
    let forged = impostor
        .x_matrix_authorization(&peer.name, name(US), "PUT", &path, Some(&body))
        .unwrap();
    let resp = put_raw(&app, &path, Some(forged), &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // Correctly signed, but the body was changed afterwards.
    let auth = peer
        .key
        .x_matrix_authorization(&peer.name, name(US), "PUT", &path, Some(&body))
        .unwrap();
    let mut tampered = body.clone();
    tampered["edus"][0]["content"]["push"][0]["presence"] = json!("unavailable");
    let resp = put_raw(&app, &path, Some(auth.clone()), &tampered).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // Signed for another URI.
    let resp = put_raw(&app, &send_path("t2"), Some(auth), &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // Signed for another destination.
    let elsewhere = peer
        .key
        .x_matrix_authorization(
            &peer.name,
            name("elsewhere.test"),
            "PUT",
            &path,
            Some(&body),
        )
        .unwrap();
    let resp = put_raw(&app, &path, Some(elsewhere), &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // From a server whose keys cannot be fetched.
    let stranger = Peer::new("stranger.test");
    let body = transaction("stranger.test", json!([]));
    let resp = send(&app, &stranger, "t1", &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");

    // None of it changed bob's presence.
    let alice = app.register("alice").await;
    let (_, got) = get_presence(&app, &alice, "@bob:peer.test").await;
    assert_eq!(got["presence"], "offline", "{got}");
}

/// Sends only the head of a `PUT` declaring an 8 MiB body, none of which
/// follows, with `authorization` (if any); returns the status line of the
/// answer, which must come without waiting for the body.
async fn head_only_put(app: &TestApp, path: &str, authorization: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let auth = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\n\r\n",
        8 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("answered before any of the body was sent")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn refused_requests_are_answered_before_their_body_is_read() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |c| {
        c.federation_domain_whitelist = Some(vec![PEER.try_into().unwrap()]);
    })
    .await;
    let path = send_path("unread");
    // No header, not X-Matrix, another destination, an origin outside the
    // whitelist, an origin whose key cannot be found.
    let body = json!({});
    let elsewhere = peer
        .key
        .x_matrix_authorization(
            &peer.name,
            name("elsewhere.test"),
            "PUT",
            &path,
            Some(&body),
        )
        .unwrap();
    let outsider = Peer::new("outsider.test");
    let outside = outsider
        .key
        .x_matrix_authorization(&outsider.name, name(US), "PUT", &path, Some(&body))
        .unwrap();
    let unknown_key = ServerSigningKey::from_seed("other", [7; 32]).unwrap();
    let unknown = unknown_key
        .x_matrix_authorization(&peer.name, name(US), "PUT", &path, Some(&body))
        .unwrap();
    for (auth, status) in [
        (None, "401"),
        (Some("Bearer abc"), "401"),
        (Some(elsewhere.as_str()), "401"),
        (Some(outside.as_str()), "403"),
        (Some(unknown.as_str()), "401"),
    ] {
        let line = head_only_put(&app, &path, auth).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{auth:?}: {line}"
        );
    }
}

#[tokio::test]
async fn origins_outside_the_whitelist_get_403_before_any_key_fetch() {
    let peer = Peer::new(PEER);
    let friend = Peer::new("friend.test");
    let (app, keys) = app_knowing(&[&peer, &friend], |c| {
        c.federation_domain_whitelist = Some(vec!["friend.test".try_into().unwrap()]);
        c.enable_metrics = true;
    })
    .await;
    let resp = send(&app, &peer, "t1", &transaction(PEER, json!([]))).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert_eq!(keys.calls.load(Ordering::SeqCst), 0);
    let (status, body) = send(&app, &friend, "t1", &transaction("friend.test", json!([]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Both show in the metrics.
    let text = app.metrics_text().await;
    assert!(
        text.contains("\npresenced_federation_requests_refused_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\npresenced_federation_transactions_total 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn body_origin_must_be_the_signing_server() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |_| {}).await;
    let body = transaction("other.test", json!([]));
    let resp = send(&app, &peer, "t1", &body).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_repeated_transaction_is_acknowledged_but_not_applied_again() {
    let peer = Peer::new(PEER);
    let other = Peer::new("other.test");
    let (app, _) = app_knowing(&[&peer, &other], alice_observes).await;
    let alice = app.register("alice").await;
    let first = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@bob:peer.test", "presence": "online", "status_msg": "first"}])
        )]),
    );
    assert_eq!(send(&app, &peer, "same", &first).await.0, StatusCode::OK);
    let accepted = app.state.presence.stats().remote_accepted;
    assert_eq!(accepted, 1);

    // The same ID again (even with other content) changes nothing.
    let second = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@bob:peer.test", "presence": "unavailable", "status_msg": "second"}])
        )]),
    );
    let (status, answer) = send(&app, &peer, "same", &second).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"pdus": {}}));
    let (_, got) = get_presence(&app, &alice, "@bob:peer.test").await;
    assert_eq!(
        (got["presence"].as_str(), got["status_msg"].as_str()),
        (Some("online"), Some("first"))
    );
    assert_eq!(app.state.presence.stats().remote_accepted, 1);

    // Another server's transaction with the same ID is its own.
    let theirs = transaction(
        "other.test",
        json!([presence_edu(
            json!([{"user_id": "@carl:other.test", "presence": "online"}])
        )]),
    );
    assert_eq!(send(&app, &other, "same", &theirs).await.0, StatusCode::OK);
    assert_eq!(
        get_presence(&app, &alice, "@carl:other.test").await.1["presence"],
        "online"
    );
}

#[tokio::test]
async fn one_bad_push_entry_does_not_lose_the_others() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], alice_observes).await;
    let alice = app.register("alice").await;
    let body = transaction(
        PEER,
        json!([
            presence_edu(json!([
                {"user_id": "@bad1:peer.test", "presence": "online", "last_active_ago": -1},
                {"user_id": "@good1:peer.test", "presence": "online"},
                {"user_id": "@eve:elsewhere.test", "presence": "online"},
                {"user_id": "@bad2:peer.test", "presence": "dancing"},
                {"user_id": "@bad3:peer.test", "presence": "online", "currently_active": "yes"},
                {"user_id": "@good2:peer.test", "presence": "unavailable", "status_msg": "ok"},
            ])),
            // Other EDU types are acknowledged without effect.
            {"edu_type": "m.typing", "content": {"room_id": "!r:peer.test", "user_id": "@good1:peer.test", "typing": true}},
            "not even an object",
        ]),
    );
    let (status, answer) = send(&app, &peer, "mixed", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        get_presence(&app, &alice, "@good1:peer.test").await.1["presence"],
        "online"
    );
    let good2 = get_presence(&app, &alice, "@good2:peer.test").await.1;
    assert_eq!(
        (good2["presence"].as_str(), good2["status_msg"].as_str()),
        (Some("unavailable"), Some("ok"))
    );
    for bad in [
        "@bad1:peer.test",
        "@bad2:peer.test",
        "@bad3:peer.test",
        "@eve:elsewhere.test",
    ] {
        assert_eq!(
            get_presence(&app, &alice, bad).await.1["presence"],
            "offline",
            "{bad}"
        );
    }
    assert_eq!(app.state.presence.stats().remote_accepted, 2);
}

#[tokio::test]
async fn receive_false_acknowledges_and_ignores_presence() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |c| {
        alice_observes(c);
        c.presence.federation.receive = false;
    })
    .await;
    let alice = app.register("alice").await;
    let body = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@bob:peer.test", "presence": "online"}])
        )]),
    );
    let (status, answer) = send(&app, &peer, "t1", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        get_presence(&app, &alice, "@bob:peer.test").await.1["presence"],
        "offline"
    );
    assert_eq!(app.state.presence.stats().remote_accepted, 0);
}

#[tokio::test]
async fn too_many_edus_or_a_malformed_body_is_a_bad_request() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |_| {}).await;
    let edus: Vec<Value> = (0..101)
        .map(|_| json!({"edu_type": "m.typing", "content": {}}))
        .collect();
    let resp = send(&app, &peer, "big", &transaction(PEER, json!(edus))).await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = send(&app, &peer, "noorigin", &json!({"pdus": []})).await;
    assert_error(&resp, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn presence_learnt_from_one_server_is_capped() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |c| {
        alice_observes(c);
        c.presence.max_remote_users_per_server = 3;
    })
    .await;
    let alice = app.register("alice").await;
    let online = |i: usize| {
        let app = &app;
        let alice = &alice;
        async move {
            let (_, got) = get_presence(app, alice, &format!("@u{i}:peer.test")).await;
            got["presence"] == "online"
        }
    };
    // Ten users in one EDU: the first three are kept; the others cannot
    // push out users of their own transaction and are dropped.
    let push: Vec<Value> = (0..10)
        .map(|i| json!({"user_id": format!("@u{i}:peer.test"), "presence": "online"}))
        .collect();
    let body = transaction(PEER, json!([presence_edu(json!(push))]));
    assert_eq!(send(&app, &peer, "flood", &body).await.0, StatusCode::OK);
    let mut kept = Vec::new();
    for i in 0..10 {
        if online(i).await {
            kept.push(i);
        }
    }
    assert_eq!(kept, vec![0, 1, 2]);
    assert_eq!(app.state.presence.stats().remote_dropped, 7);

    // A later new user pushes out the one updated longest ago.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let body = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@u1:peer.test", "presence": "online"}, {"user_id": "@u2:peer.test", "presence": "online"}])
        )]),
    );
    assert_eq!(send(&app, &peer, "refresh", &body).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let body = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": "@u9:peer.test", "presence": "online"}])
        )]),
    );
    assert_eq!(send(&app, &peer, "newcomer", &body).await.0, StatusCode::OK);
    assert!(online(9).await && online(1).await && online(2).await);
    assert!(!online(0).await);
    let stats = app.state.presence.stats();
    assert_eq!(stats.remote_evicted, 1);
    assert_eq!(
        stats.users_tracked, 3,
        "the three remote users (alice has no record)"
    );
}

/// Fetches keys over real HTTP from test servers on loopback (the part of
/// the federation client that server discovery would otherwise do).
struct LoopbackKeys {
    bases: std::sync::Mutex<Vec<(OwnedServerName, String)>>,
}

impl KeyFetcher for LoopbackKeys {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Value, FetchError>> {
        let base = self
            .bases
            .lock()
            .unwrap()
            .iter()
            .find(|(name, _)| name == server)
            .map(|(_, base)| base.clone());
        Box::pin(async move {
            let unreachable = |message: String| FetchError::Unreachable {
                server: server.to_owned(),
                message,
            };
            let base = base.ok_or_else(|| unreachable("unknown test server".to_owned()))?;
            let resp = reqwest::get(format!("{base}/_matrix/key/v2/server"))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            resp.json().await.map_err(|e| unreachable(e.to_string()))
        })
    }
}

/// Two presenced servers on loopback: B fetches A's keys from A's own key
/// server over HTTP, checks them, and accepts a transaction A's key signed.
#[tokio::test]
async fn a_second_presenced_fetches_our_keys_and_accepts_our_signature() {
    let keys = Arc::new(LoopbackKeys {
        bases: std::sync::Mutex::new(Vec::new()),
    });
    let a = spawn_app_with(|c| c.server_name = "a.test".try_into().unwrap()).await;
    let b = spawn_app_with_fetcher(
        |c| {
            c.server_name = "b.test".try_into().unwrap();
            c.modules.push(ModuleConfig {
                module: "presenced.routers.StaticRoutes".to_owned(),
                config: json!({"routes": [{"receiver": "@bob:b.test", "senders": ["@alice:a.test"]}]}),
                deadline_ms: None,
            });
        },
        keys.clone(),
    )
    .await;
    keys.bases
        .lock()
        .unwrap()
        .push(("a.test".try_into().unwrap(), a.base.clone()));
    let bob = b.register("bob").await;

    let body = transaction(
        "a.test",
        json!([presence_edu(
            json!([{"user_id": "@alice:a.test", "presence": "online", "status_msg": "hello b"}])
        )]),
    );
    let path = send_path("1");
    let auth = a
        .state
        .signing_key
        .x_matrix_authorization(name("a.test"), name("b.test"), "PUT", &path, Some(&body))
        .unwrap();
    let (status, answer) = put_raw(&b, &path, Some(auth), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, got) = get_presence(&b, &bob, "@alice:a.test").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["presence"], "online");
    assert_eq!(got["status_msg"], "hello b");

    // B's own key does not pass for A's.
    let forged = b
        .state
        .signing_key
        .x_matrix_authorization(
            name("a.test"),
            name("b.test"),
            "PUT",
            &send_path("2"),
            Some(&body),
        )
        .unwrap();
    let resp = put_raw(&b, &send_path("2"), Some(forged), &body).await;
    assert_error(&resp, 401, "M_UNAUTHORIZED");
}

/// Users the cap forgets leave storage too, and a restart with a smaller
/// cap trims what was stored.
#[tokio::test]
async fn forgotten_remote_users_leave_storage() {
    use presenced_engine::{EngineConfig, RemotePresence};
    use presenced_router::PresenceRouter;
    use presenced_server::presence::PresenceService;
    use presenced_server::store::presence::{PresenceStore, SqlitePresenceStore};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlitePresenceStore::open(&dir.path().join("p.db")).unwrap());
    let start = |cap: usize| {
        let (service, _outbound) = PresenceService::start(
            EngineConfig {
                max_remote_users_per_server: cap,
                ..EngineConfig::default()
            },
            "test.local".try_into().unwrap(),
            PresenceRouter::default(),
            store.clone(),
            Vec::new(),
        );
        service
    };
    let stored = || {
        let mut users: Vec<String> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.user_id.to_string())
            .collect();
        users.sort();
        users
    };
    let service = start(2);
    for i in 0..3 {
        let entry = RemotePresence {
            user_id: format!("@u{i}:peer.test").try_into().unwrap(),
            presence: presenced_engine::Presence::Online,
            last_active_ago: Some(0),
            currently_active: None,
            status_msg: None,
        };
        service.remote_presence(name(PEER), vec![entry]);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    eventually(|| async { stored() == ["@u1:peer.test", "@u2:peer.test"] }).await;
    drop(service);

    let _restarted = start(1);
    assert_eq!(stored(), ["@u2:peer.test"]);
}

/// Never answers until the test opens the gate; counts calls.
struct GatedKeys {
    open: tokio::sync::Semaphore,
    calls: AtomicUsize,
}

impl KeyFetcher for GatedKeys {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Value, FetchError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let _ = self.open.acquire().await;
            Err(FetchError::Unreachable {
                server: server.to_owned(),
                message: "gate".to_owned(),
            })
        })
    }
}

/// A metric sample's value (0 when absent).
fn sample(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A signed request from an origin whose key cannot be fetched is refused
/// (401), and the failure is remembered: the next requests from it are
/// refused without asking again, and `/metrics` counts them.
#[tokio::test]
async fn a_failed_key_lookup_is_not_repeated_at_once() {
    let ghost = Peer::new("ghost.test");
    let (app, keys) = app_knowing(&[], |c| c.enable_metrics = true).await;
    for i in 0..5 {
        let resp = send(
            &app,
            &ghost,
            &format!("t{i}"),
            &transaction("ghost.test", json!([])),
        )
        .await;
        assert_error(&resp, 401, "M_UNAUTHORIZED");
    }
    assert_eq!(keys.calls.load(Ordering::SeqCst), 1);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "presenced_federation_key_lookups_refused_total{reason=\"negative_cache\"}"
        ),
        4,
        "{text}"
    );
}

/// Key look-ups that unauthenticated requests trigger are bounded: with
/// every fetch hanging, requests naming new origins past the bound of
/// concurrent fetches (32) get 401 at once instead of queueing, and those
/// waiting get their 401 when their fetch fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_past_the_bound_are_refused_at_once() {
    let gate = Arc::new(GatedKeys {
        open: tokio::sync::Semaphore::new(0),
        calls: AtomicUsize::new(0),
    });
    let app = spawn_app_with_fetcher(|c| c.enable_metrics = true, gate.clone()).await;
    let app = Arc::new(app);
    let peers: Vec<Arc<Peer>> = (0..40).map(|i| Peer::new(&format!("o{i}.test"))).collect();
    let mut waiting = Vec::new();
    for peer in &peers[..32] {
        let (app, peer) = (app.clone(), peer.clone());
        waiting.push(tokio::spawn(async move {
            let body = transaction(peer.name.as_str(), json!([]));
            send(&app, &peer, "t", &body).await
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gate.calls.load(Ordering::SeqCst) < 32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the 32 fetches did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // All fetch slots are taken: the next origins are refused at once.
    for peer in &peers[32..] {
        let body = transaction(peer.name.as_str(), json!([]));
        let resp = send(&app, peer, "t", &body).await;
        assert_error(&resp, 401, "M_UNAUTHORIZED");
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 32);
    gate.open.add_permits(100);
    for task in waiting {
        assert_error(&task.await.unwrap(), 401, "M_UNAUTHORIZED");
    }
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "presenced_federation_key_lookups_refused_total{reason=\"busy\"}"
        ),
        8,
        "{text}"
    );
}

/// A presence entry naming one of our users, or a user of a server other
/// than the origin, is dropped alone and counted by reason.
#[tokio::test]
async fn entries_for_users_the_origin_does_not_own_are_dropped_and_counted() {
    let peer = Peer::new(PEER);
    let (app, _) = app_knowing(&[&peer], |c| {
        alice_observes(c);
        c.enable_metrics = true;
    })
    .await;
    let alice = app.register("alice").await;
    let push = json!([
        {"user_id": "@alice:test.local", "presence": "unavailable", "status_msg": "spoofed"},
        {"user_id": "@eve:third.test", "presence": "online"},
        {"user_id": "@bob:peer.test", "presence": "online"},
        {"user_id": "@bob:peer.test", "presence": 7},
    ]);
    let body = transaction(PEER, json!([presence_edu(push)]));
    assert_eq!(send(&app, &peer, "mixed", &body).await.0, StatusCode::OK);
    eventually(|| async {
        get_presence(&app, &alice, "@bob:peer.test").await.1["presence"] == "online"
    })
    .await;
    // alice's own presence is untouched, eve is unknown.
    let (_, own) = get_presence(&app, &alice, "@alice:test.local").await;
    assert_ne!(own["status_msg"], "spoofed", "{own}");
    let (_, eve) = get_presence(&app, &alice, "@eve:third.test").await;
    assert_ne!(eve["presence"], "online", "{eve}");
    let text = app.metrics_text().await;
    let refused = |reason: &str| {
        sample(
            &text,
            &format!("presenced_federation_presence_entries_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("local_user"), 1, "{text}");
    assert_eq!(refused("other_server"), 1, "{text}");
    assert_eq!(refused("invalid"), 1, "{text}");
}

/// What a stand-in for Synapse's `/send` received: the bytes and the
/// X-Matrix header, as presenced passed them on.
#[derive(Default)]
struct SynapseSends {
    received: std::sync::Mutex<Vec<(String, axum::body::Bytes)>>,
}

async fn synapse_send(
    axum::extract::State(seen): axum::extract::State<Arc<SynapseSends>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.received.lock().unwrap().push((authorization, body));
    // Not presenced's answer: proof that the sender gets Synapse's.
    axum::Json(json!({"pdus": {"$from_synapse": {}}}))
}

#[tokio::test]
async fn in_companion_mode_a_transaction_is_applied_then_passed_to_synapse_unchanged() {
    if crate::cluster_backend::single_node_only("a stand-in Synapse per server") {
        return;
    }
    let seen = Arc::new(SynapseSends::default());
    let synapse = axum::Router::new()
        .route(
            "/_matrix/federation/v1/send/{txn}",
            axum::routing::put(synapse_send),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let synapse_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, synapse).await });
    let registration_dir = tempfile::tempdir().unwrap();
    let registration = registration_dir.path().join("as.yaml");
    let generated = presenced_server::companion::registration::Registration::generate("http://x");
    std::fs::write(&registration, generated.to_yaml()).unwrap();

    let peer = Peer::new(PEER);
    let (app, _keys) = app_knowing(&[&peer], |c| {
        c.synapse = Some(presenced_server::config::companion::CompanionConfig {
            url: synapse_url,
            appservice_registration: registration,
            admin_token: Some(presenced_server::config::Secret::new("syt_admin")),
            admin_token_path: None,
        });
    })
    .await;
    let remote: ruma_common::OwnedUserId = "@carol:peer.test".try_into().unwrap();
    let body = transaction(
        PEER,
        json!([presence_edu(json!([
            {"user_id": remote, "presence": "online", "currently_active": true}
        ]))]),
    );
    let (status, answer) = send(&app, &peer, "t1", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"pdus": {"$from_synapse": {}}}),
        "Synapse's answer"
    );
    let received = seen.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert!(received[0].0.starts_with("X-Matrix "), "{}", received[0].0);
    assert_eq!(
        serde_json::from_slice::<Value>(&received[0].1).unwrap(),
        body,
        "the transaction as the peer sent it"
    );
    let (state, _) = app.state.presence.state_of(&remote);
    assert_eq!(
        state.presence,
        presenced_engine::Presence::Online,
        "applied here"
    );

    // Forged: signed by a key the peer does not have. Refused here, so
    // nothing is applied and Synapse never sees it.
    let forger = Peer {
        name: PEER.try_into().unwrap(),
        key: ServerSigningKey::generate(),
    };
    let mallory: ruma_common::OwnedUserId = "@mallory:peer.test".try_into().unwrap();
    let forged = transaction(
        PEER,
        json!([presence_edu(
            json!([{"user_id": mallory, "presence": "online"}])
        )]),
    );
    let (status, _) = send(&app, &forger, "t2", &forged).await;
    assert_eq!(status, 401);
    assert_eq!(seen.received.lock().unwrap().len(), 1, "not passed on");
    let (state, _) = app.state.presence.state_of(&mallory);
    assert_eq!(state.presence, presenced_engine::Presence::Offline);
}
