//! `spawn_app()` and small HTTP helpers.

use std::sync::Arc;
use std::time::Duration;

use presenced_server::config::{Config, PasswordHashing, Secret};
use presenced_server::federation::keys::{KeyFetcher, NoKeyFetcher};
use presenced_server::process::startup;
use presenced_server::store::testing::FreshPgDatabase;
use presenced_server::{ActivityEvent, AppState, MembershipChange, StateReceivers};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;

/// The shared secret every test server is configured with.
pub const SECRET: &str = "test-shared-secret";

/// A running server and what a test needs to poke at it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    pub membership_rx: UnboundedReceiver<MembershipChange>,
    pub activity_rx: UnboundedReceiver<ActivityEvent>,
    /// Kept so the directory lives as long as the server.
    pub _dir: TempDir,
    /// The PostgreSQL database of a `PRESENCED_TEST_BACKEND=postgres` run,
    /// dropped after the server.
    pub _db: Option<FreshPgDatabase>,
    /// The nodes, proxy and NATS of a `PRESENCED_TEST_BACKEND=cluster` run.
    pub _cluster: Option<crate::cluster_backend::Guard>,
}

/// The database backend of this test run: SQLite, unless
/// `PRESENCED_TEST_BACKEND=postgres` (`scripts/test` runs the suite both
/// ways); then a fresh PostgreSQL database per server, named after the
/// test. `None` means SQLite.
pub fn test_database() -> Option<FreshPgDatabase> {
    if std::env::var("PRESENCED_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    FreshPgDatabase::create(&test_name())
}

/// The running test's own name (its thread's, without the module path).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_owned()
}

/// Config for tests: a temp data dir, a known secret, cheap password hashes,
/// and no login or registration rate limits (every request comes from
/// 127.0.0.1; the tests of those limits, `limits.rs`, set them).
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config {
        server_name: "test.local".try_into().unwrap(),
        data_dir: dir.path().to_owned(),
        registration_shared_secret: Some(Secret::new(SECRET)),
        password_hashing: PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Config::default()
    };
    config.rc_login.address.per_second = 0.0;
    config.rc_login.account.per_second = 0.0;
    config.rc_login.failed_attempts.per_second = 0.0;
    config.rc_registration.per_second = 0.0;
    config
}

/// For a test that starts a second instance beside the first on one
/// database (a restart inside one process): SQLite only, because
/// PostgreSQL's one-writer lock refuses exactly that. `crash.rs` restarts
/// real processes on both backends.
pub fn sqlite_only(c: &mut Config) {
    c.database.url = None;
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_fetcher(tweak, Arc::new(NoKeyFetcher)).await
}

/// With `TEST_LOG` set, the servers of a test log at debug level.
pub fn install_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let log = presenced_server::config::LogConfig {
            level: Some("debug".to_owned()),
            ..Default::default()
        };
        presenced_server::process::telemetry::install(
            presenced_server::process::telemetry::subscriber(&log, std::io::stderr, false),
        );
    }
}

/// A server for a test of single-server behaviour: `None`, with `why` on
/// stderr, when this run's servers are clusters
/// ([`crate::cluster_backend::single_node_only`]).
pub async fn spawn_single_node_with(why: &str, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    if crate::cluster_backend::single_node_only(why) {
        return None;
    }
    Some(spawn_app_with(tweak).await)
}

/// A server whose federation key lookups go through `fetcher`.
pub async fn spawn_app_with_fetcher(
    tweak: impl FnOnce(&mut Config),
    fetcher: Arc<dyn KeyFetcher>,
) -> TestApp {
    install_test_log();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    if crate::cluster_backend::enabled() {
        tweak(&mut config);
        let started = crate::cluster_backend::start(config, dir.path(), fetcher).await;
        return TestApp {
            base: started.base,
            client: reqwest::Client::new(),
            state: started.state,
            membership_rx: started.receivers.membership_rx,
            activity_rx: started.receivers.activity_rx,
            _dir: dir,
            _db: None,
            _cluster: Some(started.guard),
        };
    }
    let db = test_database();
    if let Some(db) = &db {
        config.database.url = Some(db.url());
    }
    tweak(&mut config);
    let (base, state, receivers) = serve(config, fetcher).await;
    TestApp {
        base,
        client: reqwest::Client::new(),
        state,
        membership_rx: receivers.membership_rx,
        activity_rx: receivers.activity_rx,
        _dir: dir,
        _db: db,
        _cluster: None,
    }
}

/// Builds a server for `config` and serves it on a loopback port of the
/// current runtime; its base URL, state and feeds.
pub async fn serve(
    config: Config,
    fetcher: Arc<dyn KeyFetcher>,
) -> (String, Arc<AppState>, StateReceivers) {
    let (state, receivers, _) = startup::build_state_with(config, fetcher).unwrap();
    let receivers = presenced_server::process::feeds::spawn(&state, receivers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(presenced_server::run(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (base, state, receivers)
}

/// A counter or gauge from `/metrics` text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// A logged-in test user.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

impl TestApp {
    /// Sends a request; `body` is sent as JSON when given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: response is not JSON: {text:?}"));
        (status, value)
    }

    /// The `/metrics` text (served by the test app's listener).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Registers through the shared-secret admin API.
    pub async fn register(&self, localpart: &str) -> User {
        self.register_as(localpart, false).await
    }

    /// Registers a user, a server admin when `admin`.
    pub async fn register_as(&self, localpart: &str, admin: bool) -> User {
        let (_, nonce) = self.get("/_synapse/admin/v1/register", None).await;
        let nonce = nonce["nonce"].as_str().unwrap();
        let mac = presenced_server::api::synapse_admin::registration_mac(
            SECRET, nonce, localpart, "password", admin, None,
        );
        let (status, body) = self
            .post(
                "/_synapse/admin/v1/register",
                None,
                json!({ "nonce": nonce, "username": localpart, "password": "password", "admin": admin, "mac": mac }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        User {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            device_id: body["device_id"].as_str().unwrap().to_owned(),
        }
    }

    /// The next membership change, failing the test if none comes.
    pub async fn next_membership(&mut self) -> MembershipChange {
        tokio::time::timeout(Duration::from_secs(5), self.membership_rx.recv())
            .await
            .expect("a membership change")
            .expect("channel open")
    }

    /// The next activity notice.
    pub async fn next_activity(&mut self) -> ActivityEvent {
        tokio::time::timeout(Duration::from_secs(5), self.activity_rx.recv())
            .await
            .expect("an activity event")
            .expect("channel open")
    }
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(resp.0.as_u16(), status, "{}", resp.1);
    assert_eq!(resp.1["errcode"], errcode, "{}", resp.1);
}

/// Percent-encodes a path segment (room and user IDs hold `!`, `@`, `:`).
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
