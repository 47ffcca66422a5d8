//! `GET /metrics`: Prometheus text format (exposition format 0.0.4).
//!
//! Hand-written rather than built on the `prometheus-client` crate: most
//! numbers are pulled at scrape time from snapshots the engine and the
//! router already keep ([`EngineStats`], [`ModuleStats`]), which would need
//! a custom collector there anyway, and the few counters the handlers own
//! are atomics. The text format is a handful of line shapes, written by
//! [`TextWriter`] below.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use presenced_engine::EngineStats;
use presenced_router::ModuleStats;

use crate::api::state::HeldState;
use crate::federation::presence_edu::DropReason;
use crate::federation::sender::OutboundStats;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the `/sync` latency histogram buckets. Long
/// polls sit in the upper buckets by design.
const SYNC_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Counters owned by the HTTP handlers (the engine and router keep theirs).
#[derive(Default)]
pub struct Metrics {
    presence_puts: AtomicU64,
    sync: Histogram,
    federation_transactions: AtomicU64,
    federation_refused: AtomicU64,
    /// Per [`DropReason::ALL`] entry.
    presence_entries_refused: [AtomicU64; 3],
    /// Federation requests refused without a key look-up because the
    /// origin's key failed recently (the negative cache).
    key_lookups_negative: AtomicU64,
    /// ... or because too many look-ups were already running.
    key_lookups_busy: AtomicU64,
}

impl Metrics {
    /// A `PUT /presence/{userId}/status` was applied.
    pub fn presence_put(&self) {
        self.presence_puts.fetch_add(1, Ordering::Relaxed);
    }

    /// A signed federation transaction was accepted (repeats included).
    pub fn federation_transaction(&self) {
        self.federation_transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// A federation request was refused for its authorization (401/403).
    pub fn federation_refused(&self) {
        self.federation_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// An `m.presence` entry from another server was dropped.
    pub fn presence_entry_refused(&self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.presence_entries_refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A federation request was refused without looking its origin's key
    /// up: the last look-up failed too recently (`busy` false) or too many
    /// look-ups are running (`busy` true).
    pub fn key_lookup_refused(&self, busy: bool) {
        let counter = if busy {
            &self.key_lookups_busy
        } else {
            &self.key_lookups_negative
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts timing a `/sync`; the time is recorded when the guard drops,
    /// so failed and cancelled syncs count too.
    pub fn sync_timer(&self) -> SyncTimer<'_> {
        SyncTimer {
            histogram: &self.sync,
            started: Instant::now(),
        }
    }

    /// The whole scrape: these counters plus the engine and router snapshots.
    pub fn render(
        &self,
        engine: &EngineStats,
        modules: &[ModuleStats],
        outbound: &OutboundStats,
        outbox_pending: u64,
    ) -> String {
        let mut w = TextWriter::default();
        let gauges: [(&str, &str, u64); 8] = [
            (
                "presenced_federation_outbox_pending",
                "Presence states queued for remote servers, not yet acknowledged.",
                outbox_pending,
            ),
            (
                "presenced_presence_users_tracked",
                "Users with presence state (local and remote).",
                engine.users_tracked as u64,
            ),
            (
                "presenced_presence_local_users",
                "Local users with presence state.",
                engine.local_users as u64,
            ),
            (
                "presenced_presence_users_not_offline",
                "Users whose presence is not offline.",
                engine.users_not_offline as u64,
            ),
            (
                "presenced_presence_rooms",
                "Rooms in the presence membership index.",
                engine.rooms as u64,
            ),
            (
                "presenced_presence_timers",
                "Users with a pending presence timer.",
                engine.timers as u64,
            ),
            (
                "presenced_presence_stream_position",
                "Current presence stream position.",
                engine.stream_position,
            ),
            (
                "presenced_router_batches_in_flight",
                "Presence batches waiting for a router answer.",
                engine.batches_in_flight as u64,
            ),
        ];
        for (name, help, value) in gauges {
            w.family(name, help, "gauge");
            w.sample(name, &[], value);
        }
        let counters: [(&str, &str, u64); 13] = [
            (
                "presenced_federation_outbound_states_delivered_total",
                "Presence states acknowledged by remote servers since start.",
                outbound.states_delivered.load(Ordering::Relaxed),
            ),
            (
                "presenced_federation_outbound_transactions_total",
                "Presence transactions acknowledged by remote servers since start.",
                outbound.transactions_sent.load(Ordering::Relaxed),
            ),
            (
                "presenced_federation_outbound_transactions_failed_total",
                "Presence transactions that failed (and are retried) since start.",
                outbound.transactions_failed.load(Ordering::Relaxed),
            ),
            (
                "presenced_presence_notified_changes_total",
                "Presence changes written to the stream since start.",
                engine.notified_changes,
            ),
            (
                "presenced_presence_wakes_total",
                "Waiting syncs woken by presence since start.",
                engine.wakes,
            ),
            (
                "presenced_federation_presence_states_sent_total",
                "Presence states queued for remote servers since start.",
                engine.federation_states_sent,
            ),
            (
                "presenced_federation_presence_accepted_total",
                "Remote presence entries accepted since start.",
                engine.remote_accepted,
            ),
            (
                "presenced_federation_presence_dropped_total",
                "Remote presence entries dropped since start.",
                engine.remote_dropped,
            ),
            (
                "presenced_federation_presence_users_evicted_total",
                "Remote users forgotten to keep a server within presence.max_remote_users_per_server.",
                engine.remote_evicted,
            ),
            (
                "presenced_federation_transactions_total",
                "Signed federation transactions accepted since start (repeats included).",
                self.federation_transactions.load(Ordering::Relaxed),
            ),
            (
                "presenced_federation_requests_refused_total",
                "Federation requests refused for their authorization (401/403) since start.",
                self.federation_refused.load(Ordering::Relaxed),
            ),
            (
                "presenced_presence_put_total",
                "Presence updates by PUT /presence/{userId}/status.",
                self.presence_puts.load(Ordering::Relaxed),
            ),
            (
                "presenced_sync_total",
                "Sync requests served (any outcome).",
                self.sync.count.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            w.family(name, help, "counter");
            w.sample(name, &[], value);
        }
        let name = "presenced_federation_presence_entries_refused_total";
        w.family(
            name,
            "m.presence entries from other servers dropped before the engine, by reason (local_user: names a user of this server; other_server: names a user of a server other than the origin; invalid: bad types or values).",
            "counter",
        );
        for (reason, count) in DropReason::ALL.iter().zip(&self.presence_entries_refused) {
            w.sample(
                name,
                &[("reason", reason.label())],
                count.load(Ordering::Relaxed),
            );
        }
        let name = "presenced_federation_key_lookups_refused_total";
        w.family(
            name,
            "Federation requests refused without fetching the origin's key (negative_cache: a look-up failed recently; busy: too many look-ups running).",
            "counter",
        );
        for (reason, count) in [
            ("negative_cache", &self.key_lookups_negative),
            ("busy", &self.key_lookups_busy),
        ] {
            w.sample(name, &[("reason", reason)], count.load(Ordering::Relaxed));
        }
        self.sync.render(
            &mut w,
            "presenced_sync_duration_seconds",
            "Time to answer a sync, long-poll wait included.",
        );
        type Field = fn(&ModuleStats) -> u64;
        let per_module: [(&str, &str, Field); 4] = [
            (
                "presenced_router_calls_total",
                "Router module callback calls.",
                |m| m.calls,
            ),
            (
                "presenced_router_errors_total",
                "Router module calls that returned an error.",
                |m| m.errors,
            ),
            (
                "presenced_router_panics_total",
                "Router module calls that panicked.",
                |m| m.panics,
            ),
            (
                "presenced_router_timeouts_total",
                "Router module calls that missed their deadline.",
                |m| m.timeouts,
            ),
        ];
        for (name, help, field) in per_module {
            w.family(name, help, "counter");
            for m in modules {
                w.sample(name, &[("module", &m.name)], field(m));
            }
        }
        let name = "presenced_router_latency_seconds_total";
        w.family(name, "Time spent in router module calls.", "counter");
        for m in modules {
            w.sample(name, &[("module", &m.name)], m.total_latency.as_secs_f64());
        }
        w.out
    }
}

/// The gauges of request-grown state (each capped by `request_limits`),
/// appended to the scrape by `GET /metrics`.
pub fn render_held_state(held: &HeldState) -> String {
    let mut w = TextWriter::default();
    let gauges: [(&str, &str, usize); 4] = [
        (
            "presenced_uia_sessions",
            "Open user-interactive-auth sessions (at most request_limits.max_uia_sessions).",
            held.uia_sessions,
        ),
        (
            "presenced_registration_nonces",
            "Unused shared-secret registration nonces (at most request_limits.max_registration_nonces).",
            held.registration_nonces,
        ),
        (
            "presenced_rate_limit_buckets",
            "Buckets held by all rate limiters together (each at most request_limits.max_rate_limit_keys).",
            held.rate_limit_buckets,
        ),
        (
            "presenced_cached_filters",
            "Stored sync filters cached in memory.",
            held.cached_filters,
        ),
    ];
    for (name, help, value) in gauges {
        w.family(name, help, "gauge");
        w.sample(name, &[], value);
    }
    w.out
}

/// Records a sync's duration when dropped.
pub struct SyncTimer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for SyncTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

/// A fixed-bucket histogram of durations.
#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); cumulated when rendered.
    buckets: [AtomicU64; SYNC_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = SYNC_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, w: &mut TextWriter, name: &str, help: &str) {
        w.family(name, help, "histogram");
        // Count first, so a concurrent observation cannot make a bucket
        // exceed +Inf in this scrape.
        let count = self.count.load(Ordering::Relaxed);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (le, n) in SYNC_BUCKETS.iter().zip(&self.buckets) {
            cumulative = (cumulative + n.load(Ordering::Relaxed)).min(count);
            w.sample(&bucket, &[("le", &le.to_string())], cumulative);
        }
        w.sample(&bucket, &[("le", "+Inf")], count);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        w.sample(&format!("{name}_sum"), &[], sum);
        w.sample(&format!("{name}_count"), &[], count);
    }
}

/// Writes the text format's three line shapes.
#[derive(Default)]
struct TextWriter {
    out: String,
}

impl TextWriter {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let value = value
                    .replace('\\', r"\\")
                    .replace('"', "\\\"")
                    .replace('\n', r"\n");
                let _ = write!(self.out, "{key}=\"{value}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_cumulate() {
        let mut w = TextWriter::default();
        w.sample("x_total", &[("module", "a\"b\\c\nd")], 3);
        assert_eq!(w.out, "x_total{module=\"a\\\"b\\\\c\\nd\"} 3\n");

        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(200));
        h.observe(Duration::from_secs(500));
        let mut w = TextWriter::default();
        h.render(&mut w, "s", "help");
        assert!(w.out.contains("s_bucket{le=\"0.005\"} 1\n"), "{}", w.out);
        assert!(w.out.contains("s_bucket{le=\"0.25\"} 2\n"), "{}", w.out);
        assert!(w.out.contains("s_bucket{le=\"120\"} 2\n"), "{}", w.out);
        assert!(w.out.contains("s_bucket{le=\"+Inf\"} 3\n"), "{}", w.out);
        assert!(w.out.contains("s_count 3\n"), "{}", w.out);
    }
}
