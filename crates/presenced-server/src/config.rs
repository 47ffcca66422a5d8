//! Configuration: the YAML schema (Synapse's key names), defaults,
//! `PRESENCED_…` overrides and the unknown-key check.
//!
//! Architecture invariant: a leaf. Every layer may read these plain types;
//! this folder imports nothing else of the crate.
//!
//! Every section is a typed struct, so a wrong type or a bad duration stops
//! start-up with the key and the file line (serde_yaml reports both). A key
//! no field takes is looked up in Synapse's option list: Synapse's keys are
//! ignored and listed in one warning at start, so a whole `homeserver.yaml`
//! runs unchanged; any other key is an error naming it, its line and the
//! nearest known key (`synapse_keys`). A missing key takes its default, and
//! an empty document is the embedded default the binary runs with when
//! given no `--config`. The commented example (`presenced.example.yaml`,
//! printed by `presenced generate-config`) is checked by a test to list
//! every key.
//!
//! Submodules: `duration` (Synapse's duration syntax), `env` (environment
//! overrides), `presence` (the presence, rate-limit and module sections),
//! `synapse_keys` (Synapse's option names, typo suggestions), `log_config`
//! (the root level of Synapse's Python logging file).

pub mod cluster;
pub mod companion;
pub mod connections;
pub mod duration;
pub mod env;
pub mod federation;
pub mod ip_ranges;
pub mod limits;
pub mod log_config;
pub mod presence;
pub mod python_modules;
pub mod synapse_keys;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ruma_common::{OwnedRoomId, OwnedServerName};
use serde::{Deserialize, Serialize, Serializer};

pub use self::federation::FederationConfig;
pub use self::ip_ranges::IpRanges;
pub use self::presence::{
    FederationPresence, ModuleConfig, PresenceConfig, PresenceEnabled, RateLimit, RcPresence,
};
use self::synapse_keys::KeyPath;

/// The commented example config, kept next to the crate's `Cargo.toml`.
pub const EXAMPLE_CONFIG: &str = include_str!("../presenced.example.yaml");

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// The domain in user and room IDs (`@alice:server_name`).
    pub server_name: OwnedServerName,
    /// Where the HTTP API listens.
    pub listeners: Vec<Listener>,
    /// Where presenced keeps its files: the SQLite database (unless
    /// `database.args.database` says otherwise) and a generated
    /// registration secret. presenced-specific.
    pub data_dir: PathBuf,
    /// Storage backend, in Synapse's `{name, args}` shape.
    pub database: DatabaseConfig,
    /// Secret for Synapse-style shared-secret registration. When absent, one
    /// is generated at first start and kept in `data_dir`.
    pub registration_shared_secret: Option<Secret>,
    /// Whether anyone may register through `POST /register`.
    pub enable_registration: bool,
    /// Accepted for Synapse compatibility; presenced has no email or
    /// captcha verification, so it changes nothing.
    pub enable_registration_without_verification: bool,
    /// Argon2 cost of password hashes (Synapse's `bcrypt_rounds` role).
    pub password_hashing: PasswordHashing,
    /// Legacy top-level switch, used only when `presence.enabled` is absent.
    pub use_presence: Option<bool>,
    /// Presence options.
    pub presence: PresenceConfig,
    /// Rooms that never, on their own, make users see each other.
    pub exclude_rooms_from_presence: Vec<OwnedRoomId>,
    /// Rate limit for presence updates.
    pub rc_presence: RcPresence,
    /// Rate limits for logins (Synapse's keys and defaults).
    pub rc_login: limits::RcLogin,
    /// Rate limit for registrations per client address (Synapse's).
    pub rc_registration: limits::RcRegistration,
    /// Body size, `status_msg` and memory caps (presenced-specific).
    pub request_limits: limits::RequestLimits,
    /// Longest `/sync` long-poll honoured; a client asking for more waits
    /// this long. Absent: the client's `timeout` as given, as in Synapse
    /// (presenced addition).
    #[serde(with = "duration::optional")]
    pub max_sync_timeout: Option<std::time::Duration>,
    /// Modules (presence routers), in load order.
    pub modules: Vec<ModuleConfig>,
    /// The Python host for modules given as Python class paths.
    pub python_modules: python_modules::PythonModulesConfig,
    /// Serve Prometheus metrics at `GET /metrics` on the client listeners
    /// (Synapse's key; Synapse serves them on a `metrics` listener).
    pub enable_metrics: bool,
    /// Logging.
    pub log: LogConfig,
    /// The server's ed25519 signing key file (Synapse's key-file format:
    /// `ed25519 <version> <base64 seed>`), generated at first start when
    /// missing. Absent: `data_dir/<server_name>.signing.key`.
    pub signing_key_path: Option<PathBuf>,
    /// When set, only these servers may talk to us over federation (other
    /// origins get 403 `M_FORBIDDEN`), and we talk only to them.
    pub federation_domain_whitelist: Option<Vec<OwnedServerName>>,
    /// Check peers' TLS certificates on outbound federation (Synapse key).
    pub federation_verify_certificates: bool,
    /// PEM files of the CAs trusted for outbound federation; when set they
    /// replace the built-in roots (Synapse key).
    pub federation_custom_ca_list: Option<Vec<PathBuf>>,
    /// Retry intervals of outgoing federation presence.
    pub federation: FederationConfig,
    /// Addresses outbound federation and key requests never connect to,
    /// checked after DNS (Synapse key; default: Synapse's private,
    /// loopback, link-local, ... ranges).
    pub ip_range_blacklist: IpRanges,
    /// Addresses allowed even when `ip_range_blacklist` lists them.
    pub ip_range_whitelist: IpRanges,
    /// PEM certificate chain for `tls: true` listeners.
    pub tls_certificate_path: Option<PathBuf>,
    /// PEM private key for `tls: true` listeners.
    pub tls_private_key_path: Option<PathBuf>,
    /// Synapse's `pid_file`: the process ID is written here once the
    /// listeners are bound, and the file removed at a clean shutdown.
    pub pid_file: Option<PathBuf>,
    /// Synapse's `log_config` (a Python logging YAML file): its root level
    /// is the log level unless `log.level` is set.
    pub log_config: Option<PathBuf>,
    /// Synapse keys of the loaded file that presenced does not use, in
    /// file order (for the one start-up warning).
    #[serde(skip)]
    pub ignored_synapse_options: Vec<String>,
    /// Warnings found while loading, logged once logging is up.
    #[serde(skip)]
    pub load_notes: Vec<String>,
    /// Timeouts and caps of client connections (presenced-specific).
    pub connections: connections::ConnectionsConfig,
    /// Cluster mode (presenced-specific); `None` is a single node.
    pub cluster: Option<cluster::ClusterConfig>,
    /// Companion mode (presenced-specific): presence for an existing
    /// Synapse, in front of it; `None` is standalone.
    pub synapse: Option<companion::CompanionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost:8008".try_into().expect("valid server name"),
            listeners: vec![Listener::default()],
            data_dir: PathBuf::from("./presenced-data"),
            database: DatabaseConfig::default(),
            registration_shared_secret: None,
            enable_registration: false,
            enable_registration_without_verification: false,
            password_hashing: PasswordHashing::default(),
            use_presence: None,
            presence: PresenceConfig::default(),
            exclude_rooms_from_presence: Vec::new(),
            rc_presence: RcPresence::default(),
            rc_login: limits::RcLogin::default(),
            rc_registration: limits::RcRegistration::default(),
            request_limits: limits::RequestLimits::default(),
            max_sync_timeout: None,
            modules: Vec::new(),
            python_modules: Default::default(),
            enable_metrics: false,
            log: LogConfig::default(),
            signing_key_path: None,
            federation_domain_whitelist: None,
            federation_verify_certificates: true,
            federation_custom_ca_list: None,
            federation: FederationConfig::default(),
            ip_range_blacklist: IpRanges::synapse_default_blacklist(),
            ip_range_whitelist: IpRanges::default(),
            tls_certificate_path: None,
            tls_private_key_path: None,
            pid_file: None,
            log_config: None,
            ignored_synapse_options: Vec::new(),
            load_notes: Vec::new(),
            connections: connections::ConnectionsConfig::default(),
            cluster: None,
            synapse: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema; the message names
    /// the key and, for file input, the line.
    #[error("{origin}: {message}")]
    Parse {
        /// The file name, or a description of where the text came from.
        origin: String,
        /// serde_yaml's message (key path, line and column).
        message: String,
    },
    /// The values parse but contradict each other.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the config came from.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Config {
    /// Loads `path` (or the embedded default when `None`), applies the
    /// process environment's `PRESENCED_…` overrides, and reads the root
    /// level of `log_config` when `log.level` is not set.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "embedded default config".to_owned()),
        };
        let mut config = Self::from_yaml(&text, &origin, std::env::vars())?;
        config.apply_log_config();
        Ok(config)
    }

    /// Parses YAML text, then applies the overrides found in `vars`.
    pub fn from_yaml(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            origin: origin.to_owned(),
            message,
        };
        // An empty file (or no file) is the all-defaults config.
        let text = if text.trim().is_empty() { "{}" } else { text };
        // Parse the text itself first: errors found here carry line numbers,
        // which they would lose once the document is a `Value`.
        let (mut config, mut unused) =
            deserialize_noting_unused(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| parse_err(e.to_string()))?;
        let overrides = env::collect(vars);
        if !overrides.is_empty() {
            let mut doc: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
            env::apply(&mut doc, &overrides).map_err(parse_err)?;
            let names: Vec<&str> = overrides.iter().map(|o| o.variable.as_str()).collect();
            (config, unused) = deserialize_noting_unused(doc).map_err(|e| {
                parse_err(format!(
                    "{e} (after environment overrides {})",
                    names.join(", ")
                ))
            })?;
        }
        let (synapse, unknown): (Vec<KeyPath>, Vec<KeyPath>) = unused
            .into_iter()
            .partition(|p| synapse_keys::is_synapse_option(&p.dotted()));
        if !unknown.is_empty() {
            return Err(parse_err(unknown_keys_message(text, &unknown)));
        }
        config.ignored_synapse_options = synapse.iter().map(ToString::to_string).collect();
        config.validate().map_err(|message| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Takes the log level from `log_config` when `log.level` does not set
    /// one; what it could not use goes to [`Self::load_notes`].
    pub fn apply_log_config(&mut self) {
        let Some(path) = &self.log_config else {
            return;
        };
        if self.log.level.is_some() {
            self.load_notes.push(format!(
                "log_config {} is not read: log.level is set",
                path.display()
            ));
            return;
        }
        let got = log_config::read(path);
        self.log.level = got.level;
        self.load_notes.extend(got.notes);
    }

    /// The one start-up warning about Synapse keys presenced does not use,
    /// or `None` when there are none.
    pub fn ignored_options_warning(&self) -> Option<String> {
        (!self.ignored_synapse_options.is_empty()).then(|| {
            format!(
                "ignored Synapse options: {}",
                self.ignored_synapse_options.join(", ")
            )
        })
    }

    fn validate(&self) -> Result<(), String> {
        self.presence.validate()?;
        if self.listeners.is_empty() {
            return Err("listeners: at least one listener is needed".to_owned());
        }
        self.federation.validate()?;
        self.connections.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if !self.database_is_postgres() {
                return Err(
                    "cluster: needs PostgreSQL (database.name: psycopg2, or database.url \
                     postgres://...): every node shares its accounts and rooms"
                        .to_owned(),
                );
            }
        }
        if let Some(companion) = &self.synapse {
            companion.validate()?;
            if self.signing_key_path.is_none() {
                return Err(
                    "synapse: needs signing_key_path: Synapse's own signing key file \
                     (presenced sends presence as the server, so other servers check \
                     its EDUs against the keys Synapse publishes)"
                        .to_owned(),
                );
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.path.is_some() {
                return Err(format!(
                    "listeners[{i}].path: Unix socket listeners are not supported; use port and bind_addresses"
                ));
            }
            if l.tls && (self.tls_certificate_path.is_none() || self.tls_private_key_path.is_none())
            {
                return Err(format!(
                    "listeners[{i}].tls: a TLS listener needs tls_certificate_path and tls_private_key_path"
                ));
            }
        }
        for (key, m) in self
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("modules[{i}]"), m))
            .chain(
                self.presence
                    .presence_router
                    .iter()
                    .map(|m| ("presence.presence_router".to_owned(), m)),
            )
        {
            if m.deadline_ms == Some(0) {
                return Err(format!("{key}.deadline_ms must be greater than 0"));
            }
        }
        self.rc_login.validate()?;
        self.rc_registration.validate("rc_registration")?;
        self.request_limits.validate()?;
        let rl = &self.rc_presence.per_user;
        if !(rl.per_second >= 0.0 && rl.burst_count >= 0.0) {
            return Err("rc_presence.per_user: per_second and burst_count must be >= 0".to_owned());
        }
        Ok(())
    }

    /// The presence mode after Synapse's `use_presence` fallback.
    pub fn presence_enabled(&self) -> PresenceEnabled {
        match (self.presence.enabled, self.use_presence) {
            (Some(mode), _) => mode,
            (None, Some(false)) => PresenceEnabled::Disabled,
            (None, _) => PresenceEnabled::Enabled,
        }
    }

    /// Whether `database:` names PostgreSQL (`database.url` wins).
    pub fn database_is_postgres(&self) -> bool {
        match &self.database.url {
            Some(url) => url.starts_with("postgres://") || url.starts_with("postgresql://"),
            None => self.database.name == DatabaseEngine::Psycopg2,
        }
    }

    /// The SQLite file: `database.args.database`, else `data_dir/presenced.db`
    /// (meaningful when [`Self::database_target`] is SQLite).
    pub fn database_path(&self) -> PathBuf {
        self.database
            .args
            .database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("presenced.db"))
    }

    /// The signing key file: `signing_key_path`, else
    /// `data_dir/<server_name>.signing.key` (Synapse's file name).
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path.clone().unwrap_or_else(|| {
            self.data_dir
                .join(format!("{}.signing.key", self.server_name))
        })
    }

    /// Whether `federation_domain_whitelist` lets `server` talk to us.
    pub fn federation_allowed(&self, server: &ruma_common::ServerName) -> bool {
        self.federation_domain_whitelist
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|s| s == server))
    }

    /// Router modules in load order: `modules:` first, then the legacy
    /// `presence.presence_router` (Synapse loads it last).
    pub fn router_modules(&self) -> Vec<ModuleConfig> {
        self.modules
            .iter()
            .chain(self.presence.presence_router.as_ref())
            .cloned()
            .collect()
    }
}

/// Deserializes a [`Config`], collecting the path of every key that no
/// field took instead of failing on it.
fn deserialize_noting_unused<'de, D>(deserializer: D) -> Result<(Config, Vec<KeyPath>), D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut unused = Vec::new();
    let config = serde_ignored::deserialize(deserializer, |path| {
        unused.push(KeyPath::from_ignored(&path));
    })?;
    Ok((config, unused))
}

/// The error for keys neither presenced nor Synapse knows: each with its
/// line (when it is in the file, not an environment override) and the
/// nearest known key.
fn unknown_keys_message(text: &str, unknown: &[KeyPath]) -> String {
    let known = presenced_keys();
    let lines: Vec<String> = unknown
        .iter()
        .map(|key| {
            let mut line = format!("unknown option `{key}`");
            if let Some(n) = synapse_keys::line_of(text, key) {
                line.push_str(&format!(" at line {n}"));
            }
            if let Some(near) = synapse_keys::nearest(key, known.iter().map(String::as_str)) {
                line.push_str(&format!(" (did you mean `{near}`?)"));
            }
            line
        })
        .collect();
    format!(
        "{}; it is neither a presenced option nor a Synapse {} option",
        lines.join("; "),
        synapse_keys::synapse_version()
    )
}

/// Every key path presenced itself reads (dotted, no list indices), taken
/// from the serialized defaults plus one module entry, so suggestions
/// follow the structs without a hand-kept list.
pub fn presenced_keys() -> Vec<String> {
    let mut sample = Config::default();
    sample.modules.push(ModuleConfig::new("m"));
    sample.modules[0].deadline_ms = Some(1);
    sample.presence.presence_router = sample.modules.first().cloned();
    sample.listeners[0].path = Some(PathBuf::new());
    sample.cluster = Some(cluster::ClusterConfig {
        node_name: "a".to_owned(),
        nats_servers: Vec::new(),
        nats_credentials: Some(PathBuf::new()),
        allow_unreplicated: false,
    });
    sample.synapse = Some(companion::CompanionConfig {
        url: String::new(),
        appservice_registration: PathBuf::new(),
        admin_token: Some(Secret::new("")),
        admin_token_path: Some(PathBuf::new()),
    });
    let mut out = Vec::new();
    if let Ok(doc) = serde_yaml::to_value(&sample) {
        collect_keys(&doc, "", &mut out);
    }
    out
}

fn collect_keys(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                let path = format!("{prefix}{k}");
                collect_keys(v, &format!("{path}."), out);
                out.push(path);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                collect_keys(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// One HTTP listener (Synapse's `listeners:` entry).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Listener {
    /// TCP port.
    pub port: u16,
    /// Addresses to bind; each gets a socket.
    pub bind_addresses: Vec<IpAddr>,
    /// `http` serves the `resources`; `metrics` serves `/metrics` (with
    /// `enable_metrics`); `manhole` (Synapse's debug shell) is not started.
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// Serve HTTPS with `tls_certificate_path` / `tls_private_key_path`
    /// (so peers can reach the federation API without a proxy).
    pub tls: bool,
    /// Accepted for Synapse compatibility (trust `X-Forwarded-For`).
    pub x_forwarded: bool,
    /// What the listener serves (`client`, `federation`, ...).
    pub resources: Vec<ListenerResource>,
    /// Synapse's Unix socket listener; refused (presenced listens on TCP
    /// only), rather than ignored, which would listen on the default port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            port: 8008,
            bind_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            kind: ListenerKind::Http,
            tls: false,
            x_forwarded: false,
            resources: vec![ListenerResource::default()],
            path: None,
        }
    }
}

impl Listener {
    /// Whether the listener serves the resource `name` (`client`,
    /// `federation`, `keys`, ...).
    pub fn serves(&self, name: &str) -> bool {
        self.resource_names().any(|n| n == name)
    }

    /// The resource names this listener serves: its `resources` for an
    /// `http` listener, `metrics` for a `metrics` one, nothing for a
    /// `manhole` one.
    pub fn resource_names(&self) -> impl Iterator<Item = &str> {
        let (resources, metrics): (&[ListenerResource], &[&str]) = match self.kind {
            ListenerKind::Http => (&self.resources, &[]),
            ListenerKind::Metrics => (&[], &["metrics"]),
            ListenerKind::Manhole => (&[], &[]),
        };
        (resources.iter())
            .flat_map(|r| r.names.iter().map(String::as_str))
            .chain(metrics.iter().copied())
    }
}

/// Listener protocol.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// HTTP (or HTTPS with `tls: true`) serving the listed resources.
    #[default]
    Http,
    /// Synapse's metrics-only listener: `/metrics` (and `/health`).
    Metrics,
    /// Synapse's Python debug shell: accepted, not started.
    Manhole,
}

/// A `resources:` entry of a listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ListenerResource {
    /// Resource names: `client` (client-server API, admin APIs, metrics),
    /// `federation` (server-server API and key server), `keys` (key server
    /// only). `/health` is served everywhere.
    pub names: Vec<String>,
    /// Accepted for Synapse compatibility.
    pub compress: bool,
}

impl Default for ListenerResource {
    fn default() -> Self {
        Self {
            names: vec!["client".to_owned(), "federation".to_owned()],
            compress: false,
        }
    }
}

/// `database:` in Synapse's shape.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct DatabaseConfig {
    /// The backend: `sqlite3` (default) or `psycopg2` (PostgreSQL).
    pub name: DatabaseEngine,
    /// Backend arguments.
    pub args: DatabaseArgs,
    /// presenced's own: the whole connection as one URL, which wins over
    /// `name` and `args` (`postgres://user:pw@host:5432/db?sslmode=…` or
    /// `sqlite:/path`). Usually set as `PRESENCED_DATABASE_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Storage backends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum DatabaseEngine {
    /// Embedded SQLite (bundled; no system library needed).
    #[default]
    #[serde(rename = "sqlite3")]
    Sqlite3,
    /// PostgreSQL, by Synapse's driver name.
    #[serde(rename = "psycopg2")]
    Psycopg2,
}

/// `database.args`: the SQLite file, or psycopg2's connection arguments
/// as Synapse passes them (`database` is psycopg2's alias of `dbname`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct DatabaseArgs {
    /// SQLite: path of the file (default `data_dir/presenced.db`).
    /// PostgreSQL: the database name, if `dbname` is not given.
    pub database: Option<PathBuf>,
    /// PostgreSQL database name.
    pub dbname: Option<String>,
    /// PostgreSQL role.
    pub user: Option<String>,
    /// PostgreSQL password (a [`Secret`]: never logged).
    pub password: Option<Secret>,
    /// Host name, address, or Unix socket directory (default `localhost`).
    pub host: Option<String>,
    /// Port (default 5432).
    pub port: Option<u16>,
    /// libpq's `sslmode` (default `prefer`).
    pub sslmode: Option<String>,
    /// Connections opened at start (Synapse's default 5).
    pub cp_min: Option<usize>,
    /// The pool's size (Synapse's default 10).
    pub cp_max: Option<usize>,
    /// CA file for `sslmode: verify-ca`/`verify-full`.
    pub sslrootcert: Option<String>,
    /// Seconds to wait for a connection (default 10).
    pub connect_timeout: Option<u64>,
    /// TCP keepalive: idle seconds before the first probe.
    pub keepalives_idle: Option<u64>,
    /// TCP keepalive: seconds between probes.
    pub keepalives_interval: Option<u64>,
    /// TCP keepalive: unanswered probes before the connection drops.
    pub keepalives_count: Option<u32>,
    /// `any` (default) or `read-write`.
    pub target_session_attrs: Option<String>,
    /// Shown in `pg_stat_activity` (default `presenced`).
    pub application_name: Option<String>,
}

/// Argon2id cost parameters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct PasswordHashing {
    /// Memory per hash in KiB (argon2's recommended 19456).
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// `log:` — presenced-specific.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `presenced_server=debug,info`); `RUST_LOG`
    /// wins when set. Unset: the root level of `log_config`, else `info`.
    pub level: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: None,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// A secret string that never shows up in logs or dumps.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}
