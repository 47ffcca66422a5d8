//! What the fuzz targets share: one presenced server state (real SQLite in
//! a temp dir, the real router) built once per fuzzing process, requests
//! sent through the router as the listeners send them, and the checks every
//! response must pass whatever the input.
//!
//! Targets go through the HTTP router rather than calling parsers one by
//! one so that what is fuzzed is exactly what a client or a peer reaches:
//! the extractors, the handler's own validation, and whatever the handler
//! does with a value that got through.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::Router;
use presenced_server::config::Config;
use presenced_server::federation::keys::{BoxFuture, FetchError, KeyFetcher};
use presenced_server::federation::ServerSigningKey;
use presenced_server::AppState;
use ruma_common::{OwnedServerName, ServerName};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Our server's name.
pub const US: &str = "fuzz.local";
/// The one remote server whose keys we know (see [`PeerKeys`]).
pub const PEER: &str = "peer.fuzz";

/// The server every input of a process goes to.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub router: Router,
    pub state: Arc<AppState>,
    /// `@fuzz:fuzz.local`, logged in.
    pub user_id: String,
    pub token: String,
    /// Filter IDs stored at start-up, so `filter=<id>` finds some.
    pub filter_ids: Vec<String>,
    /// The peer's key, to sign its transactions.
    pub peer_key: Arc<ServerSigningKey>,
    pub peer_name: OwnedServerName,
    _dir: tempfile::TempDir,
}

/// Other servers' keys: only [`PEER`]'s, made at start; every other server
/// is unreachable (no request ever leaves the process).
struct PeerKeys {
    name: OwnedServerName,
    key: Arc<ServerSigningKey>,
}

impl KeyFetcher for PeerKeys {
    fn fetch_server_keys<'a>(
        &'a self,
        server: &'a ServerName,
    ) -> BoxFuture<'a, Result<Value, FetchError>> {
        let result = if server == self.name {
            let mut body = json!({
                "server_name": self.name,
                "valid_until_ts": presenced_server::util::clock::now().as_millis() + 3_600_000,
                "verify_keys": { self.key.key_id(): { "key": self.key.public_key_base64() } },
                "old_verify_keys": {},
            });
            self.key
                .sign_json(&self.name, &mut body)
                .expect("a fixed key response signs");
            Ok(body)
        } else {
            Err(FetchError::Unreachable {
                server: server.to_owned(),
                message: "not the fuzzing peer".to_owned(),
            })
        };
        Box::pin(async move { result })
    }
}

/// The config: registration open, cheap password hashes, no rate limit in
/// the way, metrics on, presence sent to nobody (fuzzed invites and EDUs
/// name made-up servers; nothing may try to reach them).
fn config(dir: &std::path::Path) -> Config {
    let base = format!(
        "server_name: {US}\n\
         data_dir: {dir}\n\
         enable_registration: true\n\
         enable_registration_without_verification: true\n\
         enable_metrics: true\n\
         registration_shared_secret: fuzz-secret\n\
         federation_domain_whitelist: [{PEER}]\n\
         password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}\n\
         rc_presence: {{per_user: {{per_second: 1000000000, burst_count: 1000000000}}}}\n\
         presence:\n  federation: {{send: false, receive: true}}\n",
        dir = dir.display()
    );
    // Synapse's login and registration limits, generous, so that inputs
    // reach the handler instead of the limiter.
    let generous = "{per_second: 1000000000, burst_count: 1000000000}";
    let limits = format!(
        "rc_registration: {generous}\n\
         rc_login: {{address: {generous}, account: {generous}, failed_attempts: {generous}}}\n"
    );
    let no_vars = std::iter::empty::<(String, String)>;
    Config::from_yaml(&format!("{base}{limits}"), "fuzz harness", no_vars())
        .expect("the fuzz harness config loads")
}

impl Harness {
    /// The process's server, built at the first call.
    pub fn get() -> &'static Self {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(Self::start)
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let peer_name: OwnedServerName = PEER.try_into().unwrap();
        let peer_key = Arc::new(ServerSigningKey::generate());
        let fetcher = Arc::new(PeerKeys {
            name: peer_name.clone(),
            key: peer_key.clone(),
        });
        let config = config(dir.path());
        let state = rt.block_on(async {
            let (state, receivers, _) =
                presenced_server::process::startup::build_state_with(config, fetcher)
                    .expect("the fuzz server starts");
            // Keep the feeds running (room writes report to them); their
            // receivers stay open as long as the process.
            let receivers = presenced_server::process::feeds::spawn(&state, receivers);
            std::mem::forget(receivers);
            state
        });
        let router = presenced_server::app(state.clone());
        let mut harness = Self {
            rt,
            router,
            state,
            user_id: String::new(),
            token: String::new(),
            filter_ids: Vec::new(),
            peer_key,
            peer_name,
            _dir: dir,
        };
        let (status, body) = harness
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                &[],
                serde_json::to_vec(&json!({
                    "username": "fuzz", "password": "fuzz-password",
                    "auth": {"type": "m.login.dummy"},
                }))
                .unwrap(),
            )
            .expect("a valid URI");
        assert_eq!(
            status,
            StatusCode::OK,
            "registering the fuzz user: {body:?}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        harness.user_id = body["user_id"].as_str().unwrap().to_owned();
        harness.token = body["access_token"].as_str().unwrap().to_owned();
        for filter in [
            json!({}),
            json!({"presence": {"types": []}}),
            json!({"presence": {"not_types": ["m.presence"]}, "room": {"rooms": []}}),
            json!({"presence": {"senders": ["@fuzz:fuzz.local"], "limit": 1}}),
        ] {
            let path = format!("/_matrix/client/v3/user/{}/filter", harness.user_id);
            let auth = harness.bearer();
            let (status, body) = harness
                .call(
                    Method::POST,
                    &path,
                    &[("authorization", auth.as_bytes())],
                    filter.to_string().into_bytes(),
                )
                .expect("a valid URI");
            assert_eq!(status, StatusCode::OK, "storing a filter: {body:?}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            harness
                .filter_ids
                .push(body["filter_id"].as_str().unwrap().to_owned());
        }
        harness
    }

    /// `Bearer <the fuzz user's token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Sends one request through the router (from a loopback client, as
    /// the listeners tag it) and returns the status and the body bytes;
    /// `None` when the path is not a URI, which hyper refuses before any
    /// handler runs. Headers that are not valid header values are left out
    /// for the same reason.
    pub fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &[u8])],
        body: Vec<u8>,
    ) -> Option<(StatusCode, Vec<u8>)> {
        let mut builder = Request::builder().method(method).uri(path_and_query);
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                builder = builder.header(*name, value);
            }
        }
        let mut request = builder.body(Body::from(body)).ok()?;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        self.rt.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a response body reads");
            Some((status, bytes.to_vec()))
        })
    }
}

/// What every answer to any input must be: not a server error, a JSON
/// object, and for a refusal a Matrix error code. Panics (a fuzz crash)
/// otherwise, naming the request.
pub fn check_response(what: &str, status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        !status.is_server_error(),
        "{what}: server error {status}: {text}"
    );
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status} with a body that is not JSON ({e}): {text}"));
    assert!(
        value.is_object(),
        "{what}: {status} body is not an object: {text}"
    );
    // The user-interactive-auth answer: a 401 listing the flows, no errcode.
    let uia = status == StatusCode::UNAUTHORIZED && value.get("flows").is_some();
    if status.is_client_error() && !uia {
        let errcode = value.get("errcode").and_then(Value::as_str);
        assert!(
            errcode.is_some_and(|c| c.starts_with("M_")),
            "{what}: {status} without a Matrix errcode: {text}"
        );
    }
}
