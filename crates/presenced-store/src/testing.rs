//! Test support: a fresh PostgreSQL database per test, dropped after it.
//!
//! The server to make them on is `PRESENCED_TEST_POSTGRES` (a URL whose
//! database is the one to connect to for `CREATE DATABASE`), by default
//! the machine's `postgres://postgres@127.0.0.1:5432/postgres`. When it
//! cannot be reached a test skips with a plain message, unless
//! `PRESENCED_REQUIRE_POSTGRES=1` (set by `.ci/run`) makes that a failure,
//! so CI can never pass without the PostgreSQL tests.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use presenced_engine::Timestamp;
use ruma_common::{RoomId, UserId};

use crate::postgres::{connect_client, error_chain, PgConnectOptions};
use crate::NewEvent;

/// `user`'s `m.room.member` event with `membership` in `room`, with an
/// event ID unique in this process: for tests that write rooms.
pub fn member_event(room: &RoomId, user: &UserId, membership: &str) -> NewEvent {
    static EVENTS: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "$ev{}_{}",
        std::process::id(),
        EVENTS.fetch_add(1, Ordering::Relaxed)
    );
    NewEvent {
        event_id: id.try_into().expect("a valid event ID"),
        room_id: room.to_owned(),
        sender: user.to_owned(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(user.to_string()),
        content: serde_json::json!({ "membership": membership }),
        origin_server_ts: Timestamp(1),
        txn: None,
    }
}

/// The default admin URL for tests.
pub const DEFAULT_TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one test; dropped (with its connections) on drop.
pub struct FreshPgDatabase {
    /// Options naming the new database.
    pub opts: PgConnectOptions,
    admin: PgConnectOptions,
}

/// Whether PostgreSQL tests must run (CI) rather than skip.
pub fn postgres_required() -> bool {
    std::env::var("PRESENCED_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The admin connection options tests use.
pub fn admin_options() -> PgConnectOptions {
    let url = std::env::var("PRESENCED_TEST_POSTGRES")
        .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.to_owned());
    PgConnectOptions::from_url(&url).expect("PRESENCED_TEST_POSTGRES is a PostgreSQL URL")
}

impl FreshPgDatabase {
    /// Creates `presenced_test_<what>_<pid>_<n>`; `None` (after saying so
    /// on stderr) when PostgreSQL is not reachable and not required.
    pub fn create(what: &str) -> Option<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = admin_options();
        let name = format!(
            "presenced_test_{}_{}_{}",
            what.chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                })
                .take(30)
                .collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Two calls: DROP/CREATE DATABASE cannot share an (implicit)
        // transaction.
        let made = admin_batch(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .and_then(|()| admin_batch(&admin, &format!("CREATE DATABASE {name}")));
        match made {
            Ok(()) => Some(Self {
                // Small pools: tests run in parallel, several servers each,
                // under PostgreSQL's 100 connections.
                opts: PgConnectOptions {
                    cp_min: 1,
                    cp_max: 4,
                    ..admin.with_dbname(&name)
                },
                admin,
            }),
            Err(e) if postgres_required() => {
                panic!("PostgreSQL tests are required (PRESENCED_REQUIRE_POSTGRES=1) but: {e}")
            }
            Err(e) => {
                eprintln!("skipped: PostgreSQL test `{what}`: {e}");
                None
            }
        }
    }

    /// A `postgres://` URL for the new database (for configs and env).
    pub fn url(&self) -> String {
        let o = &self.opts;
        let login = match &o.password {
            Some(p) => format!("{}:{p}", o.user),
            None => o.user.clone(),
        };
        format!(
            "postgres://{login}@{}:{}/{}?sslmode={}&cp_min={}&cp_max={}",
            o.host, o.port, o.dbname, o.sslmode, o.cp_min, o.cp_max
        )
    }
}

impl Drop for FreshPgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.opts.dbname);
        if let Err(e) = admin_batch(&self.admin, &sql) {
            eprintln!("could not drop test database {}: {e}", self.opts.dbname);
        }
    }
}

/// Runs statements on the admin database from a thread of its own (the
/// caller may be inside a tokio runtime, where blocking on another is not
/// allowed).
pub fn admin_batch(admin: &PgConnectOptions, sql: &str) -> Result<(), String> {
    let admin = admin.clone();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = connect_client(&admin).await.map_err(|e| e.to_string())?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| error_chain(&e))
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}
