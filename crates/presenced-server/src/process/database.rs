//! Which database a config names: its `database:` block (Synapse's shape)
//! or `database.url` (`PRESENCED_DATABASE_URL`), turned into the store
//! crate's terms. Here, not in `config/`, because the config is a leaf
//! that knows nothing of the store.

use std::path::PathBuf;

use crate::config::{Config, DatabaseArgs, DatabaseEngine};
use crate::store::postgres::PgConnectOptions;

/// The database a config names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// An SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database (boxed: the options are large, and the enum
    /// is passed around once at start).
    Postgres(Box<PgConnectOptions>),
}

/// `database.url` when set (it wins over the block), else `name`/`args`.
pub fn database_target(config: &Config) -> Result<DatabaseTarget, String> {
    if let Some(url) = &config.database.url {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgConnectOptions::from_url(url)
                .map(|o| DatabaseTarget::Postgres(Box::new(o)))
                .map_err(|e| format!("database.url (PRESENCED_DATABASE_URL): {e}"));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(path)));
        }
        return Err(
            "database.url (PRESENCED_DATABASE_URL): expected postgres://user@host:port/dbname \
             or sqlite:/path/to/file.db"
                .to_owned(),
        );
    }
    match config.database.name {
        DatabaseEngine::Sqlite3 => Ok(DatabaseTarget::Sqlite(config.database_path())),
        DatabaseEngine::Psycopg2 => {
            postgres_options(&config.database.args).map(|o| DatabaseTarget::Postgres(Box::new(o)))
        }
    }
}

/// psycopg2's `args` as Synapse passes them (`database` is psycopg2's
/// alias of `dbname`), with Synapse's pool defaults.
fn postgres_options(args: &DatabaseArgs) -> Result<PgConnectOptions, String> {
    let defaults = PgConnectOptions::default();
    let dbname = match (&args.dbname, &args.database) {
        (Some(name), _) => name.clone(),
        (None, Some(name)) => name.to_string_lossy().into_owned(),
        (None, None) => {
            return Err("database.args: dbname (or database) is needed for psycopg2".to_owned());
        }
    };
    let opts = PgConnectOptions {
        host: args.host.clone().unwrap_or(defaults.host),
        port: args.port.unwrap_or(defaults.port),
        user: args.user.clone().unwrap_or(defaults.user),
        password: args.password.as_ref().map(|p| p.expose().to_owned()),
        dbname,
        sslmode: args.sslmode.clone().unwrap_or(defaults.sslmode),
        cp_min: args.cp_min.unwrap_or(defaults.cp_min),
        cp_max: args.cp_max.unwrap_or(defaults.cp_max),
        sslrootcert: args.sslrootcert.clone(),
        connect_timeout: args.connect_timeout,
        keepalives_idle: args.keepalives_idle,
        keepalives_interval: args.keepalives_interval,
        keepalives_count: args.keepalives_count,
        target_session_attrs: args.target_session_attrs.clone(),
        application_name: args.application_name.clone(),
    };
    opts.validate().map_err(|e| format!("database.args: {e}"))?;
    Ok(opts)
}
