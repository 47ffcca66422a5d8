//! Where a PostgreSQL database is and how to reach it: Synapse's
//! `database.args` for psycopg2, or one URL, turned into tokio-postgres's
//! config; and the start-up errors, which name host, port and database but
//! never the password.

use std::fmt;
use std::sync::Arc;

use tokio_postgres::config::SslMode;

/// The connection arguments of a `database: {name: psycopg2, args: …}`
/// block (Synapse's names), or of `PRESENCED_DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConnectOptions {
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Database name (`dbname`, or Synapse's alias `database`).
    pub dbname: String,
    /// libpq's `sslmode`: `disable`, `allow`, `prefer` (default),
    /// `require`, `verify-ca`, `verify-full`.
    pub sslmode: String,
    /// Synapse's `cp_min`: connections opened at start.
    pub cp_min: usize,
    /// Synapse's `cp_max`: the pool's size.
    pub cp_max: usize,
    /// libpq's `sslrootcert`: a PEM file of CAs for `verify-ca` and
    /// `verify-full` (instead of the web PKI roots).
    pub sslrootcert: Option<String>,
    /// libpq's `connect_timeout`, seconds (default 10).
    pub connect_timeout: Option<u64>,
    /// libpq's TCP keepalives (Synapse's documented example sets them):
    /// idle seconds before the first probe, seconds between probes, and
    /// probes before the connection is dropped.
    pub keepalives_idle: Option<u64>,
    /// See `keepalives_idle`.
    pub keepalives_interval: Option<u64>,
    /// See `keepalives_idle`.
    pub keepalives_count: Option<u32>,
    /// libpq's `target_session_attrs`: `any` (default) or `read-write`.
    pub target_session_attrs: Option<String>,
    /// libpq's `application_name` (default `presenced`).
    pub application_name: Option<String>,
}

impl Default for PgConnectOptions {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            dbname: "presenced".to_owned(),
            sslmode: "prefer".to_owned(),
            // Synapse's defaults.
            cp_min: 5,
            cp_max: 10,
            sslrootcert: None,
            connect_timeout: None,
            keepalives_idle: None,
            keepalives_interval: None,
            keepalives_count: None,
            target_session_attrs: None,
            application_name: None,
        }
    }
}

// Hand-written so a `{:?}` in a log never prints the password.
impl fmt::Debug for PgConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("cp_min", &self.cp_min)
            .field("cp_max", &self.cp_max)
            .field("sslrootcert", &self.sslrootcert)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalives_idle", &self.keepalives_idle)
            .field("keepalives_interval", &self.keepalives_interval)
            .field("keepalives_count", &self.keepalives_count)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl PgConnectOptions {
    /// Reads `postgres://user:password@host:port/dbname?sslmode=…` (also
    /// `postgresql://`; `cp_min` and `cp_max` may be query parameters too).
    pub fn from_url(url: &str) -> Result<Self, String> {
        // tokio-postgres knows neither verify-ca/verify-full nor the pool
        // sizes, and refuses unknown parameters: take ours out first.
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut rest = Vec::new();
        let mut opts = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => opts.sslmode = value.to_owned(),
                "cp_min" => {
                    opts.cp_min = value
                        .parse()
                        .map_err(|_| format!("cp_min={value} is not a number"))?;
                }
                "cp_max" => {
                    opts.cp_max = value
                        .parse()
                        .map_err(|_| format!("cp_max={value} is not a number"))?;
                }
                _ => rest.push(pair),
            }
        }
        let driver_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let parsed: tokio_postgres::Config = driver_url
            .parse()
            .map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
        if let Some(host) = parsed.get_hosts().first() {
            opts.host = match host {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
        }
        if let Some(port) = parsed.get_ports().first() {
            opts.port = *port;
        }
        if let Some(user) = parsed.get_user() {
            opts.user = user.to_owned();
        }
        opts.password = parsed
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        if let Some(db) = parsed.get_dbname() {
            opts.dbname = db.to_owned();
        }
        opts.validate()?;
        Ok(opts)
    }

    /// Checks what the config loader cannot: known `sslmode`, sane pool.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(
            self.sslmode.as_str(),
            "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
        ) {
            return Err(format!(
                "sslmode {:?}: expected disable, allow, prefer, require, verify-ca or verify-full",
                self.sslmode
            ));
        }
        if let Some(attrs) = &self.target_session_attrs {
            if !matches!(attrs.as_str(), "any" | "read-write") {
                return Err(format!(
                    "target_session_attrs {attrs:?}: expected any or read-write"
                ));
            }
        }
        if self.cp_max == 0 {
            return Err("cp_max must be at least 1".to_owned());
        }
        if self.cp_min > self.cp_max {
            return Err(format!(
                "cp_min ({}) is larger than cp_max ({})",
                self.cp_min, self.cp_max
            ));
        }
        Ok(())
    }

    /// `host 127.0.0.1, port 5432, database presenced, user postgres`: what
    /// every error about this database says (never the password).
    pub fn describe(&self) -> String {
        format!(
            "host {}, port {}, database {}, user {}",
            self.host, self.port, self.dbname, self.user
        )
    }

    /// The same options, another database (tests make fresh ones).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        Self {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// tokio-postgres's config for these options.
    pub(crate) fn driver_config(&self) -> tokio_postgres::Config {
        let secs = std::time::Duration::from_secs;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(self.application_name.as_deref().unwrap_or("presenced"))
            .connect_timeout(secs(self.connect_timeout.unwrap_or(10)))
            .ssl_mode(match self.sslmode.as_str() {
                "disable" => SslMode::Disable,
                "require" | "verify-ca" | "verify-full" => SslMode::Require,
                _ => SslMode::Prefer,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        if let Some(idle) = self.keepalives_idle {
            config.keepalives_idle(secs(idle));
        }
        if let Some(interval) = self.keepalives_interval {
            config.keepalives_interval(secs(interval));
        }
        if let Some(count) = self.keepalives_count {
            config.keepalives_retries(count);
        }
        if self.target_session_attrs.as_deref() == Some("read-write") {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        config
    }

    /// The TLS connector for `sslmode`: rustls with the web PKI roots.
    /// `require` encrypts without checking the certificate, as libpq does;
    /// `verify-ca` and `verify-full` check it (both check the host name
    /// here: rustls has no CA-only mode, so verify-ca is the stricter one).
    pub(crate) fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        let config = if matches!(self.sslmode.as_str(), "verify-ca" | "verify-full") {
            builder
                .with_root_certificates(self.roots())
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }
}

impl PgConnectOptions {
    /// The CAs to check the server's certificate against: `sslrootcert`'s,
    /// else the web PKI roots. An unreadable file leaves the store empty,
    /// so the handshake fails (and says so) rather than trusting anyone.
    fn roots(&self) -> rustls::RootCertStore {
        let Some(path) = &self.sslrootcert else {
            return rustls::RootCertStore::from_iter(
                webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
            );
        };
        let mut roots = rustls::RootCertStore::empty();
        match <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::pem_file_iter(path) {
            Ok(certs) => {
                for cert in certs.flatten() {
                    if let Err(e) = roots.add(cert) {
                        tracing::warn!(path, "sslrootcert: skipping a certificate: {e}");
                    }
                }
            }
            Err(e) => tracing::error!(path, "sslrootcert cannot be read: {e}"),
        }
        roots
    }
}

/// `sslmode=require`/`prefer`: encrypt, accept any certificate (libpq's
/// meaning of those modes), but still check the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a PostgreSQL store did not open. Every message names the database
/// by [`PgConnectOptions::describe`], never by its password.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The server did not answer (refused, timed out, unknown host).
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// It answered, and refused us (password, role, missing database).
    #[error("PostgreSQL at {target} refused the connection: {reason}")]
    Refused { target: String, reason: String },
    /// Another presenced holds this database.
    #[error(
        "another presenced is already using PostgreSQL database {target} \
         (it holds the advisory lock); only one presenced may write to a database \
         until cluster mode. Stop the other one, or point this one at another database"
    )]
    Locked { target: String },
    /// The schema was made by a newer presenced.
    #[error(
        "PostgreSQL database {target} has schema version {found}, newer than this \
         presenced knows ({known}); run the newer presenced, or restore a backup"
    )]
    SchemaTooNew {
        target: String,
        found: i64,
        known: i64,
    },
    /// The database holds tables presenced did not create (Synapse's own
    /// database, say).
    #[error(
        "PostgreSQL database {target} holds tables presenced did not create ({tables}); \
         presenced keeps its own database and never writes into another program's. \
         Create an empty database for it (createdb presenced)"
    )]
    NotOurs { target: String, tables: String },
    /// The database was made for another server_name (`server_name.rs`).
    #[error("PostgreSQL database {target}: {mismatch}")]
    ServerName {
        target: String,
        /// [`crate::StoreError::ServerNameMismatch`], naming both names.
        mismatch: crate::StoreError,
    },
    /// Anything else (a failed migration, a broken pool).
    #[error("PostgreSQL at {target}: {reason}")]
    Other { target: String, reason: String },
}

impl PgOpenError {
    /// Sorts a connection error: refused by the server (it sent an error
    /// code) or not reached at all.
    pub(crate) fn from_connect(opts: &PgConnectOptions, e: &tokio_postgres::Error) -> Self {
        let target = opts.describe();
        match e.as_db_error() {
            Some(db) => Self::Refused {
                target,
                reason: format!("{} ({})", db.message(), db.code().code()),
            },
            None => Self::Unreachable {
                target,
                reason: error_chain(e),
            },
        }
    }
}

/// An error and its sources on one line (tokio-postgres's own message is
/// often just "error connecting to server").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gives_every_field_and_debug_hides_the_password() {
        let opts = PgConnectOptions::from_url(
            "postgres://syn:s3cret@db.example:6543/matrix?sslmode=verify-full&cp_min=2&cp_max=20",
        )
        .unwrap();
        assert_eq!(opts.host, "db.example");
        assert_eq!(opts.port, 6543);
        assert_eq!(opts.user, "syn");
        assert_eq!(opts.password.as_deref(), Some("s3cret"));
        assert_eq!(opts.dbname, "matrix");
        assert_eq!(opts.sslmode, "verify-full");
        assert_eq!((opts.cp_min, opts.cp_max), (2, 20));
        assert!(!format!("{opts:?}").contains("s3cret"));
        assert!(!opts.describe().contains("s3cret"));
        assert_eq!(
            opts.describe(),
            "host db.example, port 6543, database matrix, user syn"
        );
    }

    #[test]
    fn bad_urls_and_pools_are_refused() {
        assert!(PgConnectOptions::from_url("mysql://x").is_err());
        assert!(PgConnectOptions::from_url("postgres://h/db?sslmode=sometimes").is_err());
        assert!(PgConnectOptions::from_url("postgres://h/db?cp_min=5&cp_max=1").is_err());
    }
}
