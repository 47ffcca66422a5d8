//! The real `presenced` process stopped hard and softly. `kill -9`: every
//! acknowledged presence change and status message is back after a
//! restart, and a user whose device stopped syncing while the server was
//! down times out afterwards. SIGTERM: waiting long-polls answer at once
//! and the process exits cleanly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use presenced_server::api::synapse_admin::registration_mac;
use reqwest::StatusCode;
use serde_json::{json, Value};

use presenced_server::store::testing::FreshPgDatabase;

use crate::helpers::{enc, test_database, SECRET};

/// One `presenced` process on a fixed data directory and port (also
/// `server_name.rs`'s).
pub(crate) struct Process {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Process {
    pub(crate) async fn start(config: &std::path::Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while process
            .get("/_matrix/client/versions", None)
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "presenced did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Option<(StatusCode, Value)> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let status = response.status();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Registers through the shared-secret API; returns (user id, token).
    pub(crate) async fn register(&self, localpart: &str) -> (String, String) {
        let (_, nonce) = self.get("/_synapse/admin/v1/register", None).await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap();
        let mac = registration_mac(SECRET, nonce, localpart, "password", false, None);
        let body = json!({"nonce": nonce, "username": localpart, "password": "password", "admin": false, "mac": mac});
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/_synapse/admin/v1/register",
                None,
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["user_id"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn presence(&self, token: &str, user: &str) -> Value {
        let path = format!("/_matrix/client/v3/presence/{}/status", enc(user));
        let (status, body) = self.get(&path, Some(token)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// SIGTERM, then the exit status (within a generous bound).
    pub(crate) async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "presenced did not exit on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown flush, no goodbye.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a config for one `presenced` process on `port` with its data in
/// `dir/data` (and in `db`, a PostgreSQL run's database); `extra` adds
/// YAML lines.
fn write_config(
    dir: &std::path::Path,
    port: u16,
    db: Option<&FreshPgDatabase>,
    extra: &str,
) -> std::path::PathBuf {
    let database = db.map_or_else(String::new, |db| {
        format!("database: {{url: \"{}\"}}\n", db.url())
    });
    let config = dir.join("presenced.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: test.local
listeners: [{{port: {port}, bind_addresses: [127.0.0.1]}}]
data_dir: {}
registration_shared_secret: {SECRET}
password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}
log: {{level: warn}}
{database}{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn acknowledged_presence_survives_kill_9_and_stale_devices_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = test_database();
    let with_sync_timeout = |timeout: &str| {
        let rc = "rc_presence: {per_user: {per_second: 1000, burst_count: 1000}}";
        write_config(
            dir.path(),
            port,
            db.as_ref(),
            &format!("{rc}\npresence: {{sync_online_timeout: {timeout}}}\n"),
        )
    };
    let config = with_sync_timeout("5m");

    let server = Process::start(&config, port).await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(server.register(&format!("user{i}")).await);
    }
    let (syncer, syncer_token) = server.register("syncer").await;
    // Twenty concurrent PUTs (grouped commits); each answered 200 only
    // once stored. Online, so the activity keeps their (pseudo-)devices
    // fresh for the 5-minute sync timeout across the restart.
    let puts = users.iter().enumerate().map(|(i, (user, token))| {
        let path = format!("/_matrix/client/v3/presence/{}/status", enc(user));
        let body = json!({"presence": "online", "status_msg": format!("message {i}")});
        let server = &server;
        async move {
            server
                .send(reqwest::Method::PUT, &path, Some(token), body)
                .await
        }
    });
    for (status, body) in futures::future::join_all(puts).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The syncer is online because a device syncs, then the server dies.
    let (status, _) = server
        .get(
            "/_matrix/client/v3/sync?set_presence=online&timeout=0",
            Some(&syncer_token),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.presence(&syncer_token, &syncer).await["presence"],
        "online"
    );
    server.kill_9();

    let server = Process::start(&config, port).await;
    for (i, (user, token)) in users.iter().enumerate() {
        let body = server.presence(token, user).await;
        assert_eq!(body["presence"], "online", "{user}: {body}");
        assert_eq!(body["status_msg"], format!("message {i}"), "{user}: {body}");
    }
    let body = server.presence(&syncer_token, &syncer).await;
    assert_eq!(body["presence"], "online", "restored, not yet timed out");
    server.kill_9();

    // Restarted with a short sync timeout: nobody syncs for the syncer any
    // more, so it goes offline on its own (2 s plus the timer's slack),
    // and its status survives the timeout.
    with_sync_timeout("2s");
    let server = Process::start(&config, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = server.presence(&syncer_token, &syncer).await;
        if body["presence"] == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "syncer never timed out: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sigterm_answers_long_polls_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = test_database();
    let config = write_config(dir.path(), port, db.as_ref(), "");
    let server = Process::start(&config, port).await;
    let (_, token) = server.register("sleeper").await;
    let (status, first) = server
        .get("/_matrix/client/v3/sync?set_presence=offline", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();
    // A two-minute long-poll with nothing to wake it.
    let client = server.client.clone();
    let url = format!(
        "{}/_matrix/client/v3/sync?set_presence=offline&timeout=120000&since={since}",
        server.base
    );
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let response = client.get(url).bearer_auth(token).send().await.unwrap();
        (response.status(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the long-poll should be waiting");
    let exit = server.terminate().await;
    assert!(exit.success(), "{exit:?}");
    let (status, waited) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        waited < Duration::from_secs(60),
        "answered at shutdown, not at its timeout: {waited:?}"
    );
}
