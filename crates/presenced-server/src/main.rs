//! The `presenced` binary.
//!
//! - `presenced [--config FILE]`: run the server (embedded default config
//!   without `--config`); the file may be a whole Synapse homeserver.yaml.
//! - `presenced --version`: version and git commit.
//! - `presenced generate-config [--output FILE]`: the commented example.
//! - `presenced generate-appservice --url URL [--output FILE]`: a fresh
//!   application-service registration for companion mode (the file both
//!   Synapse's `app_service_config_files` and `synapse.appservice_registration`
//!   name), with new tokens.
//! - `presenced register-user --user NAME [--password PW] [--admin]`:
//!   create an account, like Synapse's `register_new_matrix_user`. It
//!   writes to the database named by the config directly (no running
//!   server needed; SQLite lets it share the file with a running one, and
//!   on PostgreSQL it does not take the server's lock).
//! - `presenced port-db --sqlite-database FILE [--postgres-config FILE]`:
//!   copy a SQLite database into an empty PostgreSQL one, all or nothing,
//!   like Synapse's `synapse_port_db` (the target is the config's
//!   `database:`, which must be PostgreSQL).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use presenced_server::companion::registration::Registration;
use presenced_server::config::{Config, ListenerKind, EXAMPLE_CONFIG};
use presenced_server::homeserver::accounts;
use presenced_server::process::startup::{self, PidFile, SecretOrigin};
use presenced_server::process::telemetry;
use tokio::net::TcpListener;

/// mimalloc rather than glibc malloc: a request allocates and frees many
/// small buffers, and glibc's free lists were 8-9 % of the server's CPU
/// under presence load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resource names presenced serves; Synapse's others (`media`, `static`,
/// `openid`, ...) are accepted and named in a start-up warning.
const SERVED_RESOURCES: &[&str] = &["client", "federation", "keys", "metrics", "health"];

#[derive(Parser)]
#[command(
    name = "presenced",
    // Crate version and git commit, from build.rs.
    version = env!("VERSION_WITH_COMMIT"),
    about = "A Matrix homeserver focused on presence"
)]
struct Cli {
    /// YAML config file (Synapse key names). Without it, the embedded
    /// default: localhost:8008, SQLite in ./presenced-data.
    #[arg(long, short = 'c', global = true, env = "PRESENCED_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print (or write) a commented example config.
    GenerateConfig {
        /// Write here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print (or write) a fresh application-service registration for
    /// companion mode, with new random tokens.
    GenerateAppservice {
        /// Where Synapse reaches presenced (its transactions go there),
        /// e.g. http://127.0.0.1:8008.
        #[arg(long)]
        url: String,
        /// Write here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Create a user in the configured database.
    RegisterUser {
        /// Localpart (alice) or full user ID (@alice:server).
        #[arg(long, short = 'u')]
        user: String,
        /// Password; read from standard input when absent.
        #[arg(long, short = 'p')]
        password: Option<String>,
        /// Make the user a server admin.
        #[arg(long, short = 'a')]
        admin: bool,
    },
    /// Copy a SQLite database into an empty PostgreSQL database (all or
    /// nothing; row counts checked), then point `database:` at PostgreSQL.
    PortDb {
        /// The SQLite file to copy (presenced's, e.g.
        /// ./presenced-data/presenced.db). It is only read.
        #[arg(long)]
        sqlite_database: PathBuf,
        /// A config whose `database:` names the PostgreSQL target
        /// (`name: psycopg2`, or PRESENCED_DATABASE_URL); default `--config`.
        #[arg(long)]
        postgres_config: Option<PathBuf>,
    },
    /// Companion mode: read every room's members from Synapse's admin API
    /// into the configured database now (the server also does it at its
    /// first start and every 6 hours). A running server applies the
    /// result to presence at its next start.
    SynapseResync,
}

fn main() -> ExitCode {
    presenced_server::process::memory::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::GenerateConfig { output }) => generate_config(output),
        Some(Command::GenerateAppservice { url, output }) => generate_appservice(&url, output),
        Some(Command::RegisterUser {
            user,
            password,
            admin,
        }) => load(cli.config).and_then(|c| register_user(&c, &user, password, admin)),
        Some(Command::PortDb {
            sqlite_database,
            postgres_config,
        }) => load(postgres_config.or(cli.config)).and_then(|c| port_db(&c, &sqlite_database)),
        Some(Command::SynapseResync) => load(cli.config).and_then(|c| synapse_resync(&c)),
        None => load(cli.config).and_then(serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("presenced: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    Config::load(path.as_deref()).map_err(|e| e.to_string())
}

fn generate_config(output: Option<PathBuf>) -> Result<(), String> {
    match output {
        Some(path) => std::fs::write(&path, EXAMPLE_CONFIG)
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            print!("{EXAMPLE_CONFIG}");
            Ok(())
        }
    }
}

fn generate_appservice(url: &str, output: Option<PathBuf>) -> Result<(), String> {
    let yaml = Registration::generate(url).to_yaml();
    match output {
        Some(path) => {
            write_private(&path, &yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}

/// Writes a file only its owner may read: the registration's tokens let
/// anyone push transactions to presenced or call Synapse as the service.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

fn register_user(
    config: &Config,
    user: &str,
    password: Option<String>,
    admin: bool,
) -> Result<(), String> {
    let localpart = match user.strip_prefix('@') {
        Some(full) => {
            let (local, server) = full.split_once(':').ok_or("invalid user ID")?;
            if server != config.server_name.as_str() {
                return Err(format!(
                    "{user} is not on this server ({})",
                    config.server_name
                ));
            }
            local
        }
        None => user,
    };
    let user_id =
        accounts::new_user_id(localpart, &config.server_name).map_err(|e| e.to_string())?;
    let password = match password {
        Some(p) => p,
        None => {
            eprint!("Password for {user_id}: ");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        return Err("the password must not be empty".to_owned());
    }
    let store = startup::open_store(config).map_err(|e| e.to_string())?;
    accounts::create_account(
        &*store,
        &user_id,
        Some(&password),
        admin,
        &config.password_hashing,
    )
    .map_err(|e| e.to_string())?;
    println!("Created {user_id}{}", if admin { " (admin)" } else { "" });
    Ok(())
}

fn synapse_resync(config: &Config) -> Result<(), String> {
    let Some((bootstrap, feed)) = startup::resync_parts(config).map_err(|e| e.to_string())? else {
        return Err("synapse-resync: the config has no `synapse:` section (companion mode)".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime
        .block_on(bootstrap.run(&feed))
        .map_err(|e| format!("synapse-resync: {e}"))?;
    println!(
        "Read {} rooms and {} memberships from Synapse; {} changed what presenced had stored.",
        report.rooms, report.memberships, report.changed
    );
    Ok(())
}

fn port_db(config: &Config, sqlite: &std::path::Path) -> Result<(), String> {
    use presenced_server::process::database::{database_target, DatabaseTarget};
    let DatabaseTarget::Postgres(target) = database_target(config)? else {
        return Err(
            "port-db: the config's database is not PostgreSQL; give --postgres-config with \
             `database: {name: psycopg2, args: {...}}` or set PRESENCED_DATABASE_URL"
                .to_owned(),
        );
    };
    println!(
        "Copying {} into PostgreSQL {}",
        sqlite.display(),
        target.describe()
    );
    let report = presenced_server::store::port::port_sqlite_to_postgres(
        sqlite,
        &target,
        &config.server_name,
        &mut |line| println!("  {line}"),
    )
    .map_err(|e| format!("port-db: {e}"))?;
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    println!(
        "Done: {rows} rows in {} tables, counts checked. Point `database:` at PostgreSQL and \
         start presenced; the signing key and data_dir stay where they are.",
        report.tables.len()
    );
    let replaced: u64 = report.nul_replaced.iter().map(|(_, _, n)| n).sum();
    if replaced > 0 {
        println!(
            "{replaced} text values held U+0000 (NUL), which PostgreSQL cannot store: each NUL \
             became U+FFFD (listed above)."
        );
    }
    Ok(())
}

fn serve(config: Config) -> Result<(), String> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    telemetry::install(telemetry::subscriber(&config.log, std::io::stderr, ansi));
    if let Some(warning) = config.ignored_options_warning() {
        tracing::warn!("{warning}");
    }
    for note in &config.load_notes {
        tracing::warn!("{note}");
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(serve_async(config))
}

async fn serve_async(config: Config) -> Result<(), String> {
    // The certificate is read once, for every TLS listener.
    let tls = match (&config.tls_certificate_path, &config.tls_private_key_path) {
        (Some(cert), Some(key)) if config.listeners.iter().any(|l| l.tls) => Some(
            presenced_server::federation::tls::server_config(cert, key)
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    for (i, l) in config.listeners.iter().enumerate() {
        if l.kind == ListenerKind::Manhole {
            tracing::warn!(
                port = l.port,
                "listeners[{i}]: type manhole is Synapse's Python shell; not started"
            );
        }
        let unserved: Vec<&str> = l
            .resource_names()
            .filter(|n| !SERVED_RESOURCES.contains(n))
            .collect();
        if !unserved.is_empty() {
            tracing::warn!(
                port = l.port,
                "listeners[{i}]: resources not served by presenced: {}",
                unserved.join(", ")
            );
        }
    }
    let bound: Vec<(SocketAddr, bool, Vec<String>)> = config
        .listeners
        .iter()
        .filter(|l| l.kind != ListenerKind::Manhole)
        .flat_map(|l| {
            let names: Vec<String> = l.resource_names().map(str::to_owned).collect();
            l.bind_addresses
                .iter()
                .map(move |ip| (SocketAddr::new(*ip, l.port), l.tls, names.clone()))
        })
        .collect();
    let pid_file = config.pid_file.clone();
    let (state, receivers, origin) = startup::build_state(config).map_err(|e| e.to_string())?;
    match origin {
        SecretOrigin::Generated(path) => {
            let secret = state
                .registration_shared_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default();
            println!(
                "Generated a registration shared secret (stored in {}):",
                path.display()
            );
            println!("    {secret}");
            println!(
                "Use it with `presenced register-user` or Synapse's register_new_matrix_user."
            );
        }
        SecretOrigin::Stored(path) => {
            tracing::info!(path = %path.display(), "registration shared secret loaded");
        }
        SecretOrigin::Configured => {}
    }
    // Membership changes and activity feed the presence driver.
    drop(presenced_server::process::feeds::spawn(&state, receivers));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut bound = bound;
    // `::` first: on a dual-stack host it takes IPv4 too, so that a
    // following `0.0.0.0` on the same port can be recognised as covered.
    bound.sort_by_key(|(addr, _, _)| !(addr.is_ipv6() && addr.ip().is_unspecified()));
    let mut listening: Vec<SocketAddr> = Vec::new();
    for (addr, with_tls, names) in bound {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            // Synapse's usual `bind_addresses: ['::', '0.0.0.0']`: the IPv6
            // wildcard already listens on IPv4 (Synapse skips it the same way).
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.ip() == std::net::Ipv4Addr::UNSPECIFIED
                    && listening.iter().any(|l| {
                        l.port() == addr.port() && l.is_ipv6() && l.ip().is_unspecified()
                    }) =>
            {
                tracing::info!(%addr, "already served by the IPv6 wildcard address on this port");
                continue;
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        };
        listening.push(addr);
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let tls = if with_tls { tls.clone() } else { None };
        let state = state.clone();
        servers.spawn(async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            presenced_server::run_listener(listener, tls, &names, state, shutdown).await
        });
    }
    // Written once every listener is bound, as Synapse does once it runs.
    let pid_file = match pid_file {
        Some(path) => Some(PidFile::write(path).map_err(|e| e.to_string())?),
        None => None,
    };
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    // Long-polls answer now rather than holding the shutdown; queued
    // federation presence stays in the outbox for the next start.
    state.presence.shut_down();
    state.outbound.shut_down();
    let _ = stop_tx.send(true);
    while let Some(done) = servers.join_next().await {
        done.map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    // Every store write is committed before its request answers; presence
    // timestamps that changed without a notification are written now.
    state.presence.flush_to_own_store();
    if let Some(pid_file) = pid_file {
        pid_file.remove();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
