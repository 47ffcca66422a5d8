//! A data directory (or PostgreSQL database) keeps the `server_name` it was
//! made for, with the real binary: starting, `register-user` and `port-db`
//! under another name are refused with both names and what to do, and the
//! data stays as it was (the old name still starts, old tokens still
//! work). A database made before the name was recorded is judged by its
//! users, as Synapse judges its own. Runs on SQLite, and on PostgreSQL
//! under `PRESENCED_TEST_BACKEND=postgres`; the `port-db` test needs
//! PostgreSQL (skipped with a message when none answers).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use presenced_server::store::testing::{admin_batch, FreshPgDatabase};
use reqwest::StatusCode;
use tempfile::TempDir;

use crate::crash::{free_port, Process};
use crate::helpers::{test_database, SECRET};

fn presenced() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presenced"))
}

/// One data directory, and the PostgreSQL database of a PostgreSQL run.
struct Data {
    dir: TempDir,
    db: Option<FreshPgDatabase>,
}

impl Data {
    fn new() -> Self {
        Self::with(test_database())
    }

    fn with(db: Option<FreshPgDatabase>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            db,
        }
    }

    /// A config naming `server_name`, listening on `port`, on this data.
    fn config(&self, server_name: &str, port: u16) -> PathBuf {
        let database = self.db.as_ref().map_or_else(String::new, |db| {
            format!("database: {{url: \"{}\"}}\n", db.url())
        });
        let path = self.dir.path().join(format!("{server_name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "server_name: {server_name}
listeners: [{{port: {port}, bind_addresses: [127.0.0.1]}}]
data_dir: {}
registration_shared_secret: {SECRET}
password_hashing: {{memory_kib: 64, iterations: 1, parallelism: 1}}
log: {{level: warn}}
{database}",
                self.data_dir().display()
            ),
        )
        .unwrap();
        path
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The SQLite file and its WAL (empty when there is none).
    fn sqlite_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let file = self.data_dir().join("presenced.db");
        let wal = self.data_dir().join("presenced.db-wal");
        (
            std::fs::read(file).unwrap(),
            std::fs::read(wal).unwrap_or_default(),
        )
    }

    /// Whether a user of `server` is stored (any user for `None`).
    fn has_user_on(&self, server: Option<&str>) -> bool {
        let pattern = server.map_or_else(|| "%".to_owned(), |s| format!("%:{s}"));
        match &self.db {
            None => {
                let conn =
                    rusqlite::Connection::open(self.data_dir().join("presenced.db")).unwrap();
                let n: i64 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM users WHERE user_id LIKE ?1",
                        [&pattern],
                        |r| r.get(0),
                    )
                    .unwrap();
                n > 0
            }
            Some(db) => {
                // `admin_batch` returns no rows: a found user is an error.
                let sql = format!(
                    "DO $$ BEGIN IF EXISTS (SELECT 1 FROM users WHERE user_id LIKE '{pattern}') \
                     THEN RAISE EXCEPTION 'found such a user'; END IF; END $$"
                );
                match admin_batch(&db.opts, &sql) {
                    Ok(()) => false,
                    Err(e) if e.contains("found such a user") => true,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    /// Deletes every user (with their devices and tokens).
    fn delete_users(&self) {
        let sql = "DELETE FROM access_tokens; DELETE FROM devices; DELETE FROM users";
        match &self.db {
            None => rusqlite::Connection::open(self.data_dir().join("presenced.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Some(db) => admin_batch(&db.opts, sql).unwrap(),
        }
    }

    /// Makes the database look like one made before presenced recorded
    /// its server_name: the same schema without migration 3 (and the
    /// later ones, which the next open applies again).
    fn forget_recorded_name(&self) {
        let sql = "DROP TABLE IF EXISTS presenced_server_name; \
                   DROP TABLE IF EXISTS companion_as_txns; \
                   DROP TABLE IF EXISTS companion_memberships; \
                   DROP TABLE IF EXISTS companion_membership_changes";
        match &self.db {
            None => {
                let conn =
                    rusqlite::Connection::open(self.data_dir().join("presenced.db")).unwrap();
                conn.execute_batch(&format!("{sql}; PRAGMA user_version = 2;"))
                    .unwrap();
            }
            Some(db) => admin_batch(
                &db.opts,
                &format!("{sql}; UPDATE presenced_schema_version SET version = 2"),
            )
            .unwrap(),
        }
    }
}

/// `presenced register-user` under `config`: (success, stdout + stderr).
fn register_user(config: &Path, user: &str) -> (bool, String) {
    let out = presenced()
        .arg("--config")
        .arg(config)
        .args(["register-user", "--user", user, "--password", "pw"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Starts `presenced` and waits for it to exit (a refused start exits at
/// once); one that is still running after 30 s started, which fails the
/// test. Returns stderr.
fn start_expecting_refusal(config: &Path, stderr_file: &Path) -> String {
    let mut child = presenced()
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "presenced started under another server_name: {}",
                std::fs::read_to_string(stderr_file).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(stderr_file).unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    stderr
}

/// The refusal names both server names and the two ways out.
fn assert_names_both(text: &str, recorded: &str, configured: &str) {
    for part in [
        format!("belongs to server_name {recorded}"),
        format!("the config says server_name: {configured}"),
        format!("Set server_name back to {recorded}"),
        "fresh data_dir".to_owned(),
        "empty PostgreSQL database".to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} missing: {text}");
    }
}

#[tokio::test]
async fn a_data_dir_made_under_one_server_name_does_not_start_under_another() {
    let data = Data::new();
    let port = free_port();
    let first = data.config("first.test", port);
    let renamed = data.config("renamed.test", port);

    let server = Process::start(&first, port).await;
    let (alice, token) = server.register("alice").await;
    assert!(server.terminate().await.success());

    let before = data.db.is_none().then(|| data.sqlite_bytes());
    let stderr = start_expecting_refusal(&renamed, &data.dir.path().join("renamed.log"));
    assert_names_both(&stderr, "first.test", "renamed.test");
    // Refused before anything was written: on SQLite the file and its WAL
    // are byte for byte the same, and nothing was made for the new name.
    if let Some(before) = before {
        assert!(data.sqlite_bytes() == before, "the database changed");
    }
    assert!(!data.has_user_on(Some("renamed.test")));
    assert!(
        !data.data_dir().join("renamed.test.signing.key").exists(),
        "a signing key was made for the refused name"
    );

    // The data is as it was: the old name starts, the old token works.
    let server = Process::start(&first, port).await;
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.as_str());
    assert!(server.terminate().await.success());
}

#[test]
fn register_user_under_another_server_name_is_refused() {
    let data = Data::new();
    let port = free_port();
    let first = data.config("first.test", port);
    let renamed = data.config("renamed.test", port);

    let (ok, text) = register_user(&first, "alice");
    assert!(ok, "{text}");
    let (ok, text) = register_user(&renamed, "bob");
    assert!(!ok, "a user of another server_name was written: {text}");
    assert_names_both(&text, "first.test", "renamed.test");
    assert!(!data.has_user_on(Some("renamed.test")));
    // The right name still registers.
    let (ok, text) = register_user(&first, "carol");
    assert!(ok, "{text}");
}

#[test]
fn a_database_from_before_recorded_names_is_judged_by_its_users() {
    let data = Data::new();
    let port = free_port();
    let first = data.config("first.test", port);
    let renamed = data.config("renamed.test", port);
    let (ok, text) = register_user(&first, "alice");
    assert!(ok, "{text}");
    data.forget_recorded_name();

    // Its users are first.test's: another name is refused, naming one.
    let (ok, text) = register_user(&renamed, "bob");
    assert!(!ok, "{text}");
    assert_names_both(&text, "first.test", "renamed.test");
    assert!(text.contains("@alice:first.test"), "{text}");
    assert!(!data.has_user_on(Some("renamed.test")));
    let stderr = start_expecting_refusal(&renamed, &data.dir.path().join("renamed.log"));
    assert_names_both(&stderr, "first.test", "renamed.test");

    // The right name opens it, and from then on the name is recorded:
    // with every user gone, another name is still refused.
    let (ok, text) = register_user(&first, "carol");
    assert!(ok, "{text}");
    data.delete_users();
    let (ok, text) = register_user(&renamed, "bob");
    assert!(!ok, "{text}");
    assert_names_both(&text, "first.test", "renamed.test");
}

#[test]
fn an_empty_database_from_before_recorded_names_takes_the_configured_one() {
    let data = Data::new();
    let port = free_port();
    let first = data.config("first.test", port);
    let renamed = data.config("renamed.test", port);
    // The schema and no users, as before the name was recorded.
    let (ok, text) = register_user(&first, "alice");
    assert!(ok, "{text}");
    data.delete_users();
    data.forget_recorded_name();
    assert!(!data.has_user_on(None));

    let (ok, text) = register_user(&renamed, "bob");
    assert!(
        ok,
        "no user says otherwise, so renamed.test is taken: {text}"
    );
    let (ok, text) = register_user(&first, "alice");
    assert!(!ok, "{text}");
    assert_names_both(&text, "renamed.test", "first.test");
}

/// `port-db` from `sqlite` into the config `pg` (server_name
/// `server_name`): (success, stdout + stderr).
fn port_db(sqlite: &Path, pg: &Path) -> (bool, String) {
    let out = presenced()
        .args(["port-db", "--sqlite-database"])
        .arg(sqlite)
        .arg("--postgres-config")
        .arg(pg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn port_db_refuses_another_server_name_and_carries_the_name_over() {
    let (Some(target), Some(taken)) = (
        FreshPgDatabase::create("port_db_name"),
        FreshPgDatabase::create("port_db_taken"),
    ) else {
        return;
    };
    // A SQLite data directory of first.test.
    let source = Data::with(None);
    let port = free_port();
    let (ok, text) = register_user(&source.config("first.test", port), "alice");
    assert!(ok, "{text}");
    let sqlite = source.data_dir().join("presenced.db");

    // Into PostgreSQL under another name: refused, nothing copied.
    let on_target = Data::with(Some(target));
    let (ok, text) = port_db(&sqlite, &on_target.config("renamed.test", port));
    assert!(!ok, "{text}");
    assert_names_both(&text, "first.test", "renamed.test");
    assert!(text.contains(&sqlite.display().to_string()), "{text}");

    // A target already made for another name: refused for the name (not
    // only for holding rows).
    let on_taken = Data::with(Some(taken));
    let (ok, text) = register_user(&on_taken.config("other.test", port), "zed");
    assert!(ok, "{text}");
    let (ok, text) = port_db(&sqlite, &on_taken.config("first.test", port));
    assert!(!ok, "{text}");
    assert_names_both(&text, "other.test", "first.test");
    assert!(!on_taken.has_user_on(Some("first.test")));

    // The matching name ports, and the target keeps it.
    let (ok, text) = port_db(&sqlite, &on_target.config("first.test", port));
    assert!(ok, "{text}");
    assert!(on_target.has_user_on(Some("first.test")));
    let (ok, text) = register_user(&on_target.config("renamed.test", port), "bob");
    assert!(!ok, "{text}");
    assert_names_both(&text, "first.test", "renamed.test");
}
