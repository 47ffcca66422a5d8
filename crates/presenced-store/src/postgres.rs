//! The PostgreSQL backend: the same traits as SQLite ([`Store`],
//! [`OutboxStore`], [`PresenceStore`]) on one pool.
//!
//! Driver: tokio-postgres with deadpool-postgres (see docs/store.md for
//! why not sqlx). The traits are synchronous, as SQLite's calls are, and
//! the server already calls them off its runtime (`store::blocking`, the
//! presence writer thread). So the store owns a small tokio runtime of its
//! own for the connections and answers each call by running its future
//! there and blocking the calling thread until it ends
//! ([`PgStore::run`]): a store call blocks exactly like a SQLite one, from
//! any thread, and the server's runtime never polls a database socket.
//!
//! Durability: PostgreSQL's default `synchronous_commit = on`, so a commit
//! is flushed to the server's WAL before the call returns; an acknowledged
//! PUT survives `kill -9` of presenced and of PostgreSQL.
//!
//! One writer per database: [`PgStore::open`] takes a session-level
//! advisory lock on a connection of its own and holds it as long as the
//! store lives; a second presenced on the same database is refused
//! ([`PgOpenError::Locked`]). The lock is per database (PostgreSQL scopes
//! advisory locks by database), so tests on fresh databases run in
//! parallel.
//!
//! Ownership: a database holding tables presenced did not create (Synapse's
//! own) is refused before anything is written, as `sqlite/ownership.rs`
//! does for files; so is one made for another server_name
//! (`postgres/server_name.rs`).
//!
//! Migrations are the numbered files in `postgres/migrations/`, applied in
//! order in one transaction each, tracked in `presenced_schema_version`.

mod companion;
mod connect;
mod outbox;
mod presence;
mod server_name;
mod store;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use ruma_common::ServerName;
use tokio_postgres::Client;

pub(crate) use connect::error_chain;
pub use connect::{PgConnectOptions, PgOpenError};

use crate::StoreError;

/// Schema migrations, in order; `presenced_schema_version` counts how many
/// ran.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("postgres/migrations/0001_initial.sql"),
    include_str!("postgres/migrations/0002_membership_outbox.sql"),
    include_str!("postgres/migrations/0003_server_name.sql"),
    include_str!("postgres/migrations/0004_companion_memberships.sql"),
    include_str!("postgres/migrations/0005_companion_changes.sql"),
];

/// The advisory lock key one presenced holds on its database
/// (`b"presencd"` as a big-endian integer).
pub(crate) const ADVISORY_LOCK_KEY: i64 = 0x7072_6573_656e_6364;

/// The transaction-level lock every room write takes, so room writes from
/// any number of nodes commit in stream order (`b"presroom"`).
pub(crate) const ROOM_WRITES_LOCK_KEY: i64 = 0x7072_6573_726f_6f6d;

/// The tables presenced creates (every migration's), for the ownership
/// check and for `port-db`.
pub const TABLES: &[&str] = &[
    "users",
    "devices",
    "access_tokens",
    "rooms",
    "events",
    "roomid_userid_membership",
    "userid_filterid_filter",
    "destination_presence_outbox",
    "presence_userid_state",
    "presence_full_marks",
    "presenced_schema_version",
    "presenced_server_name",
    "companion_as_txns",
    "companion_memberships",
    "companion_membership_changes",
];

/// Tables only the PostgreSQL backend has (cluster mode's), not copied by
/// `port-db`: the ownership check counts them as presenced's.
pub const POSTGRES_ONLY_TABLES: &[&str] = &["membership_outbox_head", "membership_outbox"];

/// PostgreSQL-backed [`crate::Store`], [`crate::outbox::OutboxStore`] and
/// [`crate::presence::PresenceStore`].
pub struct PgStore {
    /// Runs the connections' I/O; dropped last (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The connection holding the advisory lock; its session is the lock.
    /// `None` for a store opened beside a running server
    /// ([`Self::open_beside_server`]).
    _lock: Option<Client>,
    /// Where it is, for error messages.
    target: String,
    /// Set once a call found the pool unable to connect, so the log says
    /// it once per outage rather than once per call.
    down: AtomicBool,
}

impl PgStore {
    /// Connects, takes the database's advisory lock, checks that the
    /// database is presenced's (or empty) and `server_name`'s, applies the
    /// migrations, and opens `cp_min` pool connections.
    pub fn open(opts: &PgConnectOptions, server_name: &ServerName) -> Result<Self, PgOpenError> {
        Self::open_with(opts, server_name, Opening::Exclusive)
    }

    /// For a cluster node: many nodes share the database, so none keeps the
    /// one-writer lock. The lock is still taken (waiting for it) around the
    /// migrations, so two nodes starting together do not both migrate.
    pub fn open_shared(
        opts: &PgConnectOptions,
        server_name: &ServerName,
    ) -> Result<Self, PgOpenError> {
        Self::open_with(opts, server_name, Opening::Shared)
    }

    /// For a command that may write next to a running presenced
    /// (`register-user`): as [`Self::open`] when no presenced holds the
    /// database; otherwise without the lock and without migrating, which
    /// needs the schema of this version already there.
    pub fn open_beside_server(
        opts: &PgConnectOptions,
        server_name: &ServerName,
    ) -> Result<Self, PgOpenError> {
        match Self::open_with(opts, server_name, Opening::Exclusive) {
            Err(PgOpenError::Locked { .. }) => Self::open_with(opts, server_name, Opening::Beside),
            other => other,
        }
    }

    fn open_with(
        opts: &PgConnectOptions,
        server_name: &ServerName,
        opening: Opening,
    ) -> Result<Self, PgOpenError> {
        opts.validate().map_err(|reason| PgOpenError::Other {
            target: opts.describe(),
            reason,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // Only socket I/O runs here; the work is in PostgreSQL.
            .worker_threads(2)
            .thread_name("presenced-pg")
            .enable_all()
            .build()
            .map_err(|e| PgOpenError::Other {
                target: opts.describe(),
                reason: format!("cannot start the database runtime: {e}"),
            })?;
        // Spawned and waited for rather than `block_on`: the caller may be
        // a thread of another runtime (the server starts inside its own).
        let owned = opts.clone();
        let name = server_name.to_owned();
        let opened = runtime.spawn(async move { open_async(&owned, &name, opening).await });
        let (lock, pool) = match futures::executor::block_on(opened) {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                retire(runtime);
                return Err(e);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        Ok(Self {
            runtime: Some(runtime),
            pool,
            _lock: lock,
            target: opts.describe(),
            down: AtomicBool::new(false),
        })
    }

    /// Runs `fut` on the store's runtime and blocks the calling thread until
    /// it is done. Safe from any thread, including one inside the server's
    /// runtime (it blocks that thread, as a SQLite call would).
    pub(crate) fn run<T, F>(&self, fut: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        let handle = runtime.spawn(fut);
        match futures::executor::block_on(handle) {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// A pooled connection, waiting for one if all are busy.
    pub(crate) fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Logs the first failure of an outage; [`Self::up`] ends it.
    pub(crate) fn note_failure(&self, e: &StoreError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(target = %self.target, "PostgreSQL call failed: {e}");
        }
    }

    /// A call succeeded: the next failure is news again.
    pub(crate) fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(target = %self.target, "PostgreSQL answers again");
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics (the
        // last handle may go on a server task), so it goes on a thread of
        // its own; the connections close with it.
        if let Some(runtime) = self.runtime.take() {
            retire(runtime);
        }
    }
}

/// Shuts a runtime down on a thread of its own: dropping it on a thread
/// of another runtime panics.
fn retire(runtime: tokio::runtime::Runtime) {
    let _ = std::thread::Builder::new()
        .name("presenced-pg-drop".to_owned())
        .spawn(move || runtime.shutdown_background());
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Backend(error_chain(&e).into())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Backend(error_chain(&e).into())
    }
}

/// Connects one client (the lock holder, or a short-lived one) with the
/// TLS `sslmode` asks for.
pub(crate) async fn connect_client(opts: &PgConnectOptions) -> Result<Client, PgOpenError> {
    let config = opts.driver_config();
    let result = if opts.sslmode == "disable" {
        config
            .connect(tokio_postgres::NoTls)
            .await
            .map(|(client, conn)| {
                tokio::spawn(drive(conn));
                client
            })
    } else {
        config.connect(opts.tls()).await.map(|(client, conn)| {
            tokio::spawn(drive(conn));
            client
        })
    };
    result.map_err(|e| PgOpenError::from_connect(opts, &e))
}

async fn drive<F: Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::debug!("PostgreSQL connection closed: {}", error_chain(&e));
    }
}

/// How a store holds the database's advisory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// The one server: holds the lock for its life and migrates.
    Exclusive,
    /// A command beside a running server: no lock, no migrations.
    Beside,
    /// A cluster node: waits for the lock, migrates, lets it go.
    Shared,
}

async fn open_async(
    opts: &PgConnectOptions,
    server_name: &ServerName,
    opening: Opening,
) -> Result<(Option<Client>, Pool), PgOpenError> {
    let exclusive = opening == Opening::Exclusive;
    let target = opts.describe();
    let other = |reason: String| PgOpenError::Other {
        target: target.clone(),
        reason,
    };
    let mut first = connect_client(opts).await?;
    if exclusive {
        let got: bool = first
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
            .await
            .map_err(|e| other(error_chain(&e)))?
            .get(0);
        if !got {
            return Err(PgOpenError::Locked { target });
        }
    }
    if opening == Opening::Shared {
        // Another node migrating holds it for a moment; a single-node
        // server holds it for good, which a cluster node must not join.
        let mut tries = 0;
        loop {
            let got: bool = first
                .query_one("SELECT pg_try_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
                .await
                .map_err(|e| other(error_chain(&e)))?
                .get(0);
            if got {
                break;
            }
            tries += 1;
            if tries >= 150 {
                return Err(PgOpenError::Locked { target });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    check_ownership(&first, opts).await?;
    // Before the migrations: a refusal writes nothing.
    server_name::check(&first, server_name, opts).await?;
    match opening {
        Opening::Exclusive => {
            migrate(&mut first, opts).await?;
            server_name::record(&mut first, server_name, opts).await?;
        }
        Opening::Beside => {
            check_current(&first, opts).await?;
            server_name::record(&mut first, server_name, opts).await?;
        }
        Opening::Shared => {
            // Recorded under the lock too: nodes starting together agree.
            let settled = match migrate(&mut first, opts).await {
                Ok(()) => server_name::record(&mut first, server_name, opts).await,
                Err(e) => Err(e),
            };
            first
                .execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_LOCK_KEY])
                .await
                .map_err(|e| other(error_chain(&e)))?;
            settled?;
        }
    }
    let lock = exclusive.then_some(first);

    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if opts.sslmode == "disable" {
        Manager::from_config(opts.driver_config(), tokio_postgres::NoTls, manager_config)
    } else {
        Manager::from_config(opts.driver_config(), opts.tls(), manager_config)
    };
    let pool = Pool::builder(manager)
        .max_size(opts.cp_max)
        .build()
        .map_err(|e| other(e.to_string()))?;
    // deadpool opens connections on demand; open cp_min now, so the first
    // requests do not pay for the handshakes (Synapse's cp_min).
    let mut warm = Vec::new();
    for _ in 0..opts.cp_min {
        warm.push(pool.get().await.map_err(|e| other(error_chain(&e)))?);
    }
    drop(warm);
    Ok((lock, pool))
}

/// Refuses a database that holds tables presenced did not create.
async fn check_ownership(client: &Client, opts: &PgConnectOptions) -> Result<(), PgOpenError> {
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| PgOpenError::Other {
            target: opts.describe(),
            reason: error_chain(&e),
        })?;
    let foreign: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|t| !TABLES.contains(&t.as_str()) && !POSTGRES_ONLY_TABLES.contains(&t.as_str()))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    let mut tables = foreign
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if foreign.len() > 5 {
        tables.push_str(&format!(" and {} more", foreign.len() - 5));
    }
    Err(PgOpenError::NotOurs {
        target: opts.describe(),
        tables,
    })
}

/// Without the lock, nothing is migrated: the schema must be this
/// binary's already.
async fn check_current(client: &Client, opts: &PgConnectOptions) -> Result<(), PgOpenError> {
    let found: i64 = client
        .query_opt("SELECT version FROM presenced_schema_version", &[])
        .await
        .ok()
        .flatten()
        .map_or(0, |r| r.get(0));
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(PgOpenError::SchemaTooNew {
            target: opts.describe(),
            found,
            known,
        });
    }
    if found < known {
        return Err(PgOpenError::Other {
            target: opts.describe(),
            reason: format!(
                "schema version {found}, this presenced needs {known}: start presenced once \
                 to set the database up"
            ),
        });
    }
    Ok(())
}

/// Applies the migrations this database has not had; refuses a schema
/// from a newer presenced.
async fn migrate(client: &mut Client, opts: &PgConnectOptions) -> Result<(), PgOpenError> {
    let target = opts.describe();
    let other = |e: tokio_postgres::Error| PgOpenError::Other {
        target: target.clone(),
        reason: error_chain(&e),
    };
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS presenced_schema_version (
                 one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                 version BIGINT NOT NULL
             )",
        )
        .await
        .map_err(other)?;
    let done: i64 = client
        .query_opt("SELECT version FROM presenced_schema_version", &[])
        .await
        .map_err(other)?
        .map_or(0, |r| r.get(0));
    let known = MIGRATIONS.len() as i64;
    if done > known {
        return Err(PgOpenError::SchemaTooNew {
            target: target.clone(),
            found: done,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let version = i as i64 + 1;
        let tx = client.transaction().await.map_err(other)?;
        tx.batch_execute(sql).await.map_err(other)?;
        tx.execute(
            "INSERT INTO presenced_schema_version (one, version) VALUES (TRUE, $1) \
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            &[&version],
        )
        .await
        .map_err(other)?;
        tx.commit().await.map_err(other)?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    Ok(())
}

/// A failed call: logged once per outage, returned to the caller.
pub(crate) fn backend<E: Into<StoreError>>(store: &PgStore, e: E) -> StoreError {
    let e = e.into();
    store.note_failure(&e);
    e
}
