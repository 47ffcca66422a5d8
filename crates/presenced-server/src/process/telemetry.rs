//! Logging: build a subscriber from the `log:` section, then install it.
//!
//! `RUST_LOG` overrides `log.level` when set (`log.level` unset: `info`,
//! or the root level of `log_config`, which `Config::load` put there). Tests leave logging off
//! unless `TEST_LOG` is set (see the test helper).

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Builds the subscriber the config describes, writing to `writer`;
/// `ansi` colours human-format lines (for terminals, not log files).
pub fn subscriber<W>(log: &LogConfig, writer: W, ansi: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Human => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// Installs the subscriber for the whole process (once).
pub fn install(subscriber: Box<dyn Subscriber + Send + Sync>) {
    // A second install (tests) is harmless; keep the first.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
