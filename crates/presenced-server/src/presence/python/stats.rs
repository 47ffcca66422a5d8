//! Counters of the Python modules and their host, for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::host::CallError;

/// Upper bounds (seconds) of the call duration buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// One module's calls.
#[derive(Default)]
pub struct ModuleCalls {
    calls: AtomicU64,
    exception: AtomicU64,
    wrong_type: AtomicU64,
    deadline: AtomicU64,
    host_down: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    micros: AtomicU64,
    interest_cache_hits: AtomicU64,
}

impl ModuleCalls {
    /// One finished call.
    pub fn record(&self, took: Duration, outcome: Result<(), &CallError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let counter = match outcome {
            Ok(()) => return,
            Err(CallError::Exception(_)) => &self.exception,
            Err(CallError::WrongType(_)) => &self.wrong_type,
            Err(CallError::Deadline) => &self.deadline,
            Err(CallError::HostDown) => &self.host_down,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A `get_interested_users` answer came from the short cache.
    pub fn cache_hit(&self) {
        self.interest_cache_hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every Python module's counters and the host's restarts.
#[derive(Default)]
pub struct HostStats {
    modules: Mutex<Vec<(String, std::sync::Arc<ModuleCalls>)>>,
    restarts: Mutex<BTreeMap<&'static str, u64>>,
}

impl HostStats {
    /// The counters of a module (one set per configured entry).
    pub fn module(&self, name: &str) -> std::sync::Arc<ModuleCalls> {
        let calls = std::sync::Arc::new(ModuleCalls::default());
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_owned(), calls.clone()));
        calls
    }

    /// The host was killed or failed to start again, for `reason`.
    pub fn restarted(&self, reason: &'static str) {
        *self
            .restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Host restarts so far, all reasons.
    pub fn restarts(&self) -> u64 {
        self.restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// Prometheus text for these counters.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        family(
            &mut out,
            "presenced_python_module_calls_total",
            "Calls of Python presence router callbacks.",
            "counter",
        );
        for (name, c) in modules.iter() {
            let _ = writeln!(
                out,
                "presenced_python_module_calls_total{{module=\"{}\"}} {}",
                label(name),
                c.calls.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "presenced_python_module_errors_total",
            "Failed Python router calls by kind (their answers count as empty).",
            "counter",
        );
        for (name, c) in modules.iter() {
            for (kind, counter) in [
                ("exception", &c.exception),
                ("wrong_type", &c.wrong_type),
                ("deadline", &c.deadline),
                ("host_down", &c.host_down),
            ] {
                let _ = writeln!(
                    out,
                    "presenced_python_module_errors_total{{module=\"{}\",kind=\"{kind}\"}} {}",
                    label(name),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        family(
            &mut out,
            "presenced_python_module_interest_cache_hits_total",
            "get_interested_users answers served from the per-user cache.",
            "counter",
        );
        for (name, c) in modules.iter() {
            let _ = writeln!(
                out,
                "presenced_python_module_interest_cache_hits_total{{module=\"{}\"}} {}",
                label(name),
                c.interest_cache_hits.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "presenced_python_module_call_seconds",
            "Duration of Python router calls, round trip through the host.",
            "histogram",
        );
        for (name, c) in modules.iter() {
            let name = label(name);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += c.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "presenced_python_module_call_seconds_bucket{{module=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = c.calls.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "presenced_python_module_call_seconds_bucket{{module=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "presenced_python_module_call_seconds_sum{{module=\"{name}\"}} {}",
                c.micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "presenced_python_module_call_seconds_count{{module=\"{name}\"}} {count}"
            );
        }
        family(
            &mut out,
            "presenced_python_host_restarts_total",
            "Times the Python module host was killed and restarted, by reason.",
            "counter",
        );
        let restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        for reason in ["exited", "stalled", "memory", "start_failed"] {
            let _ = writeln!(
                out,
                "presenced_python_host_restarts_total{{reason=\"{reason}\"}} {}",
                restarts.get(reason).copied().unwrap_or(0)
            );
        }
        out
    }
}
