//! Turning a [`Config`] into a ready [`AppState`]: open the store, settle
//! the registration secret, start presence and the federation sender.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ruma_common::{OwnedRoomId, OwnedUserId};

use crate::api::state::{AppState, FederationParts, RoomParts, StateReceivers};
use crate::companion::bootstrap::{self, Bootstrap};
use crate::companion::members::MembershipFeed;
use crate::companion::Companion;
use crate::config::{Config, Secret};
use crate::federation::client::{ClientError, FederationClient};
use crate::federation::keys::{KeyCacheConfig, KeyFetcher};
use crate::federation::sender::OutboundPresence;
use crate::federation::{RemoteKeyCache, ServerSigningKey};
use crate::homeserver::room_members::RoomMembers;
use crate::homeserver::room_writer::RoomWriter;
use crate::homeserver::rooms;
use crate::process::database::{database_target, DatabaseTarget};
use crate::store::membership::Membership;
use crate::store::postgres::{PgOpenError, PgStore};
use crate::store::presence::{PresenceStore, SqlitePresenceStore, StoreFailure};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::util::ids;

/// Name of the generated secret's file inside `data_dir`.
pub const SECRET_FILE: &str = "registration_shared_secret";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database {what}: {source}")]
    Database {
        /// The SQLite file, or PostgreSQL's host, port and database.
        what: String,
        /// The cause.
        source: StoreError,
    },
    /// PostgreSQL could not be opened; the message names host, port and
    /// database, never the password.
    #[error(transparent)]
    Postgres(#[from] PgOpenError),
    /// The presence table could not be opened.
    #[error("cannot open the presence store {what}: {source}")]
    PresenceStore {
        /// Where.
        what: String,
        /// The cause.
        source: StoreFailure,
    },
    /// `database:` is not valid.
    #[error("database: {0}")]
    DatabaseConfig(String),
    /// The database file holds another program's tables (Synapse's); the
    /// message says how to give presenced its own.
    #[error("{0}")]
    NotOurDatabase(Box<dyn std::error::Error + Send + Sync>),
    /// The presence driver could not start (modules, presence store, the
    /// cluster's NATS).
    #[error(transparent)]
    Presence(#[from] crate::presence::startup::StartError),
    /// Companion mode could not start (the registration, the admin token).
    #[error(transparent)]
    Companion(#[from] crate::companion::CompanionError),
    /// The signing key file could not be read or generated.
    #[error(transparent)]
    SigningKey(#[from] crate::federation::signing::SigningKeyError),
    /// The federation client could not be built (TLS trust settings).
    #[error(transparent)]
    FederationClient(#[from] ClientError),
    /// The room writer thread could not be started.
    #[error("cannot start the room writer thread: {0}")]
    RoomWriter(#[source] std::io::Error),
    /// The `pid_file` could not be written, or names a running process.
    #[error("pid_file {path}: {message}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The generated secret could not be read or written.
    #[error("registration secret file {path}: {source}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where the registration secret came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOrigin {
    /// `registration_shared_secret` in the config.
    Configured,
    /// Read from the file generated at an earlier start.
    Stored(PathBuf),
    /// Generated now and written to this file; the caller shows it once.
    Generated(PathBuf),
}

/// Synapse's `pid_file`: holds the process ID while the server runs.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's ID to `path`, unless the file names another
    /// process that is still running (a second server on the same config).
    pub fn write(path: PathBuf) -> Result<Self, StartupError> {
        let pid = std::process::id();
        let fail = |message: String| StartupError::PidFile {
            path: path.clone(),
            message,
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(other) = text.trim().parse::<u32>() {
                if other != pid && process_running(other) {
                    return Err(fail(format!(
                        "process {other} is running with this pid file (another presenced or Synapse?)"
                    )));
                }
            }
        }
        std::fs::write(&path, format!("{pid}\n")).map_err(|e| fail(e.to_string()))?;
        Ok(Self { path, pid })
    }

    /// Removes the file at a clean shutdown, if it still holds our ID.
    pub fn remove(self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), "cannot remove pid_file: {e}");
            }
        }
    }
}

/// Whether a process with this ID exists (Linux: `/proc`; elsewhere we
/// cannot tell cheaply and assume a stale file).
fn process_running(pid: u32) -> bool {
    cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists()
}

/// The server's two stores on one database: rooms, accounts and the
/// outbox; and presence, written by the presence writer thread.
#[derive(Clone)]
pub struct Stores {
    /// Accounts, rooms, filters, the federation outbox.
    pub store: Arc<dyn Store>,
    /// Presence states and full-presence marks.
    pub presence: Arc<dyn PresenceStore>,
    /// The database in words, for logs and errors (no password).
    pub describe: String,
}

/// Opens the database the config names, unless it is another program's
/// (see `store::sqlite::ownership`, `store::postgres`) or was made for
/// another server_name (the store checks the one it is given). On
/// PostgreSQL this takes the one-writer lock for as long as the stores
/// live.
pub fn open_stores(config: &Config) -> Result<Stores, StartupError> {
    match database_target(config).map_err(StartupError::DatabaseConfig)? {
        DatabaseTarget::Sqlite(path) => {
            let store = open_sqlite(&path, config)?;
            let presence =
                SqlitePresenceStore::open(&path).map_err(|source| StartupError::PresenceStore {
                    what: path.display().to_string(),
                    source,
                })?;
            Ok(Stores {
                store: Arc::new(store),
                presence: Arc::new(presence),
                describe: format!("SQLite {}", path.display()),
            })
        }
        DatabaseTarget::Postgres(opts) => {
            // Cluster nodes share the database; a single server keeps it.
            let store = Arc::new(if config.cluster.is_some() {
                PgStore::open_shared(&opts, &config.server_name)?
            } else {
                PgStore::open(&opts, &config.server_name)?
            });
            Ok(Stores {
                store: store.clone(),
                presence: store,
                describe: format!("PostgreSQL {}", opts.describe()),
            })
        }
    }
}

/// Opens the configured database for a command run beside a server
/// (`register-user`): on PostgreSQL without the server's lock.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartupError> {
    match database_target(config).map_err(StartupError::DatabaseConfig)? {
        DatabaseTarget::Sqlite(path) => Ok(Arc::new(open_sqlite(&path, config)?)),
        DatabaseTarget::Postgres(opts) => Ok(Arc::new(PgStore::open_beside_server(
            &opts,
            &config.server_name,
        )?)),
    }
}

/// What `presenced synapse-resync` runs: the admin-API reader and a feed
/// that only stores, on the configured database opened as [`open_store`]
/// opens it (beside a running server). `None` without a `synapse:`
/// section.
pub fn resync_parts(config: &Config) -> Result<Option<(Bootstrap, MembershipFeed)>, StartupError> {
    let Some(synapse) = &config.synapse else {
        return Ok(None);
    };
    let companion = Companion::load(synapse)?;
    let bootstrap = Bootstrap::new(companion.upstream, companion.admin_token);
    let store = open_store(config)?;
    Ok(Some((bootstrap, MembershipFeed::store_only(store))))
}

fn open_sqlite(path: &Path, config: &Config) -> Result<SqliteStore, StartupError> {
    crate::store::sqlite::ownership::check(path).map_err(StartupError::NotOurDatabase)?;
    SqliteStore::open(path, &config.server_name).map_err(|source| StartupError::Database {
        what: path.display().to_string(),
        source,
    })
}

/// The configured secret, or the one kept in `data_dir` (made on first use).
pub fn registration_secret(config: &Config) -> Result<(Secret, SecretOrigin), StartupError> {
    if let Some(s) = &config.registration_shared_secret {
        return Ok((s.clone(), SecretOrigin::Configured));
    }
    let path = config.data_dir.join(SECRET_FILE);
    let err = |source| StartupError::Secret {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            Ok((Secret::new(text.trim()), SecretOrigin::Stored(path.clone())))
        }
        Ok(_) => generate_secret(&path).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_secret(&path).map_err(err),
        Err(e) => Err(err(e)),
    }
}

fn generate_secret(path: &Path) -> std::io::Result<(Secret, SecretOrigin)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = ids::new_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        // Only the server's user may read it: it lets anyone make admins.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    Ok((
        Secret::new(secret),
        SecretOrigin::Generated(path.to_owned()),
    ))
}

/// Opens the store, settles the secret, loads the presence router modules,
/// starts the presence driver and the federation sender, and builds the
/// shared state. Must run inside a tokio runtime (the driver spawns its
/// tasks). Other servers' keys are fetched through the federation client.
pub fn build_state(
    config: Config,
) -> Result<(Arc<AppState>, StateReceivers, SecretOrigin), StartupError> {
    build(config, None)
}

/// [`build_state`] with other servers' keys fetched through `key_fetcher`
/// (a test's) instead of the federation client.
pub fn build_state_with(
    config: Config,
    key_fetcher: Arc<dyn KeyFetcher>,
) -> Result<(Arc<AppState>, StateReceivers, SecretOrigin), StartupError> {
    build(config, Some(key_fetcher))
}

fn build(
    config: Config,
    key_fetcher: Option<Arc<dyn KeyFetcher>>,
) -> Result<(Arc<AppState>, StateReceivers, SecretOrigin), StartupError> {
    // The database first: a file that is not presenced's (Synapse's) stops
    // start-up before anything else (signing key, secret) is written.
    let stores = open_stores(&config)?;
    tracing::info!(database = %stores.describe, "database opened");
    // Companion mode is chosen here, once: Synapse's registration, its
    // admin token and the client for it (before anything is written, so a
    // bad registration stops start-up cleanly).
    let mut companion = match &config.synapse {
        Some(synapse) => {
            let companion = Companion::load(synapse)?;
            tracing::info!(synapse = %companion.upstream.base_url(), "companion mode: in front of Synapse");
            Some(companion)
        }
        None => None,
    };
    let signing_key = Arc::new(ServerSigningKey::load_or_generate(
        &config.signing_key_path(),
    )?);
    let client = Arc::new(FederationClient::new(&config, signing_key.clone())?);
    let key_fetcher = key_fetcher.unwrap_or_else(|| client.clone());
    let remote_keys = Arc::new(RemoteKeyCache::new(key_fetcher, KeyCacheConfig::default()));
    let (secret, origin) = registration_secret(&config)?;
    // A cluster node follows the event stream from a position read before
    // the members, so no room write falls between the two.
    let following_from = match &config.cluster {
        Some(_) => Some(
            stores
                .store
                .max_stream()
                .map_err(|source| StartupError::Database {
                    what: stores.describe.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let (mut joined, members) =
        read_rooms(&*stores.store).map_err(|source| StartupError::Database {
            what: stores.describe.clone(),
            source,
        })?;
    // A cluster node tells presence the feed's changes from the store,
    // after the newest one read before the view, so none falls between.
    let mut changes_from = None;
    if companion.is_some() {
        if config.cluster.is_some() {
            changes_from = Some(
                (stores.store.companion_change_position()).map_err(|source| {
                    StartupError::Database {
                        what: stores.describe.clone(),
                        source,
                    }
                })?,
            );
        }
        // Synapse's rooms, as the membership feed stored them.
        let synapse_joined =
            (stores.store.companion_joined()).map_err(|source| StartupError::Database {
                what: stores.describe.clone(),
                source,
            })?;
        joined.extend(synapse_joined);
    }
    let store = stores.store.clone();
    let (presence, outbound) =
        crate::presence::startup::start(&config, joined, store.clone(), stores.presence)?;
    if let Some(companion) = &mut companion {
        // The membership feed needs the presence driver, so it joins the
        // companion parts now; its background work (the ping, the first
        // bootstrap, the reconciliation) starts with it.
        let hs_token = Secret::new(companion.registration.hs_token.clone());
        let feed = MembershipFeed::new(store.clone(), presence.clone(), hs_token);
        let feed = Arc::new(match changes_from {
            Some(position) => feed.following_from(position),
            None => feed,
        });
        if changes_from.is_some() {
            crate::companion::cluster_changes::spawn(&feed);
        }
        let bootstrap = Bootstrap::new(companion.upstream.clone(), companion.admin_token.clone());
        bootstrap::spawn(feed.clone(), bootstrap, companion.registration.clone());
        companion.membership_feed = Some(feed);
    }
    let companion = companion.map(Arc::new);
    let outbound = OutboundPresence::start(
        Arc::new(config.clone()),
        store.clone(),
        client,
        outbound,
        presence.federation_shards(),
    );
    let federation = FederationParts {
        signing_key,
        remote_keys,
        outbound,
    };
    let rooms = RoomParts {
        members,
        writer: RoomWriter::start().map_err(StartupError::RoomWriter)?,
        following_from,
    };
    let (state, receivers) = AppState::new(
        config,
        store,
        rooms,
        Some(secret),
        presence,
        federation,
        companion,
    );
    if following_from.is_some() {
        state.homeserver.spawn_room_follower();
    }
    Ok((state, receivers, origin))
}

/// Every room's members, read once: the joins for the presence engine and
/// the invites and joins for the server's own map.
type Rooms = (Vec<(OwnedRoomId, OwnedUserId)>, RoomMembers);

fn read_rooms(store: &dyn Store) -> Result<Rooms, StoreError> {
    let rooms = store
        .room_join_rules()?
        .into_iter()
        .map(|(room, rule)| (room, rule.as_deref() == Some(rooms::PUBLIC_JOIN_RULE)));
    let rows = store.live_memberships()?;
    let joined = (rows.iter())
        .filter(|row| row.membership == Membership::Join)
        .map(|row| (row.room_id.clone(), row.user_id.clone()))
        .collect();
    let members = RoomMembers::load(
        rooms,
        (rows.into_iter()).map(|row| (row.room_id, row.user_id, row.membership)),
    );
    Ok((joined, members))
}
