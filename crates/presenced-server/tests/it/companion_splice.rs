//! Companion mode's `/sync` splice against a stand-in for Synapse's
//! `/sync` (the edge presenced does not own): presence that comes first
//! answers at once with Synapse's position kept, and the client's next
//! sync adopts the Synapse request still open instead of starting one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use presenced_engine::{EngineConfig, Presence};
use presenced_router::PresenceRouter;
use presenced_server::companion::splice::{SpliceAnswer, SpliceRequest, SyncSplice};
use presenced_server::companion::upstream::Upstream;
use presenced_server::config::companion::CompanionConfig;
use presenced_server::config::Secret;
use presenced_server::presence::PresenceService;
use presenced_server::store::presence::SqlitePresenceStore;
use presenced_server::util::rate_limit::RateLimiter;
use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Synapse's `/sync`, reduced: an initial sync answers `s1` at once; a
/// sync from `s1` waits for a message (or its timeout) and answers `s2`.
#[derive(Default)]
struct FakeSynapse {
    syncs: AtomicU64,
    message: Notify,
}

async fn fake_sync(
    State(fake): State<Arc<FakeSynapse>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    fake.syncs.fetch_add(1, Ordering::SeqCst);
    let timeout: u64 = query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    match query.get("since").map(String::as_str) {
        None => Json(json!({"next_batch": "s1", "rooms": {"join": {}}})),
        Some(_) => {
            let woken =
                tokio::time::timeout(Duration::from_millis(timeout), fake.message.notified()).await;
            let events = if woken.is_ok() {
                json!([{"type": "m.room.message", "event_id": "$m1", "content": {"body": "hi"}}])
            } else {
                json!([])
            };
            Json(json!({
                "next_batch": "s2",
                "rooms": {"join": {"!room:test": {"timeline": {"events": events}}}},
            }))
        }
    }
}

/// Synapse's `/sync` served by `handler` over `state`, on 127.0.0.1; its URL.
async fn serve_sync<S, H, T>(handler: H, state: Arc<S>) -> String
where
    S: Send + Sync + 'static,
    H: axum::handler::Handler<T, Arc<S>>,
    T: 'static,
{
    let app = Router::new()
        .route("/_matrix/client/v3/sync", get(handler))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A presence driver on a fresh SQLite file (kept in `dir`) with `joined`
/// memberships, and the splice in front of the Synapse at `url`.
fn splice_over(
    url: String,
    dir: &tempfile::TempDir,
    joined: Vec<(OwnedRoomId, OwnedUserId)>,
    limit: RateLimiter,
) -> (PresenceService, SyncSplice) {
    let store = Arc::new(SqlitePresenceStore::open(&dir.path().join("p.db")).unwrap());
    let (presence, _outbound) = PresenceService::start(
        EngineConfig::default(),
        "test".try_into().unwrap(),
        PresenceRouter::default(),
        store,
        joined,
    );
    let upstream = Upstream::new(&CompanionConfig {
        url,
        appservice_registration: "unused.yaml".into(),
        admin_token: Some(Secret::new("unused")),
        admin_token_path: None,
    })
    .unwrap();
    let splice = SyncSplice::new(upstream, presence.clone(), false, limit);
    (presence, splice)
}

/// rc_presence out of the way: these tests are about the splice.
fn generous_limit() -> RateLimiter {
    RateLimiter::with_max_keys(1000.0, 1000.0, 1000)
}

fn ids() -> (OwnedUserId, OwnedUserId, OwnedRoomId) {
    (
        "@alice:test".try_into().unwrap(),
        "@bob:test".try_into().unwrap(),
        "!room:test".try_into().unwrap(),
    )
}

async fn splice_sync(
    splice: &SyncSplice,
    user: &OwnedUserId,
    since: Option<&str>,
    timeout_ms: u64,
) -> Value {
    let device: OwnedDeviceId = "BOBDEV".into();
    let mut query = vec![("timeout".to_owned(), timeout_ms.to_string())];
    if let Some(since) = since {
        query.push(("since".to_owned(), since.to_owned()));
    }
    let answer = splice
        .serve(SpliceRequest {
            user,
            device: &device,
            access_token: "bob-token",
            path: "/_matrix/client/v3/sync",
            query,
            set_presence: Some(Presence::Online),
            forwarded_for: None,
        })
        .await
        .unwrap();
    match answer {
        SpliceAnswer::Spliced(body) => serde_json::from_slice(&body).unwrap(),
        SpliceAnswer::Synapse(other) => panic!("Synapse refused: {other:?}"),
    }
}

fn presence_of(body: &Value, user: &str) -> Option<String> {
    body["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == user)
        .map(|e| {
            e["content"]["presence"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_first_keeps_synapses_position_and_the_next_sync_adopts_its_request() {
    let fake = Arc::new(FakeSynapse::default());
    let url = serve_sync(fake_sync, fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, room) = ids();
    let joined = vec![(room.clone(), alice.clone()), (room, bob.clone())];
    let (presence, splice) = splice_over(url, &dir, joined, generous_limit());

    // Initial sync: Synapse's answer, with presenced's half of the token.
    let first = splice_sync(&splice, &bob, None, 0).await;
    let next = first["next_batch"].as_str().unwrap().to_owned();
    assert!(next.starts_with("s1-p"), "{next}");
    assert_eq!(fake.syncs.load(Ordering::SeqCst), 1);

    // A long-poll that presence ends first: Synapse's half stays s1.
    let waiting = {
        let (splice, bob, next) = (&splice, bob.clone(), next.clone());
        async move { splice_sync(splice, &bob, Some(&next), 20_000).await }
    };
    let alice_online = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        presence
            .set_presence(&alice, None, Presence::Online, Some("here"))
            .await
            .unwrap();
    };
    let (early, ()) = tokio::join!(waiting, alice_online);
    assert_eq!(
        presence_of(&early, "@alice:test").as_deref(),
        Some("online")
    );
    let after_presence = early["next_batch"].as_str().unwrap().to_owned();
    assert!(after_presence.starts_with("s1-p"), "{after_presence}");
    assert_ne!(after_presence, next, "the presence half moved");
    assert_eq!(
        early["rooms"],
        json!({"join": {}, "invite": {}, "leave": {}}),
        "no room event before Synapse answers"
    );
    assert_eq!(fake.syncs.load(Ordering::SeqCst), 2);

    // The next sync, from the same Synapse position, adopts the open
    // request: the message it brings arrives, and Synapse saw no new /sync.
    let next_sync = {
        let (splice, bob, since) = (&splice, bob.clone(), after_presence.clone());
        async move { splice_sync(splice, &bob, Some(&since), 20_000).await }
    };
    let message = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fake.message.notify_waiters();
    };
    let (with_message, ()) = tokio::join!(next_sync, message);
    assert_eq!(
        with_message["rooms"]["join"]["!room:test"]["timeline"]["events"][0]["event_id"],
        "$m1"
    );
    let last = with_message["next_batch"].as_str().unwrap();
    assert!(last.starts_with("s2-p"), "{last}");
    assert_eq!(
        fake.syncs.load(Ordering::SeqCst),
        2,
        "the parked request was adopted"
    );
    assert_eq!(splice.stats.adopted.load(Ordering::SeqCst), 1);
    assert_eq!(splice.stats.early_answers.load(Ordering::SeqCst), 1);
}

/// Synapse's `/sync` over a growing list of messages: `s{n}` means "the
/// first n seen"; a sync from `s{n}` answers at once when there are more,
/// else waits for one (or its timeout).
#[derive(Default)]
struct MessageStream {
    messages: std::sync::Mutex<Vec<String>>,
    posted: Notify,
    syncs: AtomicU64,
}

async fn stream_sync(
    State(stream): State<Arc<MessageStream>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    stream.syncs.fetch_add(1, Ordering::SeqCst);
    let timeout: u64 = query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let from: usize = match query.get("since") {
        None => {
            let len = stream.messages.lock().unwrap().len();
            return Json(json!({"next_batch": format!("s{len}")}));
        }
        Some(since) => since.trim_start_matches('s').parse().unwrap(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    loop {
        let posted = stream.posted.notified();
        tokio::pin!(posted);
        posted.as_mut().enable();
        let messages = stream.messages.lock().unwrap().clone();
        if messages.len() > from || tokio::time::Instant::now() >= deadline {
            let events: Vec<Value> = messages[from.min(messages.len())..]
                .iter()
                .map(|id| json!({"type": "m.room.message", "event_id": id}))
                .collect();
            return Json(json!({
                "next_batch": format!("s{}", messages.len()),
                "rooms": {"join": {"!room:test": {"timeline": {"events": events}}}},
            }));
        }
        let _ = tokio::time::timeout_at(deadline, posted).await;
    }
}

/// The interleaving property: a client following `next_batch` while
/// presence changes and messages alternate at random sees every message
/// exactly once and in order, and ends with the last presence state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_messages_and_presence_arrive_once_in_order() {
    let rounds: usize = std::env::var("PRESENCED_TEST_SPLICE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let stream = Arc::new(MessageStream::default());
    let url = serve_sync(stream_sync, stream.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, room) = ids();
    let joined = vec![(room.clone(), alice.clone()), (room, bob.clone())];
    let (presence, splice) = splice_over(url, &dir, joined, generous_limit());
    let splice = Arc::new(splice);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (splice, bob, done) = (splice.clone(), bob.clone(), done.clone());
        tokio::spawn(async move {
            let first = splice_sync(&splice, &bob, None, 0).await;
            let mut since = first["next_batch"].as_str().unwrap().to_owned();
            let (mut seen, mut last_status) = (Vec::<String>::new(), None::<String>);
            let mut quiet = 0;
            loop {
                let body = splice_sync(&splice, &bob, Some(&since), 300).await;
                since = body["next_batch"].as_str().unwrap().to_owned();
                let events = body["rooms"]["join"]["!room:test"]["timeline"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut news = !events.is_empty();
                for event in events {
                    seen.push(event["event_id"].as_str().unwrap().to_owned());
                }
                if let Some(events) = body["presence"]["events"].as_array() {
                    for event in events.iter().filter(|e| e["sender"] == "@alice:test") {
                        news = true;
                        last_status = event["content"]["status_msg"].as_str().map(str::to_owned);
                    }
                }
                // After the writer is done: two quiet syncs in a row end it.
                quiet = if news { 0 } else { quiet + 1 };
                if done.load(Ordering::SeqCst) && quiet >= 2 {
                    return (seen, last_status);
                }
            }
        })
    };

    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut posted, mut last_status) = (Vec::new(), None);
    for round in 0..rounds {
        if next_random() % 2 == 0 {
            let id = format!("$m{round}");
            stream.messages.lock().unwrap().push(id.clone());
            stream.posted.notify_waiters();
            posted.push(id);
        } else {
            let status = format!("round {round}");
            let state = [Presence::Online, Presence::Unavailable][(next_random() % 2) as usize];
            presence
                .set_presence(&alice, None, state, Some(&status))
                .await
                .unwrap();
            last_status = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(next_random() % 15)).await;
    }
    done.store(true, Ordering::SeqCst);
    let (seen, seen_status) = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the client caught up")
        .unwrap();
    assert_eq!(seen, posted, "every message once, in order");
    assert_eq!(seen_status, last_status, "the last presence state");
    let (early, syncs) = (
        splice.stats.early_answers.load(Ordering::SeqCst),
        stream.syncs.load(Ordering::SeqCst),
    );
    eprintln!(
        "{rounds} rounds: {} messages, {early} presence-first answers, {syncs} Synapse syncs, {} adopted",
        posted.len(),
        splice.stats.adopted.load(Ordering::SeqCst)
    );
}

/// rc_presence applies to spliced syncs as to standalone's: a limited
/// sync is answered, but its `set_presence` does not apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_spliced_sync_is_answered_without_its_set_presence() {
    let fake = Arc::new(FakeSynapse::default());
    let url = serve_sync(fake_sync, fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, bob, _) = ids();
    // One presence-affecting sync, then none for a long while.
    let limit = RateLimiter::with_max_keys(0.001, 1.0, 1000);
    let (presence, splice) = splice_over(url, &dir, Vec::new(), limit);
    let device: OwnedDeviceId = "BOBDEV".into();
    for asked in [Presence::Unavailable, Presence::Online] {
        let answer = splice
            .serve(SpliceRequest {
                user: &bob,
                device: &device,
                access_token: "bob-token",
                path: "/_matrix/client/v3/sync",
                query: Vec::new(),
                set_presence: Some(asked),
                forwarded_for: None,
            })
            .await
            .unwrap();
        assert!(matches!(answer, SpliceAnswer::Spliced(_)), "answered");
    }
    let (state, _) = presence.state_of(&bob);
    assert_eq!(
        state.presence,
        Presence::Unavailable,
        "the limited sync's online did not apply"
    );
}
