//! The `presenced` binary's sub-commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use presenced_server::config::EXAMPLE_CONFIG;
use presenced_server::store::testing::FreshPgDatabase;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app_with;

fn presenced() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presenced"))
}

#[test]
fn generate_config_prints_the_example() {
    let out = presenced().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), EXAMPLE_CONFIG);
}

#[test]
fn generate_appservice_prints_and_writes_a_registration_that_loads() {
    use presenced_server::companion::registration::Registration;
    let out = presenced()
        .args(["generate-appservice", "--url", "http://127.0.0.1:8008/"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Registration = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.url, "http://127.0.0.1:8008");
    assert_eq!(printed.namespaces.users[0].regex, "@.*");
    assert!(!printed.namespaces.users[0].exclusive);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("presenced-appservice.yaml");
    let out = presenced()
        .args(["generate-appservice", "--url", "http://presenced:8008"])
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    let written = Registration::load(&file).unwrap();
    assert_eq!(written.url, "http://presenced:8008");
    // Fresh tokens every time.
    assert_ne!(written.hs_token, printed.hs_token);
    assert_ne!(written.as_token, printed.as_token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the tokens");
    }
}

#[test]
fn bad_config_fails_start_up_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "server_name: example.org\npresence:\n  idle_timeout: soon\n",
    )
    .unwrap();
    let out = presenced().arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("idle_timeout") && err.contains("line 3"),
        "{err}"
    );
}

#[tokio::test]
async fn register_user_then_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("presenced.yaml");
    let data = dir.path().join("data");
    let db = crate::helpers::test_database();
    let url = db.as_ref().map(FreshPgDatabase::url);
    let database = url
        .as_ref()
        .map_or_else(String::new, |u| format!("database: {{url: \"{u}\"}}\n"));
    std::fs::write(
        &file,
        format!(
            "server_name: test.local\ndata_dir: {}\npassword_hashing:\n  memory_kib: 64\n  iterations: 1\n  parallelism: 1\n{database}",
            data.display()
        ),
    )
    .unwrap();
    let out = presenced()
        .args([
            "--config",
            file.to_str().unwrap(),
            "register-user",
            "--user",
            "admin",
            "--password",
            "pw",
            "--admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("@admin:test.local"));

    // A server on the same data directory (and database) lets the new
    // user in.
    let app = spawn_app_with(|c| {
        c.data_dir = data.clone();
        c.database.url = url.clone();
    })
    .await;
    let login = json!({ "type": "m.login.password", "user": "admin", "password": "pw" });
    let (status, body) = app.post("/_matrix/client/v3/login", None, login).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn version_names_the_crate_version() {
    let out = presenced().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!("presenced {}", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    // Built from a git checkout: the commit follows, `(git <12 hex>)`.
    if let Some(rest) = text
        .trim()
        .strip_prefix(&expected)
        .filter(|r| !r.is_empty())
    {
        let hash = rest
            .trim()
            .strip_prefix("(git ")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{text}"
        );
    }
}

/// Synapse's generated config with its `/data` paths in `dir` and its
/// listener on `port` (IPv4 only, so the test needs no IPv6); otherwise as
/// Synapse wrote it.
fn synapse_config_in(dir: &Path, port: u16) -> PathBuf {
    let text = include_str!("../fixtures/synapse-homeserver.yaml")
        .replace("/data", dir.to_str().unwrap())
        .replace("    - ::1\n", "")
        .replace("port: 8008", &format!("port: {port}"));
    std::fs::write(
        dir.join("example.com.log.config"),
        include_str!("../fixtures/synapse-example.com.log.config")
            .replace("/data", dir.to_str().unwrap()),
    )
    .unwrap();
    let path = dir.join("homeserver.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the child if the test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn synapse_generated_config_starts_presenced_with_one_warning_and_a_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = synapse_config_in(dir.path(), port);
    let (mut server, log) = start_up(&config, port).await;
    // The pid file holds the process, as Synapse's does.
    let pid_file = dir.path().join("homeserver.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), server.0.id().to_string());
    // Its database is where Synapse's would be, new and presenced's.
    assert!(dir.path().join("homeserver.db").exists());

    let sent = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = server.0.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!pid_file.exists(), "pid file left after a clean shutdown");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ignored Synapse options"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(
            "ignored Synapse options: media_store_path, report_stats, macaroon_secret_key, \
             form_secret, trusted_key_servers"
        ),
        "{stderr}"
    );
    // The log config's root level (INFO) is taken, and the rest said so.
    assert!(stderr.contains("using its root level (info)"), "{stderr}");
}

/// A database file made by another program: Synapse's `schema_version`
/// and `event_json`, next to a table whose name presenced shares.
fn foreign_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_version (lock CHAR(1) NOT NULL DEFAULT 'X', version INTEGER NOT NULL);
         INSERT INTO schema_version (version) VALUES (93);
         CREATE TABLE event_json (event_id TEXT NOT NULL, json TEXT NOT NULL);
         CREATE TABLE events (stream_ordering INTEGER PRIMARY KEY, event_id TEXT);",
    )
    .unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_database_presenced_did_not_create_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = synapse_config_in(dir.path(), free_port());
    // Without the signing key Synapse generated: refusing must not make one.
    std::fs::remove_file(dir.path().join("example.com.signing.key")).ok();
    let db = dir.path().join("homeserver.db");
    foreign_database(&db);
    let before = std::fs::read(&db).unwrap();
    let files_before = listing(dir.path());

    for args in [
        vec![],
        vec!["register-user", "--user", "admin", "--password", "pw"],
    ] {
        let out = presenced()
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        for part in [
            "is not presenced's database",
            "schema_version",
            "Synapse",
            "database.args.database",
        ] {
            assert!(
                stderr.contains(part),
                "{args:?}: {part:?} missing: {stderr}"
            );
        }
        assert_eq!(std::fs::read(&db).unwrap(), before, "the file changed");
        assert_eq!(listing(dir.path()), files_before, "files were added");
    }
}

/// Starts presenced on `config`, its stderr in `stderr.log` beside it, and
/// waits until `port` is up. Returns the process and the stderr file.
async fn start_up(config: &Path, port: u16) -> (Running, PathBuf) {
    let log = config.with_file_name("stderr.log");
    let child = presenced()
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    wait_up(&mut server, port, &log).await;
    (server, log)
}

/// Waits until `/health` on `port` answers 200 (every listener serves it),
/// or the process exits.
async fn wait_up(server: &mut Running, port: u16, stderr: &Path) {
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(&url)
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "exited {status}: {}",
                std::fs::read_to_string(stderr).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "presenced did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `homeserver.yaml` in `dir` with Synapse's way of naming the SQLite
/// database and the signing key (both in `dir`), a shared secret, and then
/// `rest` (the listeners).
fn listeners_config_in(dir: &Path, rest: &str) -> PathBuf {
    let config = dir.join("homeserver.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: example.com
database: {{name: sqlite3, args: {{database: {db}}}}}
signing_key_path: {key}
registration_shared_secret: s
{rest}",
            db = dir.join("presenced.db").display(),
            key = dir.join("example.com.signing.key").display(),
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn synapse_listener_types_metrics_and_manhole() {
    let dir = tempfile::tempdir().unwrap();
    let (client, metrics, manhole) = (free_port(), free_port(), free_port());
    let config = listeners_config_in(
        dir.path(),
        &format!(
            "enable_metrics: true
listeners:
  - {{port: {client}, bind_addresses: ['127.0.0.1'], type: http, resources: [{{names: [client, media], compress: true}}]}}
  - {{port: {metrics}, bind_addresses: ['127.0.0.1'], type: metrics}}
  - {{port: {manhole}, bind_addresses: ['127.0.0.1'], type: manhole}}
"
        ),
    );
    let (mut server, log) = start_up(&config, client).await;
    wait_up(&mut server, metrics, &log).await;
    // The metrics listener serves /metrics and not the client API.
    let m = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(m.status(), StatusCode::OK);
    assert!(m.text().await.unwrap().contains("# TYPE"));
    let v = reqwest::get(format!(
        "http://127.0.0.1:{metrics}/_matrix/client/versions"
    ))
    .await
    .unwrap();
    assert_eq!(v.status(), StatusCode::NOT_FOUND);
    // The manhole port is not opened.
    assert!(std::net::TcpStream::connect(("127.0.0.1", manhole)).is_err());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("type manhole"), "{stderr}");
    assert!(
        stderr.contains("resources not served by presenced: media"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ipv6_and_ipv4_wildcards_on_one_port_start_as_with_synapse() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("no IPv6 on this host; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = listeners_config_in(
        dir.path(),
        &format!(
            "listeners:
  - {{port: {port}, bind_addresses: ['0.0.0.0', '::'], type: http, resources: [{{names: [client]}}]}}
"
        ),
    );
    let _server = start_up(&config, port).await;
    let health = reqwest::get(format!("http://[::1]:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[test]
fn a_pid_file_naming_a_running_process_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = synapse_config_in(dir.path(), free_port());
    // This test's own process is running.
    let pid_file = dir.path().join("homeserver.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let out = presenced().arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pid_file") && stderr.contains("is running"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        std::process::id().to_string()
    );
}
