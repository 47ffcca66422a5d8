//! Cluster mode with the real binary: two `presenced` nodes on one fresh
//! PostgreSQL database and a real `nats-server` (`allow_unreplicated`).
//! A PUT on one node is read back on the other; a node's `kill -9` moves
//! its partitions to the survivor, which keeps acknowledging; NATS gone
//! past the lease fails `/health` and answers PUTs 503 with Retry-After.
//! Skipped with a message without PostgreSQL or nats-server (failures under
//! `PRESENCED_REQUIRE_POSTGRES=1` / `PRESENCED_REQUIRE_NATS=1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use presenced_cluster::partition::preference_order;
use presenced_cluster::testing::NatsServers;
use presenced_cluster::PARTITIONS;
use presenced_server::presence::cluster::link::destination_partition;
use presenced_server::store::testing::FreshPgDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Node {
    child: Child,
    base: String,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// user0's presence is routed to a user on each of this many remote
/// servers, `127.0.0.1:1` to `127.0.0.1:NOWHERES`: loopback ports where
/// nothing listens, so each delivery fails at once and, with an hour's
/// retry interval, is tried once per sending node.
const NOWHERES: u16 = 8;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node's config: the cluster's shared secret and signing key (every
/// node is the same homeserver), its own port and data directory.
fn node_config(dir: &Path, name: &str, port: u16, db: &FreshPgDatabase, nats: &str) -> PathBuf {
    node_config_with(dir, name, port, db, nats, "")
}

/// [`node_config`] with more YAML lines.
fn node_config_with(
    dir: &Path,
    name: &str,
    port: u16,
    db: &FreshPgDatabase,
    nats: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        &path,
        format!(
            "server_name: test.local\n\
             listeners: [{{port: {port}, bind_addresses: [127.0.0.1]}}]\n\
             data_dir: {data}\n\
             signing_key_path: {key}\n\
             registration_shared_secret: s\n\
             enable_registration: true\n\
             enable_registration_without_verification: true\n\
             password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}\n\
             rc_registration: {{per_second: 0}}\n\
             rc_presence: {{per_user: {{per_second: 1000, burst_count: 1000}}}}\n\
             log: {{level: warn}}\n\
             enable_metrics: true\n\
             federation: {{destination_min_retry_interval: 1h, destination_max_retry_interval: 1h}}\n\
             modules: [{{module: presenced.routers.StaticRoutes, config: {{routes: [{routes}]}}}}]\n\
             database: {{url: \"{url}\"}}\n\
             cluster:\n  node_name: {name}\n  nats_servers: [\"{nats}\"]\n  allow_unreplicated: true\n\
             {extra}",
            data = data.display(),
            key = dir.join("test.local.signing.key").display(),
            url = db.url(),
            routes = (1..=NOWHERES)
                .map(|port| format!("{{receiver: \"@bob:127.0.0.1:{port}\", senders: [\"@user0:test.local\"]}}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    )
    .unwrap();
    path
}

fn start_node(config: &Path, port: u16) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    }
}

async fn wait_healthy(client: &reqwest::Client, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = client
            .get(format!("{}/health", node.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {} never became healthy",
            node.port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value, retry_after)
}

/// Registers `localpart` through `node`; returns (user ID, access token).
async fn register(client: &reqwest::Client, node: &Node, localpart: &str) -> (String, String) {
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/register", node.base),
        None,
        Some(json!({
            "username": localpart,
            "password": "correct horse battery",
            "auth": {"type": "m.login.dummy"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["user_id"].as_str().unwrap().to_owned(),
        body["access_token"].as_str().unwrap().to_owned(),
    )
}

fn presence_url(node: &Node, user: &str) -> String {
    format!(
        "{}/_matrix/client/v3/presence/{}/status",
        node.base,
        user.replace('@', "%40").replace(':', "%3A")
    )
}

async fn put_presence(
    client: &reqwest::Client,
    node: &Node,
    user: &(String, String),
    presence: &str,
    status_msg: &str,
) -> (StatusCode, Value, Option<String>) {
    call(
        client,
        reqwest::Method::PUT,
        presence_url(node, &user.0),
        Some(&user.1),
        Some(json!({"presence": presence, "status_msg": status_msg})),
    )
    .await
}

async fn get_presence(client: &reqwest::Client, node: &Node, user: &(String, String)) -> Value {
    let (status, body, _) = call(
        client,
        reqwest::Method::GET,
        presence_url(node, &user.0),
        Some(&user.1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until `node` shows `user` with this status message.
async fn eventually_shows(
    client: &reqwest::Client,
    node: &Node,
    user: &(String, String),
    status_msg: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let body = get_presence(client, node, user).await;
        if body["status_msg"] == status_msg {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} still shows {body} instead of {status_msg:?}",
            node.port
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_presence_survive_a_kill_and_report_a_lost_bus() {
    // It makes its own PostgreSQL database: once per test run is enough.
    if std::env::var("PRESENCED_TEST_BACKEND").as_deref() == Ok("postgres") {
        return;
    }
    let Some(db) = FreshPgDatabase::create("cluster_two_nodes") else {
        return;
    };
    let Some(mut nats) = NatsServers::start(1, "cluster mode with presenced nodes") else {
        return;
    };
    let nats_url = nats.urls()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let config_a = node_config(dir.path(), "a", pa, &db, &nats_url);
    let config_b = node_config(dir.path(), "b", pb, &db, &nats_url);
    // a alone takes every partition; b, started later, gets those it is
    // preferred for (a hands them over), so partitions and federation
    // shards end up split between the two.
    let (a, b) = start_a_then_b(&client, (&config_a, pa), (&config_b, pb)).await;

    // Accounts live in PostgreSQL: registered on one node, usable on both.
    let users: Vec<(String, String)> = {
        let mut users = Vec::new();
        for i in 0..8 {
            users.push(register(&client, &a, &format!("user{i}")).await);
        }
        users
    };

    // Partitions are taken within a few seconds of start; a PUT before
    // that is answered 503 (no owner yet), so the first round retries.
    let started = Instant::now();
    for user in &users {
        loop {
            let (status, body, retry_after) =
                put_presence(&client, &a, user, "online", "first").await;
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no owner took the partitions"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Read-your-writes on the node that answered.
        let mine = get_presence(&client, &a, user).await;
        assert_eq!(mine["presence"], "online");
        assert_eq!(mine["status_msg"], "first");
    }
    // The other node learns every acknowledged write from the log.
    for user in &users {
        eventually_shows(&client, &b, user, "first", Duration::from_secs(5)).await;
    }
    // And writes through it, whichever node owns the user's partition.
    for user in &users {
        let (status, body, _) = put_presence(&client, &b, user, "unavailable", "second").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen = get_presence(&client, &b, user).await;
        assert_eq!(seen["presence"], "unavailable");
        assert_eq!(seen["status_msg"], "second");
        eventually_shows(&client, &a, user, "second", Duration::from_secs(5)).await;
    }

    let shards_of_a = federation_is_sharded_by_destination(&client, &a, &b).await;

    let room = rooms_span_the_nodes(&client, &a, &b, &users).await;
    sync_tokens_span_the_nodes(&client, &a, &b, &users, &room).await;
    logout_ends_the_token_on_every_node(&client, &a, &b, &users[7]).await;
    deactivation_reaches_every_node(&client, &a, &b, &users[1], &users[2]).await;

    // kill -9 of node a: b takes a's partitions once their leases run out
    // (6 s) and acknowledges every user's PUT again.
    drop(a);
    let killed = Instant::now();
    // users[2] was deactivated, users[7] logged out.
    let users: Vec<_> = [0, 1, 3, 4, 5, 6]
        .iter()
        .map(|&i| users[i].clone())
        .collect();
    for user in &users {
        loop {
            let (status, body, _) = put_presence(&client, &b, user, "online", "third").await;
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "b did not take over a's partitions"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(get_presence(&client, &b, user).await["status_msg"], "third");
    }
    eprintln!(
        "cluster: every user writable on b {:.1} s after a's kill",
        killed.elapsed().as_secs_f64()
    );
    // a's federation shards moved too: b tries their destinations, once
    // each, with what a left queued in the outbox.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&client, &b, FAILED).await < f64::from(NOWHERES) {
        assert!(
            Instant::now() < deadline,
            "b never took over a's {shards_of_a} destinations: {} attempts",
            metric(&client, &b, FAILED).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&client, &b, FAILED).await, f64::from(NOWHERES));

    // NATS gone: reads go on from the replica; after the lease /health
    // fails and PUTs answer 503 with Retry-After, quickly.
    nats.kill(0);
    let cut = Instant::now();
    assert_eq!(
        get_presence(&client, &b, &users[0]).await["status_msg"],
        "third"
    );
    loop {
        let health = client
            .get(format!("{}/health", b.base))
            .send()
            .await
            .unwrap();
        if health.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(20),
            "b still healthy {} s after losing NATS",
            cut.elapsed().as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let asked = Instant::now();
    let (status, body, retry_after) = put_presence(&client, &b, &users[0], "online", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a cut-off node answers at once"
    );
    assert_eq!(
        get_presence(&client, &b, &users[0]).await["status_msg"],
        "third"
    );

    // NATS back (same store directory): b is healthy and writable again.
    nats.restart(0);
    let back = Instant::now();
    loop {
        let (status, _, _) = put_presence(&client, &b, &users[0], "online", "fourth").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(40),
            "b never recovered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_healthy(&client, &b).await;
}

fn enc(segment: &str) -> String {
    segment
        .replace('%', "%25")
        .replace('!', "%21")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace('#', "%23")
}

/// A room made on one node is joined and written through the other; each
/// node's sync shows the other's writes, and presence follows the shared
/// room whichever nodes the two users talk to.
const FAILED: &str = "presenced_federation_outbound_transactions_failed_total";

/// A metric's value on `node` (0 when absent).
async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::helpers::metric_value(&text, name)
}

/// The partitions `node` owns, from `/health`.
async fn owned_partitions(client: &reqwest::Client, node: &Node) -> Vec<u16> {
    let health: Value = client
        .get(format!("{}/health", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(health["cluster"]["owned_partitions"].clone()).unwrap()
}

/// Starts a, waits until it owns every partition, then starts b and waits
/// until b has its share (see [`partitions_move_to_the_preferred_node`]).
async fn start_a_then_b(
    client: &reqwest::Client,
    (config_a, pa): (&Path, u16),
    (config_b, pb): (&Path, u16),
) -> (Node, Node) {
    let a = start_node(config_a, pa);
    wait_healthy(client, &a).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while owned_partitions(client, &a).await.len() < usize::from(PARTITIONS) {
        assert!(Instant::now() < deadline, "a never took every partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = start_node(config_b, pb);
    wait_healthy(client, &b).await;
    partitions_move_to_the_preferred_node(client, &a, &b).await;
    (a, b)
}

/// b's share: the partitions where b comes first in the preference order of
/// {a, b}. a hands each over after seeing b preferred twice (5 s apart).
async fn partitions_move_to_the_preferred_node(client: &reqwest::Client, a: &Node, b: &Node) {
    let joined = Instant::now();
    let of_b: Vec<u16> = (0..PARTITIONS)
        .filter(|&p| preference_order(p, ["a", "b"])[0] == "b")
        .collect();
    assert!(!of_b.is_empty() && of_b.len() < usize::from(PARTITIONS));
    let deadline = joined + Duration::from_secs(30);
    loop {
        let (owned_a, owned_b) = (
            owned_partitions(client, a).await,
            owned_partitions(client, b).await,
        );
        if owned_b == of_b && owned_a.len() + owned_b.len() == usize::from(PARTITIONS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b owns {owned_b:?}, a {owned_a:?}; b is preferred for {of_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "cluster: b got its {} partitions {:.1} s after it started",
        of_b.len(),
        joined.elapsed().as_secs_f64()
    );
}

/// user0's first PUT was routed to the [`NOWHERES`] remote servers, queued
/// in the shared outbox by user0's partition owner: each destination is
/// tried by exactly one node, the owner of its shard, whichever node
/// queued it (without sharding both nodes would try each). Returns how
/// many destinations are a's.
async fn federation_is_sharded_by_destination(client: &reqwest::Client, a: &Node, b: &Node) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let tried = || async { metric(client, a, FAILED).await + metric(client, b, FAILED).await };
    while tried().await < f64::from(NOWHERES) {
        assert!(
            Instant::now() < deadline,
            "only {} of {NOWHERES} destinations were tried",
            tried().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the cluster's outbox rescan (5 s): a node that is not
    // the shard owner would have tried by then.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (owned_a, owned_b) = (
        owned_partitions(client, a).await,
        owned_partitions(client, b).await,
    );
    let shard = |port: u16| {
        let destination = format!("127.0.0.1:{port}");
        destination_partition(destination.as_str().try_into().unwrap())
    };
    let of_a = (1..=NOWHERES)
        .filter(|&p| owned_a.contains(&shard(p)))
        .count();
    let of_b = (1..=NOWHERES)
        .filter(|&p| owned_b.contains(&shard(p)))
        .count();
    assert_eq!(
        of_a + of_b,
        usize::from(NOWHERES),
        "{owned_a:?} {owned_b:?}"
    );
    assert_eq!(metric(client, a, FAILED).await, of_a as f64, "a's tries");
    assert_eq!(metric(client, b, FAILED).await, of_b as f64, "b's tries");
    eprintln!(
        "cluster: federation shards: {of_a} destinations on a, {of_b} on b \
         (partitions {owned_a:?} / {owned_b:?})"
    );
    of_a as u32
}

async fn rooms_span_the_nodes(
    client: &reqwest::Client,
    a: &Node,
    b: &Node,
    users: &[(String, String)],
) -> String {
    let (owner, guest) = (&users[0], &users[1]);
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/createRoom", a.base),
        Some(&owner.1),
        Some(json!({"preset": "public_chat"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    // Joined through b, which never saw the room being made: b's room
    // write catches up with the database before it checks the join rule.
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/join/{}", b.base, enc(&room)),
        Some(&guest.1),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Written through b, read through a.
    let (status, body, _) = call(
        client,
        reqwest::Method::PUT,
        format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
            b.base,
            enc(&room)
        ),
        Some(&owner.1),
        Some(json!({"msgtype": "m.text", "body": "hello from b"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body, _) = call(
            client,
            reqwest::Method::GET,
            format!("{}/_matrix/client/v3/sync?timeout=0", a.base),
            Some(&guest.1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let timeline = &body["rooms"]["join"][room.as_str()]["timeline"]["events"];
        let said = timeline.as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["content"]["body"] == "hello from b")
        });
        let owner_presence = body["presence"]["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["sender"] == owner.0.as_str())
                .cloned()
        });
        if let (true, Some(owner_presence)) = (said, owner_presence) {
            assert_eq!(owner_presence["content"]["status_msg"], "second");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a's sync never showed b's message and the co-member's presence: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shared room lets the guest read the owner's presence on either
    // node; a user with no shared room is refused (403) on both.
    for node in [a, b] {
        let (status, body, _) = call(
            client,
            reqwest::Method::GET,
            presence_url(node, &owner.0),
            Some(&guest.1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status_msg"], "second");
        let (status, body, _) = call(
            client,
            reqwest::Method::GET,
            presence_url(node, &owner.0),
            Some(&users[2].1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    room
}

/// One sync: (next_batch, the presence events by sender).
async fn sync_on(
    client: &reqwest::Client,
    base: &str,
    user: &(String, String),
    since: Option<&str>,
    timeout_ms: u64,
) -> (String, Vec<(String, Value)>) {
    let mut url = format!("{base}/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let (status, body, _) = call(client, reqwest::Method::GET, url, Some(&user.1), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let presence = body["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["sender"].as_str().unwrap().to_owned(),
                        e["content"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (body["next_batch"].as_str().unwrap().to_owned(), presence)
}

/// The presence vector of a cluster node's sync token.
fn vector_of(token: &str) -> Vec<u64> {
    let presence = token.split_once('_').unwrap().1;
    let parts: Vec<&str> = presence.split('.').collect();
    assert_eq!(parts[0], "g1", "a cluster token: {token}");
    parts[1..]
        .iter()
        .map(|p| u64::from_str_radix(p, 36).unwrap())
        .collect()
}

fn covers(later: &str, earlier: &str) -> bool {
    vector_of(later)
        .iter()
        .zip(vector_of(earlier))
        .all(|(l, e)| *l >= e)
}

/// A sync token from either node is served by the other: each change
/// arrives once, in order, tokens never go backwards, and a user met
/// through a join on one node shows in a sync on the other.
async fn sync_tokens_span_the_nodes(
    client: &reqwest::Client,
    a: &Node,
    b: &Node,
    users: &[(String, String)],
    room: &str,
) {
    let (owner, guest, joiner) = (&users[0], &users[1], &users[2]);
    let (t0, first) = sync_on(client, &b.base, guest, None, 0).await;
    assert!(first.iter().any(|(s, _)| *s == owner.0), "{first:?}");
    assert!(
        first.iter().all(|(s, _)| *s != joiner.0),
        "no shared room yet"
    );

    // Written through a, seen with b's token by a sync on a.
    let (status, body, _) = put_presence(client, a, owner, "online", "s1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (t1, got) = sync_on(client, &a.base, guest, Some(&t0), 5_000).await;
    let owner_seen: Vec<_> = got.iter().filter(|(s, _)| *s == owner.0).collect();
    assert_eq!(owner_seen.len(), 1, "{got:?}");
    assert_eq!(owner_seen[0].1["status_msg"], "s1");
    assert!(covers(&t1, &t0), "{t1} behind {t0}");

    // The same token on the other node: nothing again, and not backwards.
    let (t2, again) = sync_on(client, &b.base, guest, Some(&t1), 0).await;
    assert!(
        again.iter().all(|(s, _)| *s != owner.0),
        "repeated: {again:?}"
    );
    assert!(covers(&t2, &t1), "{t2} behind {t1}");

    // A change written through b reaches a long-poll on a, once.
    let waiting = {
        let (client, a, guest, t2) = (client.clone(), a.base.clone(), guest.clone(), t2.clone());
        tokio::spawn(async move { sync_on(&client, &a, &guest, Some(&t2), 10_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body, _) = put_presence(client, b, owner, "unavailable", "s2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (t3, woke) = waiting.await.unwrap();
    let owner_seen: Vec<_> = woke.iter().filter(|(s, _)| *s == owner.0).collect();
    assert_eq!(owner_seen.len(), 1, "{woke:?}");
    assert_eq!(owner_seen[0].1["status_msg"], "s2");
    assert_eq!(owner_seen[0].1["presence"], "unavailable");
    assert!(covers(&t3, &t2));

    // A join through a: a sync on b since t3 shows the joiner, whose
    // presence was written long before t3 (met, spec §12).
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/join/{}", a.base, enc(room)),
        Some(&joiner.1),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut token = t3;
    loop {
        let (next, got) = sync_on(client, &b.base, guest, Some(&token), 1_000).await;
        assert!(covers(&next, &token));
        if let Some((_, content)) = got.iter().find(|(s, _)| *s == joiner.0) {
            assert_eq!(content["status_msg"], "second");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b never showed the joiner met on a"
        );
        token = next;
    }
}

/// A token logged out through one node is refused by the other at once,
/// also right after that node served it.
async fn logout_ends_the_token_on_every_node(
    client: &reqwest::Client,
    a: &Node,
    b: &Node,
    user: &(String, String),
) {
    assert_eq!(get_presence(client, b, user).await["status_msg"], "second");
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/logout", a.base),
        Some(&user.1),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = call(
        client,
        reqwest::Method::GET,
        presence_url(b, &user.0),
        Some(&user.1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
}

/// A deactivation through one node takes the user offline, without a
/// message, on the other (their partition's owner applies it).
async fn deactivation_reaches_every_node(
    client: &reqwest::Client,
    a: &Node,
    b: &Node,
    watcher: &(String, String),
    leaver: &(String, String),
) {
    let url = format!("{}/_matrix/client/v3/account/deactivate", b.base);
    let (status, uia, _) = call(
        client,
        reqwest::Method::POST,
        url.clone(),
        Some(&leaver.1),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
    let auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": leaver.0},
        "password": "correct horse battery",
        "session": uia["session"],
    }});
    let (status, body, _) = call(
        client,
        reqwest::Method::POST,
        url,
        Some(&leaver.1),
        Some(auth),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, seen, _) = call(
            client,
            reqwest::Method::GET,
            presence_url(a, &leaver.0),
            Some(&watcher.1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        if seen["presence"] == "offline" {
            assert!(seen.get("status_msg").is_none_or(|m| m.is_null()), "{seen}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a still shows the deactivated user as {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node killed while a client long-polls on it never sends that sync's
/// end: the owner ends it once the node is gone from the cluster (two
/// looks, 5 s apart), and the user goes offline after the sync timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_syncs_end_on_the_owner() {
    if std::env::var("PRESENCED_TEST_BACKEND").as_deref() == Ok("postgres") {
        return;
    }
    let Some(db) = FreshPgDatabase::create("cluster_dead_syncs") else {
        return;
    };
    let Some(nats) = NatsServers::start(1, "cluster mode: a dead node's syncs") else {
        return;
    };
    let nats_url = nats.urls()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let short = "presence: {sync_online_timeout: 2s}\n";
    let config_a = node_config_with(dir.path(), "a", pa, &db, &nats_url, short);
    let config_b = node_config_with(dir.path(), "b", pb, &db, &nats_url, short);
    let (a, b) = start_a_then_b(&client, (&config_a, pa), (&config_b, pb)).await;
    // A user whose partition b owns, syncing on a.
    let owned_b = owned_partitions(&client, &b).await;
    let mut user = None;
    for i in 0..64 {
        let id = format!("@syncer{i}:test.local");
        if owned_b.contains(&presenced_cluster::partition_of(&id)) {
            user = Some(register(&client, &a, &format!("syncer{i}")).await);
            break;
        }
    }
    let user = user.expect("one of 64 users falls in b's partitions");
    let (since, _) = sync_on(&client, &a.base, &user, None, 0).await;
    let long_poll = {
        let (client, base, user) = (client.clone(), a.base.clone(), user.clone());
        tokio::spawn(async move {
            let url = format!("{base}/_matrix/client/v3/sync?timeout=60000&since={since}");
            let _ = client.get(url).bearer_auth(&user.1).send().await;
        })
    };
    // Online on the owner while the long-poll lasts (past the sync timeout).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(get_presence(&client, &b, &user).await["presence"], "online");
    drop(a);
    let killed = Instant::now();
    loop {
        let presence = get_presence(&client, &b, &user).await["presence"].clone();
        if presence == "offline" {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "still {presence} {:?} after its node's kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "cluster: a dead node's sync ended, its user offline {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    long_poll.abort();
    drop(nats);
}

/// Nodes share one database, so they must share its server_name: a node
/// configured with another one is refused at start (non-zero, both names
/// on stderr), and the running node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_server_name_is_refused() {
    if std::env::var("PRESENCED_TEST_BACKEND").as_deref() == Ok("postgres") {
        return;
    }
    let Some(db) = FreshPgDatabase::create("cluster_server_name") else {
        return;
    };
    let Some(nats) = NatsServers::start(1, "cluster mode: another server_name") else {
        return;
    };
    let nats_url = nats.urls()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let a = start_node(&node_config(dir.path(), "a", pa, &db, &nats_url), pa);
    wait_healthy(&client, &a).await;
    let user = register(&client, &a, "alice").await;

    let config_b = node_config(dir.path(), "b", pb, &db, &nats_url);
    let renamed = std::fs::read_to_string(&config_b)
        .unwrap()
        .replace("server_name: test.local", "server_name: renamed.test");
    std::fs::write(&config_b, renamed).unwrap();
    let mut b = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .arg("--config")
        .arg(&config_b)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = b.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = b.kill();
            let _ = b.wait();
            panic!("a node of another server_name started on the shared database");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut b.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("belongs to server_name test.local")
            && stderr.contains("the config says server_name: renamed.test"),
        "{stderr}"
    );
    // a still answers for its user.
    let (status, body, _) = call(
        &client,
        reqwest::Method::GET,
        format!("{}/_matrix/client/v3/account/whoami", a.base),
        Some(&user.1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], user.0.as_str());
}
