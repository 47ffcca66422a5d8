//! Configuration: Synapse's key names, YAML, `PRESENCED_…` overrides.
//!
//! Every section is a typed struct with `deny_unknown_fields`, so a typo, a
//! wrong type or a bad duration stops start-up with the key and the file
//! line (serde_yaml reports both). A missing key takes its default, and an
//! empty document is the embedded default the binary runs with when given
//! no `--config`. The commented example (`presenced.example.yaml`, printed
//! by `presenced generate-config`) is checked by a test to list every key.
//!
//! Submodules: `duration` (Synapse's duration syntax), `env` (environment
//! overrides), `presence` (the presence, rate-limit and module sections).

pub mod connections;
pub mod duration;
pub mod env;
pub mod federation;
pub mod presence;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ruma_common::{OwnedRoomId, OwnedServerName};
use serde::{Deserialize, Serialize, Serializer};

pub use self::federation::FederationConfig;
pub use self::presence::{
    FederationPresence, ModuleConfig, PresenceConfig, PresenceEnabled, RateLimit, RcPresence,
};

/// The commented example config, kept next to the crate's `Cargo.toml`.
pub const EXAMPLE_CONFIG: &str = include_str!("../presenced.example.yaml");

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Modules (presence routers), in load order.
    pub modules: Vec<ModuleConfig>,
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
    /// PEM certificate chain for `tls: true` listeners.
    pub tls_certificate_path: Option<PathBuf>,
    /// PEM private key for `tls: true` listeners.
    pub tls_private_key_path: Option<PathBuf>,
    /// Timeouts and caps of client connections (presenced-specific).
    pub connections: connections::ConnectionsConfig,
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
            modules: Vec::new(),
            enable_metrics: false,
            log: LogConfig::default(),
            signing_key_path: None,
            federation_domain_whitelist: None,
            federation_verify_certificates: true,
            federation_custom_ca_list: None,
            federation: FederationConfig::default(),
            tls_certificate_path: None,
            tls_private_key_path: None,
            connections: connections::ConnectionsConfig::default(),
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
    /// Loads `path` (or the embedded default when `None`) and applies the
    /// process environment's `PRESENCED_…` overrides.
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
        Self::from_yaml(&text, &origin, std::env::vars())
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
        let mut config: Self = serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let overrides = env::collect(vars);
        if !overrides.is_empty() {
            let mut doc: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
            env::apply(&mut doc, &overrides).map_err(parse_err)?;
            let names: Vec<&str> = overrides.iter().map(|o| o.variable.as_str()).collect();
            config = serde_yaml::from_value(doc).map_err(|e| {
                parse_err(format!(
                    "{e} (after environment overrides {})",
                    names.join(", ")
                ))
            })?;
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.presence.validate()?;
        if self.listeners.is_empty() {
            return Err("listeners: at least one listener is needed".to_owned());
        }
        self.federation.validate()?;
        self.connections.validate()?;
        for (i, l) in self.listeners.iter().enumerate() {
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

    /// The SQLite file: `database.args.database`, else `data_dir/presenced.db`.
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

/// One HTTP listener (Synapse's `listeners:` entry).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listener {
    /// TCP port.
    pub port: u16,
    /// Addresses to bind; each gets a socket.
    pub bind_addresses: Vec<IpAddr>,
    /// Only `http` exists.
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// Serve HTTPS with `tls_certificate_path` / `tls_private_key_path`
    /// (so peers can reach the federation API without a proxy).
    pub tls: bool,
    /// Accepted for Synapse compatibility (trust `X-Forwarded-For`).
    pub x_forwarded: bool,
    /// What the listener serves (`client`, `federation`, ...).
    pub resources: Vec<ListenerResource>,
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
        }
    }
}

impl Listener {
    /// Whether the listener serves the resource `name` (`client`,
    /// `federation`, `keys`, ...).
    pub fn serves(&self, name: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.names.iter().any(|n| n == name))
    }
}

/// Listener protocol.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain HTTP.
    #[default]
    Http,
}

/// A `resources:` entry of a listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The backend; only `sqlite3` for now.
    pub name: DatabaseEngine,
    /// Backend arguments.
    pub args: DatabaseArgs,
}

/// Storage backends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum DatabaseEngine {
    /// Embedded SQLite (bundled; no system library needed).
    #[default]
    #[serde(rename = "sqlite3")]
    Sqlite3,
}

/// `database.args`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseArgs {
    /// Path of the SQLite file; default `data_dir/presenced.db`.
    pub database: Option<PathBuf>,
}

/// Argon2id cost parameters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `presenced_server=debug,info`); `RUST_LOG`
    /// wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
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
