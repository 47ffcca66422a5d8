//! The process's file-descriptor limit (`RLIMIT_NOFILE`).
//!
//! Every connection holds a descriptor, so the connection cap is derived
//! from this limit. Many distributions start services with a soft limit of
//! 1024 and a much higher hard limit; like most servers, presenced raises
//! its soft limit to the hard one once, at start.

use std::sync::OnceLock;

/// Raises the soft limit to the hard one (once per process) and returns
/// the soft limit then in force; `None` where it cannot be read or is
/// unlimited.
pub fn raise_and_get() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(raise)
}

#[cfg(unix)]
fn raise() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = ?limit.current,
                to = ?limit.maximum,
                "raised the file-descriptor limit"
            ),
            Err(e) => tracing::warn!("could not raise the file-descriptor limit: {e}"),
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise() -> Option<u64> {
    None
}
