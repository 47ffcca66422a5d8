//! `PRESENCED_TEST_BACKEND=cluster`: the server a test gets is a 3-node
//! cluster (one fresh PostgreSQL database, one `nats-server` of its own
//! with `allow_unreplicated`) behind a proxy that sends each request to a
//! random node, so the acceptance-style tests run unchanged against it.
//!
//! Each node runs in this process on its own thread and multi-threaded
//! runtime (cluster start-up needs one), with the test's config plus its
//! `cluster:` section, its own data directory and the shared signing key.
//! The test's `state` is node 0's. `scripts/test` names the test modules
//! this backend runs; the cluster's own tests are in `cluster.rs`.
//!
//! The proxy answers a write (any method but GET) only once every node has
//! applied what the answering node had (its presence log vector and room
//! stream position, from `/health`): a cluster acknowledges a write on the
//! node that took it, and the others follow within milliseconds, but these
//! tests read right after writing, through another random node. What a
//! client sees on a lagging node (never older than its token, the rest in
//! its next sync) is `cluster.rs`'s subject.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use presenced_cluster::testing::NatsServers;
use presenced_server::config::cluster::ClusterConfig;
use presenced_server::config::Config;
use presenced_server::federation::keys::KeyFetcher;
use presenced_server::store::testing::FreshPgDatabase;
use presenced_server::{AppState, StateReceivers};
use tokio::sync::oneshot;

/// Nodes per test cluster.
const NODES: usize = 3;

/// Whether this run's servers are clusters.
pub fn enabled() -> bool {
    std::env::var("PRESENCED_TEST_BACKEND").as_deref() == Ok("cluster")
}

/// What keeps a test's cluster running; dropping it stops the nodes, the
/// proxy and NATS, then drops the database.
pub struct Guard {
    nodes: Vec<NodeThread>,
    proxy: Option<oneshot::Sender<()>>,
    _nats: NatsServers,
    _db: FreshPgDatabase,
}

/// One in-process node; dropping it stops it (a [`Guard`] stops all of
/// its nodes first, then waits for them).
pub struct NodeThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(stop) = self.proxy.take() {
            let _ = stop.send(());
        }
        for node in &mut self.nodes {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
        }
        for node in &mut self.nodes {
            if let Some(thread) = node.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// A started cluster: the proxy's base URL, node 0's state and feeds.
pub struct Started {
    pub base: String,
    pub state: Arc<AppState>,
    pub receivers: StateReceivers,
    pub guard: Guard,
}

/// Starts the cluster for `config` (the test's, tweaks applied). Panics
/// when PostgreSQL or nats-server is missing: this backend is asked for
/// by name, so skipping would hide that nothing ran.
pub async fn start(config: Config, dir: &std::path::Path, fetcher: Arc<dyn KeyFetcher>) -> Started {
    let name = crate::helpers::test_name();
    let db = FreshPgDatabase::create(&format!("c_{name}"))
        .expect("PRESENCED_TEST_BACKEND=cluster needs PostgreSQL");
    let nats = NatsServers::start(1, "the cluster test backend")
        .expect("PRESENCED_TEST_BACKEND=cluster needs nats-server");
    let nats_url = nats.urls()[0].clone();
    let mut nodes = Vec::new();
    let mut bases = Vec::new();
    let mut first = None;
    for i in 0..NODES {
        let mut node_config = config.clone();
        node_config.database.url = Some(db.url());
        node_config.data_dir = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node_config.data_dir).unwrap();
        node_config.signing_key_path = Some(dir.join("signing.key"));
        node_config.cluster = Some(ClusterConfig {
            node_name: format!("n{i}"),
            nats_servers: vec![nats_url.clone()],
            nats_credentials: None,
            allow_unreplicated: true,
        });
        let (node, base, state, receivers) = start_node(node_config, fetcher.clone()).await;
        nodes.push(node);
        bases.push(base);
        if first.is_none() {
            first = Some((state, receivers));
        }
    }
    wait_for_owners(&bases).await;
    let (proxy, base) = start_proxy(bases).await;
    let (state, receivers) = first.expect("at least one node");
    Started {
        base,
        state,
        receivers,
        guard: Guard {
            nodes,
            proxy: Some(proxy),
            _nats: nats,
            _db: db,
        },
    }
}

/// Starts one node for `config` (its `cluster:` section included) on its
/// own thread; its base URL, state and feeds.
pub async fn start_node(
    config: Config,
    fetcher: Arc<dyn KeyFetcher>,
) -> (NodeThread, String, Arc<AppState>, StateReceivers) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (base, state, receivers) = crate::helpers::serve(config, fetcher).await;
            let _ = ready_tx.send((base, state, receivers));
            let _ = stop_rx.await;
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
    let (base, state, receivers) = ready_rx.await.expect("cluster node started");
    let node = NodeThread {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    (node, base, state, receivers)
}

/// Waits until every partition has an owner, so a test's first PUT is not
/// answered 503 while the nodes divide them.
pub async fn wait_for_owners(bases: &[String]) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut owned = 0;
        for base in bases {
            if let Ok(response) = client.get(format!("{base}/health")).send().await {
                if let Ok(health) = response.json::<serde_json::Value>().await {
                    owned += health["cluster"]["owned_partitions"]
                        .as_array()
                        .map_or(0, Vec::len);
                }
            }
        }
        if owned == usize::from(presenced_cluster::PARTITIONS) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the test cluster's partitions found no owners ({owned} owned)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Proxy {
    client: reqwest::Client,
    nodes: Vec<String>,
    picks: AtomicU64,
}

impl Proxy {
    /// A node at random (a hash of a counter: no state shared between
    /// picks, as with a load balancer's random policy).
    fn pick(&self) -> &str {
        use std::hash::{BuildHasher, RandomState};
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        let hash = RandomState::new().hash_one(n);
        &self.nodes[(hash % self.nodes.len() as u64) as usize]
    }
}

/// How far a node has applied the presence log and the room stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Applied {
    vector: Vec<u64>,
    rooms: i64,
}

impl Applied {
    fn covers(&self, other: &Self) -> bool {
        self.rooms >= other.rooms
            && self.vector.len() == other.vector.len()
            && self.vector.iter().zip(&other.vector).all(|(a, b)| a >= b)
    }
}

impl Proxy {
    async fn applied(&self, node: &str) -> Option<Applied> {
        let health: serde_json::Value = (self.client)
            .get(format!("{node}/health"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let cluster = &health["cluster"];
        Some(Applied {
            vector: serde_json::from_value(cluster["applied"].clone()).ok()?,
            rooms: cluster["room_position"].as_i64()?,
        })
    }

    /// Waits (up to 5 s) until every node has applied what `node` has.
    async fn barrier(&self, node: &str) {
        let Some(target) = self.applied(node).await else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        for other in &self.nodes {
            while Instant::now() < deadline {
                if self.applied(other).await.is_some_and(|a| a.covers(&target)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn start_proxy(nodes: Vec<String>) -> (oneshot::Sender<()>, String) {
    let proxy = Arc::new(Proxy {
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        nodes,
        picks: AtomicU64::new(0),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    (stop_tx, base)
}

/// Sends the request as it came to a random node and its answer back
/// (after a write, once every node has applied it).
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let write = parts.method != axum::http::Method::GET;
    let node = proxy.pick().to_owned();
    let mut upstream = (proxy.client)
        .request(parts.method.clone(), format!("{node}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            if write {
                proxy.barrier(&node).await;
            }
            response.body(Body::from(bytes)).unwrap()
        }
        Err(error) => Response::builder()
            .status(502)
            .body(Body::from(error.to_string()))
            .unwrap(),
    }
}

/// For a test of what a single server does that a cluster does
/// differently on purpose (documented in docs/cluster.md) or
/// that restarts its server in-process: true, with a note on stderr, when
/// this run's servers are clusters.
pub fn single_node_only(why: &str) -> bool {
    if enabled() {
        eprintln!("not run against the cluster backend: {why}");
    }
    enabled()
}
