//! Companion mode's front door: presenced in front of a Synapse, here a
//! small fake one (an axum server on a loopback port, a mock only at the
//! edge we do not own). Tokens are Synapse's to answer for, presence is
//! presenced's, and everything else is forwarded unchanged, bodies
//! streamed both ways.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use presenced_server::companion::registration::Registration;
use presenced_server::config::companion::CompanionConfig;
use presenced_server::config::Secret;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use presenced_server::federation::keys::NoKeyFetcher;

use crate::helpers::{serve, spawn_single_node_with, sqlite_only, TestApp};

/// Synapse's 401 for a dead token, byte for byte as the test expects it
/// back (key order and spacing included).
const UNKNOWN_TOKEN_BODY: &str =
    r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":true}"#;

/// How much a streaming test moves each way.
const BIG: usize = 100 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
/// How far ahead of the other side a streaming test's producer may run
/// before it waits: a proxy that held the whole body would never let the
/// other side see this much, and the test would stop.
const AHEAD: usize = 8 * CHUNK;

/// BIG bytes of `byte`, a CHUNK at a time, never more than AHEAD in front
/// of what the other side reports it has (`seen`): a proxy that held the
/// whole body before passing it on would stall this, and the assertion
/// says which side (`who`) got nothing of which body (`what`).
fn paced(
    seen: watch::Receiver<usize>,
    byte: u8,
    who: &'static str,
    what: &'static str,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold((0usize, seen), move |(sent, mut seen)| async move {
        if sent >= BIG {
            return None;
        }
        let waited = tokio::time::timeout(
            Duration::from_secs(20),
            seen.wait_for(|&got| got + AHEAD >= sent),
        )
        .await
        .is_ok_and(|got| got.is_ok());
        assert!(
            waited,
            "{who} nothing of the first {sent} bytes: {what} is not streamed"
        );
        Some((Ok(Bytes::from(vec![byte; CHUNK])), (sent + CHUNK, seen)))
    })
}

/// The fake Synapse's state.
#[derive(Default)]
struct Fake {
    /// Live tokens: token → (user, device).
    tokens: Mutex<HashMap<String, (String, String)>>,
    /// `whoami` calls per token.
    whoami_calls: Mutex<HashMap<String, usize>>,
    /// Upload bytes received so far.
    uploaded: AtomicUsize,
    /// Download bytes the client has read so far (the test sets it).
    downloaded: Mutex<Option<watch::Receiver<usize>>>,
    /// Upload progress, for the client to wait on.
    upload_progress: Mutex<Option<watch::Sender<usize>>>,
    /// `/sync` requests received.
    syncs: AtomicUsize,
    /// Admin-API user lookups received.
    admin_lookups: AtomicUsize,
}

impl Fake {
    fn whoami_calls(&self, token: &str) -> usize {
        (self.whoami_calls.lock().unwrap())
            .get(token)
            .copied()
            .unwrap_or(0)
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn unknown_token() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "application/json")],
        UNKNOWN_TOKEN_BODY,
    )
        .into_response()
}

async fn whoami(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errcode": "M_MISSING_TOKEN", "error": "Missing access token."})),
        )
            .into_response();
    };
    *fake
        .whoami_calls
        .lock()
        .unwrap()
        .entry(token.clone())
        .or_default() += 1;
    match fake.tokens.lock().unwrap().get(&token) {
        Some((user, device)) => {
            Json(json!({"user_id": user, "device_id": device, "is_guest": false})).into_response()
        }
        None => unknown_token(),
    }
}

/// Synapse's `/sync`, reduced: an initial sync answers `s1` at once, a
/// later one waits out its timeout and answers `s2` (no room moves).
async fn sync(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if bearer(&headers).is_none_or(|t| !fake.tokens.lock().unwrap().contains_key(&t)) {
        return unknown_token();
    }
    fake.syncs.fetch_add(1, Ordering::SeqCst);
    if query.contains_key("since") {
        let timeout: u64 = query
            .get("timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(timeout)).await;
        return Json(json!({"next_batch": "s2", "rooms": {"join": {}}})).into_response();
    }
    Json(json!({"next_batch": "s1", "rooms": {"join": {}}, "account_data": {"events": []}}))
        .into_response()
}

async fn logout(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    let token = bearer(&headers).unwrap_or_default();
    match fake.tokens.lock().unwrap().remove(&token) {
        Some(_) => Json(json!({})).into_response(),
        None => unknown_token(),
    }
}

async fn admin_user(
    State(fake): State<Arc<Fake>>,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Response {
    fake.admin_lookups.fetch_add(1, Ordering::SeqCst);
    if user == "@bob:test.local" {
        Json(json!({"name": user, "deactivated": false})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"errcode": "M_NOT_FOUND", "error": "User not found"})),
        )
            .into_response()
    }
}

/// Reads an upload chunk by chunk, never keeping it, and reports progress.
async fn upload(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let progress = fake.upload_progress.lock().unwrap().take();
    let mut body = request.into_body().into_data_stream();
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("the forwarded upload breaks off").len();
        fake.uploaded.store(total, Ordering::SeqCst);
        if let Some(progress) = &progress {
            let _ = progress.send(total);
        }
    }
    Json(json!({"content_uri": "mxc://test.local/x", "received": total})).into_response()
}

/// A download that never runs more than [`AHEAD`] in front of what the
/// client has read.
async fn download(State(fake): State<Arc<Fake>>) -> Response {
    let read = fake
        .downloaded
        .lock()
        .unwrap()
        .take()
        .expect("no reader set");
    Body::from_stream(paced(read, b'd', "the client read", "the answer")).into_response()
}

/// Everything else: what arrived, as JSON, with a status and a header of
/// its own so the test sees those come back too.
async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap();
    let headers: HashMap<String, Vec<String>> =
        parts.headers.keys().fold(HashMap::new(), |mut map, name| {
            let values = parts.headers.get_all(name).iter();
            map.insert(
                name.to_string(),
                values
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect(),
            );
            map
        });
    (
        StatusCode::ACCEPTED,
        [("x-fake-synapse", "yes")],
        Json(json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        })),
    )
        .into_response()
}

/// The fake Synapse's state, with its users' tokens.
fn fake_state() -> Arc<Fake> {
    let fake = Arc::new(Fake::default());
    for (token, user, device) in [
        ("tok_alice", "@alice:test.local", "ADEV"),
        ("tok_alice2", "@alice:test.local", "ADEV2"),
        ("tok_bob", "@bob:test.local", "BDEV"),
    ] {
        fake.tokens
            .lock()
            .unwrap()
            .insert(token.to_owned(), (user.to_owned(), device.to_owned()));
    }
    fake
}

/// The fake Synapse's routes over `fake`.
fn fake_routes(fake: Arc<Fake>) -> Router {
    Router::new()
        .route("/_matrix/client/v3/account/whoami", get(whoami))
        .route("/_matrix/client/v3/logout", post(logout))
        .route("/_matrix/client/v3/sync", get(sync))
        .route("/_synapse/admin/v2/users/{user}", get(admin_user))
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/client/v1/media/download/big", get(download))
        .fallback(echo)
        .with_state(fake)
}

/// Starts the fake Synapse; its base URL and state.
async fn fake_synapse() -> (String, Arc<Fake>) {
    let fake = fake_state();
    let app = fake_routes(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

/// A fake Synapse the test can take down, as an outage would: stopped,
/// it has closed its port and every connection presenced kept open to it.
struct StoppableSynapse {
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl StoppableSynapse {
    /// Starts a fresh fake Synapse on `addr` (`127.0.0.1:0` for any
    /// port; a stopped one's address to bring it back where presenced
    /// expects it); its base URL, state and handle.
    async fn start(addr: &str) -> (String, Arc<Fake>, Self) {
        let fake = fake_state();
        let app = fake_routes(fake.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (base, fake, Self { stop, served })
    }

    /// Closes the port and waits until no connection is left (idle
    /// keep-alive ones included, so presenced cannot reach the old
    /// server through its connection pool).
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("the fake Synapse did not stop: a connection stayed open")
            .unwrap();
    }
}

/// presenced in companion mode in front of `synapse_url`; the directory
/// holding its registration file goes with it. `None` in a cluster run:
/// these tests count Synapse's `whoami` calls, and each cluster node keeps
/// its own token cache.
async fn presenced_in_front_of(synapse_url: &str) -> Option<(TestApp, tempfile::TempDir)> {
    presenced_in_front_of_with(synapse_url, |_| {}).await
}

/// [`presenced_in_front_of`] with `tweak` applied to the config last.
async fn presenced_in_front_of_with(
    synapse_url: &str,
    tweak: impl FnOnce(&mut presenced_server::config::Config),
) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("presenced-appservice.yaml");
    std::fs::write(
        &registration,
        Registration::generate("http://127.0.0.1:1").to_yaml(),
    )
    .unwrap();
    let url = synapse_url.to_owned();
    let why = "companion tests count whoami calls per process";
    let app = spawn_single_node_with(why, move |c| {
        // Presence changes follow each other faster than rc_presence's
        // default allows; its limits are standalone's, tested there.
        c.rc_presence.per_user.per_second = 1000.0;
        c.rc_presence.per_user.burst_count = 1000.0;
        c.synapse = Some(CompanionConfig {
            url,
            appservice_registration: registration,
            admin_token: Some(Secret::new("syt_admin")),
            admin_token_path: None,
        });
        tweak(c);
    })
    .await?;
    Some((app, dir))
}

const ALICE_STATUS: &str = "/_matrix/client/v3/presence/@alice:test.local/status";

#[tokio::test]
async fn presence_is_answered_here_for_a_user_synapse_vouches_for() {
    let (synapse, fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let (status, body) = app
        .put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "online", "status_msg": "in front"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(ALICE_STATUS, Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "in front");
    // Synapse was asked once; the second request used the cached answer.
    assert_eq!(fake.whoami_calls("tok_alice"), 1);
    // Someone else's: Synapse's admin API says who exists.
    let (status, _) = app
        .get(
            "/_matrix/client/v3/presence/@nobody:test.local/status",
            Some("tok_alice"),
        )
        .await;
    assert_eq!(status, 404);
    // Another user may not set alice's presence.
    let (status, body) = app
        .put(
            ALICE_STATUS,
            Some("tok_bob"),
            json!({"presence": "offline"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn an_account_synapse_vouched_for_is_looked_up_again_only_after_a_change_to_it() {
    let (synapse, fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let bob_status = "/_matrix/client/v3/presence/@bob:test.local/status";
    let lookups = || fake.admin_lookups.load(Ordering::SeqCst);
    // bob shares no room with alice (403), but the account question comes
    // first and Synapse answers it once.
    for _ in 0..3 {
        let (status, body) = app.get(bob_status, Some("tok_alice")).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(lookups(), 1);
    // A made-up user is asked about every time (no negative cache).
    for _ in 0..2 {
        let (status, _) = app
            .get(
                "/_matrix/client/v3/presence/@nobody:test.local/status",
                Some("tok_alice"),
            )
            .await;
        assert_eq!(status, 404);
    }
    assert_eq!(lookups(), 3);
    // An admin deactivating bob through presenced: the next GET asks again.
    let (status, _) = app
        .post(
            "/_synapse/admin/v1/deactivate/@bob:test.local",
            Some("tok_alice"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = app.get(bob_status, Some("tok_alice")).await;
    assert_eq!(status, 403);
    assert_eq!(lookups(), 4);
}

#[tokio::test]
async fn synapse_refusing_a_token_reaches_the_client_verbatim() {
    let (synapse, _fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let answer = app
        .client
        .get(format!("{}{ALICE_STATUS}", app.base))
        .bearer_auth("tok_dead")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.text().await.unwrap(), UNKNOWN_TOKEN_BODY);
    // No token at all is presenced's own refusal, as in standalone mode.
    let (status, body) = app.get(ALICE_STATUS, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_logout_through_presenced_drops_the_cached_token() {
    let (synapse, fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let (status, _) = app
        .put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "online"}),
        )
        .await;
    assert_eq!(status, 200);
    // (GETs from here: PUTs are rate-limited per user.)
    for token in ["tok_alice", "tok_alice2"] {
        let (status, _) = app.get(ALICE_STATUS, Some(token)).await;
        assert_eq!(status, 200);
        assert_eq!(fake.whoami_calls(token), 1);
    }
    // The logout is forwarded (Synapse ends the token) and the cache
    // forgets it: the next request asks Synapse again, and is refused.
    let (status, _) = app
        .post("/_matrix/client/v3/logout", Some("tok_alice"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.get(ALICE_STATUS, Some("tok_alice")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    assert_eq!(fake.whoami_calls("tok_alice"), 2);
    // The user's other token is still cached.
    let (status, _) = app.get(ALICE_STATUS, Some("tok_alice2")).await;
    assert_eq!(status, 200);
    assert_eq!(fake.whoami_calls("tok_alice2"), 1);
}

#[tokio::test]
async fn everything_else_is_forwarded_unchanged_with_x_forwarded_for() {
    let (synapse, _fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let answer = app
        .client
        .put(format!(
            "{}/_matrix/client/v3/rooms/!r:test.local/send/m.room.message/t1?ts=5&a=%20b",
            app.base
        ))
        .bearer_auth("tok_alice")
        .header("x-custom", "kept")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-per-hop")
        .header("x-per-hop", "dropped")
        .body(r#"{"msgtype":"m.text","body":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-fake-synapse"], "yes");
    let seen: Value = answer.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(
        seen["path"],
        "/_matrix/client/v3/rooms/!r:test.local/send/m.room.message/t1"
    );
    assert_eq!(seen["query"], "ts=5&a=%20b");
    assert_eq!(seen["body"], r#"{"msgtype":"m.text","body":"hello"}"#);
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], json!(["Bearer tok_alice"]));
    assert_eq!(headers["x-custom"], json!(["kept"]));
    assert_eq!(
        headers["x-forwarded-for"],
        json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(headers["content-length"], json!(["35"]));
    assert!(headers.get("x-per-hop").is_none(), "{headers}");
    // Paths presenced knows in standalone mode go to Synapse too.
    let (status, seen) = app
        .get("/_matrix/client/v3/account/whoami?x=1", Some("tok_bob"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(seen["user_id"], "@bob:test.local");
    let (status, seen) = app.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(status, 202);
    assert_eq!(seen["path"], "/_synapse/admin/v1/server_version");
    // presenced's own endpoints stay presenced's.
    let (status, _) = app.get("/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_100_mb_upload_and_download_stream_through() {
    let (synapse, fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };

    // Upload: the client never runs more than AHEAD in front of what the
    // fake Synapse has received, so a proxy that read the whole body
    // before forwarding would stall here.
    let (progress_tx, progress_rx) = watch::channel(0usize);
    *fake.upload_progress.lock().unwrap() = Some(progress_tx);
    let body = paced(progress_rx, b'u', "Synapse received", "the upload");
    let answer = app
        .client
        .post(format!("{}/_matrix/media/v3/upload", app.base))
        .bearer_auth("tok_alice")
        .header("content-length", BIG.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["received"], BIG);

    // Download: the fake Synapse never runs more than AHEAD in front of
    // what the client has read.
    let (read_tx, read_rx) = watch::channel(0usize);
    *fake.downloaded.lock().unwrap() = Some(read_rx);
    let answer = app
        .client
        .get(format!("{}/_matrix/client/v1/media/download/big", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut stream = answer.bytes_stream();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        read += chunk.unwrap().len();
        let _ = read_tx.send(read);
    }
    assert_eq!(read, BIG);
}

#[tokio::test]
async fn an_unreachable_synapse_is_a_502_that_says_so() {
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let synapse = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let (status, body) = app
        .get("/_matrix/client/v3/joined_rooms", Some("tok"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("Synapse at {synapse} is unreachable")),
        "{error}"
    );
    // A token check that cannot reach Synapse says the same.
    let (status, body) = app.get(ALICE_STATUS, Some("tok_alice")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
}

/// Issue 27, item 8: Synapse going down mid-run. Presence for a token
/// presenced already checked keeps working (the cached `whoami` answer is
/// all it needs); what needs Synapse (a `/sync`, an unchecked token) is a
/// 502 that applies nothing; an acknowledged change survives both
/// Synapse's return and a presenced restart.
#[tokio::test]
async fn presence_outlives_a_synapse_outage_and_nothing_acknowledged_is_lost() {
    let (synapse, fake, running) = StoppableSynapse::start("127.0.0.1:0").await;
    // SQLite: the restart at the end opens a second server on the same
    // database inside this process, which PostgreSQL's one-writer lock
    // refuses (crash.rs restarts real processes on both backends).
    let Some((app, _dir)) = presenced_in_front_of_with(&synapse, sqlite_only).await else {
        return;
    };
    // While Synapse is up: alice's token is checked (and cached), and her
    // client has a sync position.
    let (status, body) = app
        .put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "online"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/_matrix/client/v3/sync", Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(fake.whoami_calls("tok_alice"), 1);

    running.stop().await;

    // Presence with the cached token: answered here, as if nothing
    // happened.
    let (status, body) = app
        .put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "unavailable", "status_msg": "while Synapse was down"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(ALICE_STATUS, Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "unavailable");
    assert_eq!(body["status_msg"], "while Synapse was down");
    // A /sync (one that leaves presence as it is, so the checks below see
    // the PUT's state): presence news is answered without Synapse, its
    // half of the token unchanged, so no room event is skipped...
    let own = |body: &Value| {
        (body["presence"]["events"].as_array())
            .and_then(|e| e.iter().find(|e| e["sender"] == "@alice:test.local"))
            .map(|e| e["content"].clone())
    };
    let sync_since = |since: &str| {
        format!("/_matrix/client/v3/sync?since={since}&timeout=0&set_presence=offline")
    };
    let (status, body) = app.get(&sync_since(&since), Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    let content = own(&body).unwrap_or_else(|| panic!("the outage change is missing: {body}"));
    assert_eq!(content["presence"], "unavailable");
    assert_eq!(content["status_msg"], "while Synapse was down");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    assert!(since.starts_with("s1-p"), "Synapse's half kept: {since}");
    // ... and with no presence news it needs Synapse: a 502 that says why,
    // at once even for a long-poll (a client's retry loop, not a hang).
    let started = Instant::now();
    let long_poll = sync_since(&since).replace("timeout=0", "timeout=20000");
    let (status, body) = app.get(&long_poll, Some("tok_alice")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = app.get(&sync_since(&since), Some("tok_alice")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("Synapse at {synapse} is unreachable")),
        "{error}"
    );
    // A token presenced has not checked yet cannot be checked: a 502,
    // and bob's presence is not touched.
    let bob_status = "/_matrix/client/v3/presence/@bob:test.local/status";
    let (status, body) = app
        .put(
            bob_status,
            Some("tok_bob"),
            json!({"presence": "online", "status_msg": "never applied"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    let bob: ruma_common::OwnedUserId = "@bob:test.local".try_into().unwrap();
    let (bob_now, _) = app.state.presence.state_of(&bob);
    assert_eq!(bob_now.presence.as_str(), "offline");
    assert_eq!(bob_now.status_msg, None);

    // Synapse is back where it was: the same sync position continues
    // where the 502 left it.
    let address = synapse.strip_prefix("http://").unwrap();
    let (_, _fake_again, _running_again) = StoppableSynapse::start(address).await;
    let (status, body) = app.get(&sync_since(&since), Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["next_batch"].as_str().unwrap().starts_with("s2-p"),
        "{body}"
    );
    assert_eq!(own(&body), None, "nothing new, nothing repeated: {body}");

    // presenced restarted on its database (as after kill -9: the first
    // one is never shut down): the change acknowledged during the outage
    // is there, and its front door serves it.
    let config = (*app.state.config).clone();
    let (base, restarted, _feeds) = serve(config, Arc::new(NoKeyFetcher)).await;
    let alice_id: ruma_common::OwnedUserId = "@alice:test.local".try_into().unwrap();
    let (after, _) = restarted.presence.state_of(&alice_id);
    assert_eq!(after.presence.as_str(), "unavailable");
    assert_eq!(after.status_msg.as_deref(), Some("while Synapse was down"));
    let answer: Value = app
        .client
        .get(format!("{base}{ALICE_STATUS}"))
        .bearer_auth("tok_alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["presence"], "unavailable", "{answer}");
    assert_eq!(answer["status_msg"], "while Synapse was down");
}

#[tokio::test]
async fn a_sync_through_presenced_is_synapses_answer_with_presence_spliced_in() {
    let (synapse, fake) = fake_synapse().await;
    let Some((app, _dir)) = presenced_in_front_of(&synapse).await else {
        return;
    };
    let (status, body) = app
        .put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "online"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Initial sync: Synapse's sections, presenced's presence, both halves.
    let (status, body) = app.get("/_matrix/client/v3/sync", Some("tok_alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["account_data"],
        json!({"events": []}),
        "Synapse's part"
    );
    let since = body["next_batch"].as_str().unwrap().to_owned();
    assert!(since.starts_with("s1-p"), "{since}");
    let own = |body: &Value| {
        body["presence"]["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["sender"] == "@alice:test.local"))
            .map(|e| e["content"]["presence"].clone())
    };
    assert_eq!(own(&body), Some(json!("online")));
    // A long-poll that a presence change ends long before Synapse's
    // timeout: Synapse's half of the token stays.
    let started = Instant::now();
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=20000");
    let (answer, put) = tokio::join!(app.get(&path, Some("tok_alice")), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.put(
            ALICE_STATUS,
            Some("tok_alice"),
            json!({"presence": "unavailable"}),
        )
        .await
    });
    assert_eq!(put.0, 200);
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(own(&body), Some(json!("unavailable")));
    assert!(body["next_batch"].as_str().unwrap().starts_with("s1-p"));
    assert_eq!(fake.syncs.load(Ordering::SeqCst), 2);
    // A token whose presence half is not ours: refused, not forwarded.
    let (status, body) = app
        .get("/_matrix/client/v3/sync?since=s1-pbogus", Some("tok_alice"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}
