//! No secret leaves the server: the real `presenced` process, logging at
//! `trace` (every level of every crate), is sent known secrets through
//! every path that takes one — passwords (registration, shared-secret
//! registration, login, deactivation, bodies that fail to parse), the
//! shared secret's MAC (good and bad), access tokens in the query and the
//! header on client, admin and federation endpoints, malformed X-Matrix
//! headers carrying a token — and then every log line, every response body
//! and `/metrics` are searched for each secret, and for the
//! `registration_shared_secret` and the signing key's seed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use presenced_server::api::synapse_admin::registration_mac;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::enc;

const SHARED_SECRET: &str = "shh-shared-secret-4f1c2a";
const PW_ADMIN: &str = "pw-admin-9c1e77";
const PW_OPEN: &str = "pw-open-3b8d21";
const PW_WRONG: &str = "pw-wrong-55aa10";
const PW_PARSE: &str = "pw-parse-0d9e3f";
const BAD_MAC: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const FAKE_TOKEN: &str = "pd_fake_token_7e2c99";
const SERVER: &str = "secrets.test";

/// The process, its log file and everything it answered.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    /// (what was asked, the response body) of every request so far.
    bodies: Vec<(String, String)>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("presenced.yaml");
        std::fs::write(
            &config,
            format!(
                "server_name: {SERVER}\n\
                 listeners: [{{port: {port}, bind_addresses: ['127.0.0.1']}}]\n\
                 data_dir: {data}\n\
                 registration_shared_secret: {SHARED_SECRET}\n\
                 enable_registration: true\n\
                 enable_metrics: true\n\
                 rc_presence: {{per_user: {{per_second: 1000, burst_count: 1000}}}}\n\
                 password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}\n\
                 log: {{level: trace}}\n",
                data = dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .arg("--config")
            .arg(&config)
            // Whatever the caller's environment says: everything.
            .env("RUST_LOG", "trace")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            dir,
            bodies: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = server
                .client
                .get(format!("{}/health", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "presenced did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Sends `body` (raw text, sent as JSON) with `authorization`, records
    /// the answer and returns it.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        authorization: Option<HeaderValue>,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        self.bodies.push((format!("{method} {path}"), text.clone()));
        (status, text)
    }

    async fn json(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let auth = token.map(bearer);
        let (status, text) = self.call(method, path, auth, Some(&body.to_string())).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The access token of a response that issues one; that response is
    /// the one place the token may appear, so it is struck from the record.
    fn issued(&mut self, body: &Value) -> String {
        let token = body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned();
        let last = self.bodies.last_mut().unwrap();
        last.1 = last.1.replace(&token, "<issued here>");
        token
    }

    async fn nonce(&mut self) -> String {
        let (_, body) = self
            .json(
                Method::GET,
                "/_synapse/admin/v1/register",
                None,
                Value::Null,
            )
            .await;
        body["nonce"].as_str().unwrap().to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap()
    }

    /// The seed of the signing key the server generated.
    fn signing_seed(&self) -> String {
        let key =
            std::fs::read_to_string(self.dir.path().join(format!("{SERVER}.signing.key"))).unwrap();
        key.split_whitespace().nth(2).unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

#[tokio::test]
async fn no_secret_in_logs_responses_or_metrics() {
    let mut s = Server::start().await;
    let admin_id = format!("@admin1:{SERVER}");

    // Shared-secret registration: a wrong MAC, a body that does not parse,
    // then the right MAC.
    let nonce = s.nonce().await;
    let (status, _) = s
        .json(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            json!({"nonce": nonce, "username": "admin1", "password": PW_ADMIN, "admin": true, "mac": BAD_MAC}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let nonce = s.nonce().await;
    let (status, _) = s
        .json(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            json!({"nonce": nonce, "username": 5, "password": PW_PARSE, "mac": BAD_MAC}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let nonce = s.nonce().await;
    let good_mac = registration_mac(SHARED_SECRET, &nonce, "admin1", PW_ADMIN, true, None);
    let (status, body) = s
        .json(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            json!({"nonce": nonce, "username": "admin1", "password": PW_ADMIN, "admin": true, "mac": good_mac}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let admin_token = s.issued(&body);

    // Open registration: the UIA round, then the dummy stage; bodies that
    // do not parse, with a password in them.
    let register = "/_matrix/client/v3/register";
    let (status, _) = s
        .json(
            Method::POST,
            register,
            None,
            json!({"username": "open1", "password": PW_OPEN}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = s
        .json(
            Method::POST,
            register,
            None,
            json!({"username": "open1", "password": PW_OPEN, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let open_token = s.issued(&body);
    let truncated = format!(r#"{{"username": "open2", "password": "{PW_PARSE}""#);
    let (status, _) = s.call(Method::POST, register, None, Some(&truncated)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for bad in [
        json!({"username": "open3", "password": PW_PARSE, "device_id": 7, "auth": {"type": "m.login.dummy"}}),
        json!({"username": "open3", "password": {"p": PW_PARSE}, "auth": {"type": "m.login.dummy"}}),
        json!({"username": ["open3"], "password": PW_PARSE}),
    ] {
        let (status, _) = s.json(Method::POST, register, None, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    // Login: wrong password, bodies that do not parse, then the right one.
    let login = "/_matrix/client/v3/login";
    let identifier = json!({"type": "m.id.user", "user": "admin1"});
    let (status, _) = s
        .json(
            Method::POST,
            login,
            None,
            json!({"type": "m.login.password", "identifier": identifier, "password": PW_WRONG}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        json!({"type": "m.login.password", "identifier": identifier, "password": PW_PARSE, "device_id": [1]}),
        json!({"type": "m.login.password", "identifier": identifier, "password": [PW_PARSE]}),
        json!({"type": 1, "identifier": identifier, "password": PW_PARSE}),
    ] {
        let (status, _) = s.json(Method::POST, login, None, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let truncated =
        format!(r#"{{"type": "m.login.password", "user": "admin1", "password": "{PW_PARSE}"#);
    let (status, _) = s.call(Method::POST, login, None, Some(&truncated)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = s
        .json(
            Method::POST,
            login,
            None,
            json!({"type": "m.login.password", "identifier": identifier, "password": PW_ADMIN}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login_token = s.issued(&body);

    // Client and admin APIs with the token in the query and in the header.
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&admin_id));
    let admin_api = format!("/_presenced/admin/v1/presence/{}", enc(&admin_id));
    for (query, header) in [
        (Some(login_token.as_str()), None),
        (None, Some(admin_token.as_str())),
    ] {
        let q = |path: &str| match query {
            Some(t) => format!(
                "{path}{}access_token={t}",
                if path.contains('?') { '&' } else { '?' }
            ),
            None => path.to_owned(),
        };
        let (status, body) = s
            .json(
                Method::POST,
                &q("/_matrix/client/v3/createRoom"),
                header,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = s
            .json(
                Method::PUT,
                &q(&presence),
                header,
                json!({"presence": "online", "status_msg": "hi"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        for path in [
            "/_matrix/client/v3/sync?timeout=0",
            "/_matrix/client/v3/account/whoami",
            admin_api.as_str(),
            presence.as_str(),
        ] {
            let (status, body) = s.json(Method::GET, &q(path), header, Value::Null).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        // Bodies that do not parse, on an authenticated endpoint.
        let (status, _) = s
            .call(
                Method::PUT,
                &q(&presence),
                header.map(bearer),
                Some("{\"presence\":"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    // A token that does not exist, both ways.
    let whoami = "/_matrix/client/v3/account/whoami";
    let (status, _) = s
        .json(
            Method::GET,
            &format!("{whoami}?access_token={FAKE_TOKEN}"),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .json(Method::GET, whoami, Some(FAKE_TOKEN), Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Federation: a client's token sent as the authorization, in the
    // query, and inside malformed X-Matrix headers.
    let txn = json!({"origin": "peer.test", "pdus": [], "edus": []}).to_string();
    let send = "/_matrix/federation/v1/send/t1";
    let bad_headers = [
        format!("Bearer {login_token}"),
        format!("X-Matrix {login_token}"),
        format!("X-Matrix origin=\"{login_token}\",key=\"ed25519:a\",sig=\"{login_token}\""),
        format!("X-Matrix origin=peer.test,destination={SERVER},key=\"ed25519:a\",sig=\"{FAKE_TOKEN}\""),
        format!("X-Matrix origin=peer.test,origin=peer.test,key=\"{login_token}\",sig=abc"),
        format!("Bearer {login_token}, X-Matrix origin=\"peer.test\""),
        login_token.clone(),
        format!("X-Matrix origin=\"peer.test\",key=\"ed25519:a\",sig=\"{SHARED_SECRET}\",x=\"{PW_ADMIN}"),
    ];
    for header in &bad_headers {
        let (status, body) = s
            .call(
                Method::PUT,
                send,
                Some(HeaderValue::from_str(header).unwrap()),
                Some(&txn),
            )
            .await;
        assert!(status.is_client_error(), "{header}: {status} {body}");
    }
    // Bytes that are not visible ASCII around a token.
    let mut raw = b"X-Matrix origin=\"\xff".to_vec();
    raw.extend_from_slice(login_token.as_bytes());
    let (status, _) = s
        .call(
            Method::PUT,
            send,
            Some(HeaderValue::from_bytes(&raw).unwrap()),
            Some(&txn),
        )
        .await;
    assert!(status.is_client_error());
    let (status, _) = s
        .call(
            Method::PUT,
            &format!("{send}?access_token={login_token}"),
            None,
            Some(&txn),
        )
        .await;
    assert!(status.is_client_error());
    let (status, _) = s
        .call(
            Method::GET,
            &format!("/_matrix/key/v2/server?access_token={login_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Deactivation with a wrong then the right password.
    for password in [PW_WRONG, PW_OPEN] {
        let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "open1"}, "password": password}});
        let _ = s
            .json(
                Method::POST,
                "/_matrix/client/v3/account/deactivate",
                Some(&open_token),
                auth,
            )
            .await;
    }
    let (status, _) = s
        .json(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(&login_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = metrics.text().await.unwrap();
    // Give the writer of the last lines a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.log();

    // The capture is real: debug lines of the requests above are there
    // (the most detailed level anything in the process emits since the
    // listeners serve connections themselves), with the query token's
    // place marked.
    assert!(log.contains("room created"), "no info lines captured");
    assert!(log.contains("DEBUG"), "no debug lines captured");
    assert!(
        log.contains("access_token=<redacted>"),
        "no request span captured"
    );
    assert!(metrics.contains("presenced_"), "{metrics}");

    let secrets = [
        ("registration_shared_secret", SHARED_SECRET.to_owned()),
        ("shared-secret registration password", PW_ADMIN.to_owned()),
        ("open registration password", PW_OPEN.to_owned()),
        ("wrong password", PW_WRONG.to_owned()),
        (
            "password in a body that does not parse",
            PW_PARSE.to_owned(),
        ),
        ("a wrong MAC", BAD_MAC.to_owned()),
        ("the right MAC", good_mac.clone()),
        ("a made-up access token", FAKE_TOKEN.to_owned()),
        (
            "the shared-secret registration's token",
            admin_token.clone(),
        ),
        ("the open registration's token", open_token.clone()),
        ("the login's token", login_token.clone()),
        ("the signing key's seed", s.signing_seed()),
    ];
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for line in log.lines().filter(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{what} in the log: {line}"));
        }
        if metrics.contains(secret.as_str()) {
            leaks.push(format!("{what} in /metrics"));
        }
        for (request, body) in &s.bodies {
            if body.contains(secret.as_str()) {
                leaks.push(format!("{what} in the answer to {request}: {body}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
