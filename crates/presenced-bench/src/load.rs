//! The load: open-loop presence PUTs at a fixed rate while observers
//! long-poll `/sync` and note when each update first shows up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Account, Homeserver, PutOutcome};
use crate::metrics::{self, Counters, NodeDeltas};
use crate::procfs;
use crate::setup::World;

/// How long an observer's `/sync` waits for news.
const SYNC_TIMEOUT_MS: u64 = 10_000;
/// How long every observer's first `/sync` may take.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// One update seen by one observer.
struct Sighting {
    observer: u32,
    user: u32,
    seq: u64,
    at: Instant,
}

/// The status message carrying a run id, the sender's layout index and a
/// sequence number, so an observer can match what it sees.
fn status_msg(run: &str, user: u32, seq: u64) -> String {
    format!("bench {run} {user} {seq}")
}

fn parse_status(msg: &str, run: &str) -> Option<(u32, u64)> {
    let mut parts = msg.strip_prefix("bench ")?.split(' ');
    if parts.next()? != run {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The observers, long-polling in the background for the whole run.
pub(crate) struct Observers {
    sightings: Arc<Mutex<Vec<Sighting>>>,
    sync_errors: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Observers {
    /// Starts every observer and returns once each has done its first sync.
    /// Observer `i` long-polls node `i % nodes` throughout.
    pub(crate) async fn start(
        hs: &Homeserver,
        observers: &[Account],
        run: &str,
    ) -> Result<Self, String> {
        let sightings = Arc::new(Mutex::new(Vec::new()));
        let sync_errors = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(Semaphore::new(0));
        let tasks = observers
            .iter()
            .enumerate()
            .map(|(i, account)| {
                let (hs, account, run) = (hs.node(i), account.clone(), run.to_owned());
                let (sightings, errors, ready) =
                    (sightings.clone(), sync_errors.clone(), ready.clone());
                tokio::spawn(async move {
                    observe(hs, i as u32, account, run, sightings, errors, ready).await;
                })
            })
            .collect();
        let this = Self {
            sightings,
            sync_errors,
            tasks,
        };
        let all = ready.acquire_many_owned(observers.len() as u32);
        let answer = tokio::time::timeout(FIRST_SYNC_TIMEOUT, all).await;
        match answer {
            Ok(_) => Ok(this),
            Err(_) => {
                this.stop();
                Err(format!(
                    "observers: not every first /sync succeeded within {}s",
                    FIRST_SYNC_TIMEOUT.as_secs()
                ))
            }
        }
    }

    fn take(&self) -> Vec<Sighting> {
        std::mem::take(&mut *self.sightings.lock().expect("not poisoned"))
    }

    pub(crate) fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn observe(
    hs: Homeserver,
    index: u32,
    account: Account,
    run: String,
    sightings: Arc<Mutex<Vec<Sighting>>>,
    errors: Arc<AtomicU64>,
    ready: Arc<Semaphore>,
) {
    let mut since: Option<String> = None;
    let target = hs.sync_target(&account);
    loop {
        let timeout = if since.is_some() { SYNC_TIMEOUT_MS } else { 0 };
        match hs.sync(&target, since.as_deref(), timeout).await {
            Ok(body) => {
                let at = Instant::now();
                let seen: Vec<Sighting> = body
                    .presence
                    .iter()
                    .flat_map(|p| &p.events)
                    .filter_map(|e| parse_status(e.content.status_msg.as_deref()?, &run))
                    .map(|(user, seq)| Sighting {
                        observer: index,
                        user,
                        seq,
                        at,
                    })
                    .collect();
                if !seen.is_empty() {
                    sightings.lock().expect("not poisoned").extend(seen);
                }
                if since.is_none() {
                    ready.add_permits(1);
                }
                since = Some(body.next_batch);
            }
            Err(e) => {
                if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("observer {index}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Settings of one load step.
pub(crate) struct Step {
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
}

/// A PUT still waiting for its user's previous one after this long is
/// dropped (and fails the step): it keeps an overloaded server's step
/// from running on for minutes.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Most warm-up PUTs in flight at once. The pool keeps the connections
/// they open; a connection per sender in workload 3 (99,000) would
/// measure idle connections (45–65 KiB each in the server, from RSS), not
/// presence.
const WARM_UP_CONNECTIONS: usize = 512;

/// One PUT the schedule asks a user to send.
struct Due {
    seq: u64,
    /// When the schedule wanted it sent: latencies count from here, so a
    /// PUT that had to wait behind its user's previous one is not measured
    /// as if it had been sent on time (no coordinated omission).
    at: Instant,
}

/// What one PUT did.
struct Put {
    seq: u64,
    user: u32,
    /// When it was due if it had to wait for the user's previous PUT,
    /// else when it was sent.
    start: Instant,
    /// From `start` to the answer.
    latency: Duration,
    /// Whether it waited for the user's previous PUT to be answered.
    queued: bool,
    outcome: PutOutcome,
}

/// One sender's PUTs, in schedule order: a client sends its next presence
/// after the previous one is answered (two of one user in flight could be
/// applied out of order), so a PUT due while the previous one is
/// outstanding waits its turn. `hs` is the user's node.
async fn send_in_turn(
    hs: Homeserver,
    world: Arc<World>,
    user: u32,
    sent_so_far: Arc<[AtomicU64]>,
    mut schedule: tokio::sync::mpsc::UnboundedReceiver<Due>,
    run: Arc<str>,
) -> Vec<Put> {
    let mut puts = Vec::new();
    let target = hs.presence_target(&world.users[user as usize]);
    // When the previous PUT was answered: a PUT due before that had to
    // wait for it.
    let mut free_since = Instant::now();
    while let Some(due) = schedule.recv().await {
        let waited = due.at.elapsed();
        let queued = due.at < free_since;
        if waited > MAX_QUEUE_WAIT {
            puts.push(Put {
                seq: due.seq,
                user,
                start: due.at,
                latency: waited,
                queued,
                outcome: PutOutcome::Dropped,
            });
            continue;
        }
        let count = sent_so_far[user as usize].fetch_add(1, Ordering::Relaxed);
        let presence = if count.is_multiple_of(2) {
            "online"
        } else {
            "unavailable"
        };
        let msg = status_msg(&run, user, due.seq);
        // A queued PUT is measured from when it was due (the wait is the
        // server's doing); one sent as soon as the tool's 1 ms timer got
        // to it, from its sending (that lag is the tool's).
        let start = if queued { due.at } else { Instant::now() };
        let outcome = hs.put_presence(&target, presence, &msg).await;
        free_since = Instant::now();
        puts.push(Put {
            seq: due.seq,
            user,
            start,
            latency: free_since - start,
            queued,
            outcome,
        });
    }
    puts
}

/// The figures of one load step.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StepResult {
    pub(crate) label: String,
    pub(crate) workload: String,
    pub(crate) users: usize,
    pub(crate) observers: usize,
    pub(crate) target_put_per_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) puts_sent: u64,
    pub(crate) accepted_put_per_s: f64,
    pub(crate) puts_ok: u64,
    pub(crate) errors: u64,
    pub(crate) rate_limited: u64,
    /// PUTs that had to wait for their user's previous PUT to be answered
    /// (their latency includes the wait).
    pub(crate) queued: u64,
    /// PUTs dropped after waiting more than 5 s for their turn.
    pub(crate) dropped: u64,
    pub(crate) put_p50_ms: f64,
    pub(crate) put_p99_ms: f64,
    pub(crate) delivery_p50_ms: f64,
    pub(crate) delivery_p99_ms: f64,
    pub(crate) delivery_max_ms: f64,
    pub(crate) deliveries_seen: u64,
    pub(crate) deliveries_expected: u64,
    /// Sightings by an observer that was not meant to see the sender.
    pub(crate) unexpected: u64,
    pub(crate) sync_errors: u64,
    pub(crate) server_cpu_ms_per_update: Option<f64>,
    pub(crate) server_cpu_percent: Option<f64>,
    pub(crate) server_peak_rss_mib: Option<f64>,
    /// CPU of the database server (`--db-pid`: a PostgreSQL postmaster and
    /// its backends) per accepted update, and in % of one core.
    pub(crate) db_cpu_ms_per_update: Option<f64>,
    pub(crate) db_cpu_percent: Option<f64>,
    /// CPU of this tool during the step (100 = one core).
    pub(crate) client_cpu_percent: Option<f64>,
    /// The machine's 1-minute load average at the end of the step (other
    /// work on the machine skews the figures).
    pub(crate) load_avg_1m: Option<f64>,
    /// Several nodes (or --metrics) only: the CPU ms each `--server-pid`
    /// used during the step, in the order given (their sum is what
    /// `server_cpu_ms_per_update` divides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_cpu_ms: Option<Vec<f64>>,
    /// Peak RSS of each `--server-pid` (`server_peak_rss_mib` is the
    /// largest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_peak_rss_mib: Option<Vec<f64>>,
    /// Seconds between the CPU readings (send time plus the drain): what
    /// `node_cpu_ms` accrued over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) wall_s: Option<f64>,
    /// With --metrics: per node (in `--base-url` order), what
    /// `presenced_sync_total`, `presenced_presence_wakes_total` and
    /// `presenced_presence_put_total` grew by over the same window.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) node_counters: Option<NodeDeltas>,
    /// With --synapse-metrics: the `/sync` requests Synapse received over
    /// the same window (companion mode's upstream cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) synapse_syncs: Option<u64>,
}

impl StepResult {
    /// Whether the server kept up at this rate with PUT→sync p99 ≤ `bound`:
    /// (nearly) every PUT sent and accepted, (nearly) every delivery seen.
    pub(crate) fn sustained(&self, bound: Duration) -> bool {
        let target = self.target_put_per_s * self.duration_s;
        let failed = self.errors + self.rate_limited + self.dropped;
        let missing = self.deliveries_expected - self.deliveries_seen;
        self.deliveries_expected > 0
            && self.puts_ok as f64 >= 0.95 * target
            && failed as f64 <= 0.001 * target
            && missing as f64 <= 0.001 * self.deliveries_expected as f64
            && self.delivery_p99_ms <= bound.as_secs_f64() * 1000.0
    }
}

/// Runs the load: sends, waits for late deliveries, measures.
pub(crate) struct Runner {
    pub(crate) hs: Homeserver,
    pub(crate) world: Arc<World>,
    pub(crate) observers: Observers,
    pub(crate) run: String,
    /// The server's process, or each node's (`--server-pid` repeated).
    pub(crate) server_pids: Vec<String>,
    /// Report per-node figures (several nodes or pids, or --metrics).
    pub(crate) per_node: bool,
    /// Read every node's /metrics before and after each step.
    pub(crate) metrics: bool,
    /// The database server's postmaster, whose process tree is measured.
    pub(crate) db_pid: Option<String>,
    /// Synapse's metrics URL (companion mode: presenced in front of it).
    pub(crate) synapse_metrics: Option<String>,
    pub(crate) label: String,
    pub(crate) workload: String,
    pub(crate) next_seq: u64,
    /// How many PUTs each updater has sent (its presence alternates).
    pub(crate) per_user: Arc<[AtomicU64]>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted values.
fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Runner {
    /// One unmeasured PUT per updater before the first step, at most
    /// [`WARM_UP_CONNECTIONS`] at a time: the shared connection pool then
    /// holds that many open connections (one per sender in workloads 1 and
    /// 2), and the first step does not time TCP connects.
    pub(crate) async fn warm_up(&mut self) {
        let mut set = JoinSet::new();
        for &user in &self.world.updaters {
            if set.len() >= WARM_UP_CONNECTIONS {
                set.join_next().await;
            }
            let (hs, world) = (self.hs.node(user as usize), self.world.clone());
            self.per_user[user as usize].fetch_add(1, Ordering::Relaxed);
            set.spawn(async move {
                let target = hs.presence_target(&world.users[user as usize]);
                hs.put_presence(&target, "online", "warm-up").await
            });
        }
        while set.join_next().await.is_some() {}
    }

    pub(crate) async fn step(&mut self, step: &Step) -> StepResult {
        let world = self.world.clone();
        let n = world.updaters.len() as u64;
        let total = (step.rate * step.duration.as_secs_f64()).round() as u64;
        let first_seq = self.next_seq;
        let _ = self.observers.take();
        let sync_errors0 = self.observers.sync_errors.load(Ordering::Relaxed);
        let pids = self.server_pids.clone();
        let counters0 = self.read_counters().await;
        let synapse_syncs0 = self.read_synapse_syncs().await;
        let server_cpu0: Vec<Option<Duration>> = pids.iter().map(|p| procfs::cpu_time(p)).collect();
        let db_pid = self.db_pid.clone();
        let db_cpu0 = db_pid.as_deref().and_then(procfs::tree_cpu_time);
        let client_cpu0 = procfs::cpu_time("self");

        // One sending task per updater, fed by the schedule below.
        let run: Arc<str> = self.run.as_str().into();
        let mut senders = Vec::with_capacity(world.updaters.len());
        let mut set: JoinSet<Vec<Put>> = JoinSet::new();
        for &user in &world.updaters {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            senders.push(tx);
            set.spawn(send_in_turn(
                self.hs.node(user as usize),
                world.clone(),
                user,
                self.per_user.clone(),
                rx,
                run.clone(),
            ));
        }
        let started = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < total {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * step.rate).ceil() as u64).min(total);
            while sent < due {
                let seq = self.next_seq;
                self.next_seq += 1;
                // When this PUT was due on an exact schedule, not when the
                // tick happened to run.
                let at = started + Duration::from_secs_f64(sent as f64 / step.rate);
                sent += 1;
                let _ = senders[(seq % n) as usize].send(Due { seq, at });
            }
        }
        drop(senders);
        let mut puts = Vec::with_capacity(total as usize);
        let send_time = started.elapsed();
        while let Some(done) = set.join_next().await {
            puts.extend(done.unwrap_or_default());
        }
        tokio::time::sleep(step.drain).await;
        let server_cpu1: Vec<Option<Duration>> = pids.iter().map(|p| procfs::cpu_time(p)).collect();
        let db_cpu1 = db_pid.as_deref().and_then(procfs::tree_cpu_time);
        let client_cpu1 = procfs::cpu_time("self");
        let wall = started.elapsed();
        let counters1 = self.read_counters().await;
        let synapse_syncs1 = self.read_synapse_syncs().await;
        let sightings = self.observers.take();
        let sync_errors = self.observers.sync_errors.load(Ordering::Relaxed) - sync_errors0;

        // Per (observer, sender): sightings sorted by seq, with the earliest
        // time any state at least that new was seen (sync returns the
        // latest state, so a newer one also delivers an older update).
        let mut seen: HashMap<(u32, u32), Vec<(u64, Instant)>> = HashMap::new();
        let mut unexpected = 0;
        for s in sightings.into_iter().filter(|s| s.seq >= first_seq) {
            if world
                .audience
                .get(s.user as usize)
                .is_none_or(|a| a.binary_search(&s.observer).is_err())
            {
                unexpected += 1;
                continue;
            }
            seen.entry((s.observer, s.user))
                .or_default()
                .push((s.seq, s.at));
        }
        for list in seen.values_mut() {
            list.sort_unstable_by_key(|&(seq, _)| seq);
            for i in (0..list.len().saturating_sub(1)).rev() {
                list[i].1 = list[i].1.min(list[i + 1].1);
            }
        }
        let mut put_lat = Vec::with_capacity(puts.len());
        let mut delivery = Vec::new();
        let (mut ok, mut errors, mut limited, mut dropped, mut expected) = (0, 0, 0, 0, 0u64);
        let queued = puts.iter().filter(|p| p.queued).count() as u64;
        for p in &puts {
            put_lat.push(p.latency);
            match p.outcome {
                PutOutcome::Dropped => {
                    dropped += 1;
                    continue;
                }
                PutOutcome::Ok => ok += 1,
                PutOutcome::RateLimited => {
                    limited += 1;
                    continue;
                }
                PutOutcome::Error => {
                    errors += 1;
                    continue;
                }
            }
            for &o in &world.audience[p.user as usize] {
                expected += 1;
                let Some(list) = seen.get(&(o, p.user)) else {
                    continue;
                };
                let i = list.partition_point(|&(seq, _)| seq < p.seq);
                if let Some(&(_, at)) = list.get(i) {
                    delivery.push(at.saturating_duration_since(p.start));
                }
            }
        }
        put_lat.sort_unstable();
        delivery.sort_unstable();
        // Per pid, then the sum (none if any pid could not be read).
        let node_cpu: Option<Vec<Duration>> = server_cpu0
            .iter()
            .zip(&server_cpu1)
            .map(|(a, b)| Some(b.as_ref()?.saturating_sub((*a)?)))
            .collect();
        let cpu = node_cpu
            .as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<Duration>());
        let node_rss: Option<Vec<f64>> = pids
            .iter()
            .map(|p| procfs::peak_rss(p).map(|b| b as f64 / (1024.0 * 1024.0)))
            .collect();
        let node_rss = node_rss.filter(|v| !v.is_empty());
        let db_cpu = match (db_cpu0, db_cpu1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let client_cpu = match (client_cpu0, client_cpu1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let send_s = send_time.as_secs_f64().max(step.duration.as_secs_f64());
        StepResult {
            label: self.label.clone(),
            workload: self.workload.clone(),
            users: world.users.len(),
            observers: world.observers.len(),
            target_put_per_s: step.rate,
            duration_s: step.duration.as_secs_f64(),
            puts_sent: sent - dropped,
            accepted_put_per_s: ok as f64 / send_s,
            puts_ok: ok,
            errors,
            rate_limited: limited,
            queued,
            dropped,
            put_p50_ms: ms(quantile(&put_lat, 0.5)),
            put_p99_ms: ms(quantile(&put_lat, 0.99)),
            delivery_p50_ms: ms(quantile(&delivery, 0.5)),
            delivery_p99_ms: ms(quantile(&delivery, 0.99)),
            delivery_max_ms: ms(delivery.last().copied().unwrap_or_default()),
            deliveries_seen: delivery.len() as u64,
            deliveries_expected: expected,
            unexpected,
            sync_errors,
            server_cpu_ms_per_update: cpu.filter(|_| ok > 0).map(|c| ms(c) / ok as f64),
            server_cpu_percent: cpu.map(|c| 100.0 * c.as_secs_f64() / wall.as_secs_f64()),
            db_cpu_ms_per_update: db_cpu.filter(|_| ok > 0).map(|c| ms(c) / ok as f64),
            db_cpu_percent: db_cpu.map(|c| 100.0 * c.as_secs_f64() / wall.as_secs_f64()),
            server_peak_rss_mib: node_rss
                .as_ref()
                .map(|v| v.iter().copied().fold(0.0, f64::max)),
            client_cpu_percent: client_cpu.map(|c| 100.0 * c.as_secs_f64() / wall.as_secs_f64()),
            load_avg_1m: procfs::load_avg(),
            node_cpu_ms: node_cpu
                .filter(|_| self.per_node)
                .map(|v| v.into_iter().map(ms).collect()),
            node_peak_rss_mib: node_rss.filter(|_| self.per_node),
            wall_s: self.per_node.then_some(wall.as_secs_f64()),
            node_counters: match (counters0, counters1) {
                (Some(a), Some(b)) => Some(metrics::deltas(&a, &b)),
                _ => None,
            },
            synapse_syncs: synapse_syncs0
                .zip(synapse_syncs1)
                .map(|(a, b)| b.saturating_sub(a)),
        }
    }

    /// Synapse's `/sync` request count, with --synapse-metrics (none, with
    /// a warning, when it does not answer).
    async fn read_synapse_syncs(&self) -> Option<u64> {
        let url = self.synapse_metrics.as_deref()?;
        match self.hs.get_text(url).await {
            Ok(text) => Some(metrics::synapse_syncs(&text)),
            Err(e) => {
                eprintln!("synapse metrics: {e}");
                None
            }
        }
    }

    /// Every node's counters, with --metrics (none, with a warning, when a
    /// node does not answer).
    async fn read_counters(&self) -> Option<Vec<Counters>> {
        if !self.metrics {
            return None;
        }
        match self.hs.metrics().await {
            Ok(texts) => Some(texts.iter().map(|t| Counters::parse(t)).collect()),
            Err(e) => {
                eprintln!("metrics: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_other_runs_are_ignored() {
        let m = status_msg("r1", 7, 42);
        assert_eq!(parse_status(&m, "r1"), Some((7, 42)));
        assert_eq!(parse_status(&m, "r2"), None);
        assert_eq!(parse_status("writing docs", "r1"), None);
    }

    #[test]
    fn quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
