//! `presenced-bench`: presence load against any Matrix homeserver over the
//! client-server API (presenced, Synapse, ...), so the same tool measures
//! both.
//!
//! Setup registers users through the shared-secret admin API
//! (`/_synapse/admin/v1/register`), builds the rooms of a
//! `presenced-workload` layout (the creator invites, members join), then an
//! open-loop load sends presence PUTs at a fixed rate spread over the users
//! (alternating online/unavailable, with a status message carrying a
//! sequence number) while observers long-poll `/sync?set_presence=offline`
//! and note when each update first shows up.
//!
//! Workloads:
//! - `rooms`: 200 users in rooms of 10; 20 of them (one per room) observe.
//! - `observers`: as `rooms`, plus 10 monitor users in no room that the
//!   server routes everyone's presence to (presenced:
//!   `presenced.routers.Observers`; Synapse: an equivalent presence router
//!   module). Their names are fixed: `<monitor-prefix>0..9`.
//! - `scale`: the realistic layout (`LayoutSpec::realistic`), 100,000 users,
//!   1,000 observing members.
//!
//! Cluster mode: `--base-url` and `--server-pid` repeated, one per node.
//! Updater `u`'s PUTs go to node `u % n` and observer `i`'s syncs to node
//! `i % n` (fixed, so one user's writes stay on one front door); setup goes
//! to the first node. Steps then also report each pid's CPU (`node_cpu_ms`)
//! and, with `--metrics`, each node's sync, wake-up and PUT counters
//! (`scripts/bench-cluster`, SCALING.md).
//!
//! See BENCHMARKS.md for the figures and how to reproduce them.

mod client;
mod load;
mod load_http;
mod metrics;
mod procfs;
mod setup;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use presenced_workload::{Layout, LayoutSpec};
use serde::Serialize;

use crate::client::Homeserver;
use crate::load::{Observers, Runner, Step, StepResult};

/// The same allocator as the server: the tool shares the cores with the
/// server it measures, so its own malloc time lowers what it can offer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Workload {
    Rooms,
    Observers,
    Scale,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Rooms => "rooms",
            Self::Observers => "observers",
            Self::Scale => "scale",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "presenced-bench",
    version,
    about = "Presence load against a Matrix homeserver"
)]
struct Args {
    /// Client-server API base URL (loopback only is sensible). Repeat it for
    /// the nodes of a cluster: the load is spread over them (user `u` and
    /// observer `i` to node `u % n` / `i % n`; setup to the first).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: Vec<String>,
    /// The server's `registration_shared_secret`.
    #[arg(long, env = "BENCH_SHARED_SECRET")]
    shared_secret: String,
    /// Which fixed workload to run.
    #[arg(long, value_enum, default_value = "rooms")]
    workload: Workload,
    /// Users in rooms [rooms/observers: 200, scale: 100000].
    #[arg(long)]
    users: Option<usize>,
    /// Room size of the rooms/observers layout.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Room members that long-poll /sync [rooms/observers: 20, scale: 1000].
    #[arg(long)]
    observers: Option<usize>,
    /// Routed monitor users in no room [observers: 10, else 0].
    #[arg(long)]
    monitors: Option<usize>,
    /// Localpart prefix of the monitors (the server's router config must
    /// list `@<prefix>0:server` ...).
    #[arg(long, default_value = "monitor")]
    monitor_prefix: String,
    /// Target presence PUTs per second (with --find-max: the first step).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of load per step.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Steps at --rate, one after the other on the same users (without
    /// --find-max): repeated measurements of one load.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Seconds to wait after the last PUT answer for late deliveries.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// PID of the server, to report its CPU time and peak RSS from /proc.
    /// Repeat it for several nodes: CPU per update is then their sum, and
    /// each pid's CPU is reported as `node_cpu_ms`.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Read every node's `GET /metrics` (needs `enable_metrics: true`)
    /// before and after each step and report per-node deltas of sync
    /// responses, presence wake-ups and PUTs.
    #[arg(long)]
    metrics: bool,
    /// Synapse's metrics URL (`.../_synapse/metrics`): each step reports the
    /// `/sync` requests Synapse received (companion mode's upstream cost).
    #[arg(long)]
    synapse_metrics: Option<String>,
    /// PID of the database server's postmaster (PostgreSQL): its CPU and its
    /// backends' is reported per step as `db_cpu_ms_per_update`.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Raise the rate (×--step-factor) until the server stops keeping up;
    /// report the highest sustained rate for PUT→sync p99 bounds 1 s and 10 ms.
    #[arg(long)]
    find_max: bool,
    /// Rate multiplier between --find-max steps.
    #[arg(long, default_value_t = 2.0)]
    step_factor: f64,
    /// Bisection steps after the first failure of each bound.
    #[arg(long, default_value_t = 1)]
    refine: usize,
    /// Highest rate --find-max tries.
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// Setup requests in flight at once.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Name of the server in the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// JSON lines instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Worker threads of the tool's runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The --find-max verdict.
#[derive(Serialize)]
struct MaxResult {
    label: String,
    workload: String,
    kind: &'static str,
    max_put_per_s_p99_1s: Option<f64>,
    max_put_per_s_p99_10ms: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presenced-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn emit_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(value).expect("serializable")
    );
    let _ = out.flush();
}

async fn run(args: Args) -> Result<(), String> {
    let w = args.workload;
    let users = args.users.unwrap_or(match w {
        Workload::Scale => 100_000,
        _ => 200,
    });
    let k = args.observers.unwrap_or(match w {
        Workload::Scale => 1_000,
        _ => 20,
    });
    let monitors = args.monitors.unwrap_or(match w {
        Workload::Observers => 10,
        _ => 0,
    });
    if !(args.rate > 0.0 && args.duration > 0.0 && args.step_factor > 1.0) {
        return Err("--rate and --duration must be > 0, --step-factor > 1".to_owned());
    }
    // The layout's own observers are users in no room: here, the monitors.
    let spec = match w {
        Workload::Scale => LayoutSpec {
            observers: monitors,
            ..LayoutSpec::realistic(users)
        },
        _ => LayoutSpec {
            observers: monitors,
            ..LayoutSpec::uniform_rooms(users, args.room_size, k)
        },
    };
    let layout = Layout::generate(&spec);
    let plan = setup::plan(&layout, k, monitors);
    if plan.updaters.is_empty() {
        return Err("no user left to send presence (too many observers)".to_owned());
    }
    let run = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    eprintln!(
        "{}: workload {}, {} users in {} rooms, {} observers + {} monitors, run {run}",
        args.label,
        w.name(),
        users,
        layout.rooms.len(),
        plan.room_observers.len(),
        monitors
    );
    let hs = Homeserver::new(&args.base_url).await?;
    if hs.node_count() > 1 {
        eprintln!(
            "{}: load spread over {} nodes: {}",
            args.label,
            hs.node_count(),
            args.base_url.join(" ")
        );
    }
    let per_node = hs.node_count() > 1 || args.server_pid.len() > 1 || args.metrics;
    let world = setup::build(
        &hs,
        &args.shared_secret,
        &layout,
        plan,
        setup::Naming {
            run: &run,
            monitor_prefix: &args.monitor_prefix,
            monitors,
            concurrency: args.setup_concurrency,
        },
    )
    .await?;
    let observers = Observers::start(&hs, &world.observers, &run).await?;
    let n_users = world.users.len();
    let mut runner = Runner {
        hs,
        world: Arc::new(world),
        observers,
        run,
        server_pids: args.server_pid.iter().map(u32::to_string).collect(),
        per_node,
        metrics: args.metrics,
        db_pid: args.db_pid.map(|p| p.to_string()),
        synapse_metrics: args.synapse_metrics.clone(),
        label: args.label.clone(),
        workload: w.name().to_owned(),
        next_seq: 0,
        per_user: (0..n_users).map(|_| AtomicU64::new(0)).collect(),
    };
    runner.warm_up().await;
    let step = |rate| Step {
        rate,
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain),
    };
    let mut results = Vec::new();
    let mut do_step = async |runner: &mut Runner, rate: f64| -> StepResult {
        eprintln!("{}: {} PUT/s for {}s ...", args.label, rate, args.duration);
        let r = runner.step(&step(rate)).await;
        if args.json {
            emit_json(&r);
        }
        eprintln!(
            "  ok {:.0}/s, deliveries {}/{}, p99 {:.1} ms, cpu/update {}",
            r.accepted_put_per_s,
            r.deliveries_seen,
            r.deliveries_expected,
            r.delivery_p99_ms,
            r.server_cpu_ms_per_update
                .map_or("-".to_owned(), |c| format!("{c:.3} ms"))
        );
        if let Some(line) = node_line(&r) {
            eprintln!("{line}");
        }
        results.push(r.clone());
        r
    };

    let bounds = [Duration::from_secs(1), Duration::from_millis(10)];
    let mut best: [Option<f64>; 2] = [None, None];
    if args.find_max {
        // Geometric search for the 1 s bound, noting the 10 ms one on the way.
        let mut fail: [Option<f64>; 2] = [None, None];
        let mut rate = args.rate;
        let note = |r: &StepResult, best: &mut [Option<f64>; 2], fail: &mut [Option<f64>; 2]| {
            for (i, b) in bounds.iter().enumerate() {
                if r.sustained(*b) {
                    if best[i].is_none_or(|x| r.target_put_per_s > x) {
                        best[i] = Some(r.target_put_per_s);
                    }
                } else if fail[i].is_none_or(|x| r.target_put_per_s < x) {
                    fail[i] = Some(r.target_put_per_s);
                }
            }
        };
        loop {
            let r = do_step(&mut runner, rate).await;
            note(&r, &mut best, &mut fail);
            if fail[0].is_some() || rate * args.step_factor > args.max_rate {
                break;
            }
            rate = (rate * args.step_factor).round();
        }
        for i in 0..2 {
            for _ in 0..args.refine {
                let (Some(lo), Some(hi)) = (best[i], fail[i]) else {
                    break;
                };
                if hi <= lo {
                    break;
                }
                let mid = ((lo + hi) / 2.0).round();
                if mid <= lo || mid >= hi {
                    break;
                }
                let r = do_step(&mut runner, mid).await;
                note(&r, &mut best, &mut fail);
            }
        }
        if args.json {
            emit_json(&MaxResult {
                label: args.label.clone(),
                workload: w.name().to_owned(),
                kind: "find_max",
                max_put_per_s_p99_1s: best[0],
                max_put_per_s_p99_10ms: best[1],
            });
        }
    } else {
        for _ in 0..args.repeat.max(1) {
            do_step(&mut runner, args.rate).await;
        }
    }
    runner.observers.stop();

    if !args.json {
        print_table(&results);
        if args.find_max {
            let f = |x: Option<f64>| x.map_or("none".to_owned(), |x| format!("{x:.0} PUT/s"));
            println!();
            println!(
                "Highest sustained rate: {} (PUT→sync p99 ≤ 1 s), {} (p99 ≤ 10 ms)",
                f(best[0]),
                f(best[1])
            );
        }
    }
    Ok(())
}

/// The compact per-node line of a step (several nodes or --metrics).
fn node_line(r: &StepResult) -> Option<String> {
    let mut parts = Vec::new();
    if let (Some(cpu), Some(wall)) = (&r.node_cpu_ms, r.wall_s) {
        let list: Vec<String> = cpu.iter().map(|c| format!("{c:.0}")).collect();
        let pct: Vec<String> = cpu
            .iter()
            .map(|c| format!("{:.1}%", c / 10.0 / wall))
            .collect();
        parts.push(format!(
            "cpu ms [{}] in {wall:.1}s ({})",
            list.join(", "),
            pct.join(", ")
        ));
    }
    if let Some(c) = &r.node_counters {
        parts.push(format!(
            "syncs {:?}, wakes {:?}, puts {:?}",
            c.node_syncs, c.node_wakes, c.node_puts
        ));
    }
    (!parts.is_empty()).then(|| format!("  nodes: {}", parts.join("; ")))
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_owned(), |x| format!("{x:.digits$}"))
}

fn print_table(results: &[StepResult]) {
    println!(
        "| server | workload | target PUT/s | accepted PUT/s | errors | 429 | queued | dropped | PUT p50 ms | PUT p99 ms | deliv p50 ms | deliv p99 ms | deliv max ms | seen/expected | CPU ms/update | server CPU % | peak RSS MiB | tool CPU % |"
    );
    println!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        println!(
            "| {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} | {} | {} | {} | {} |",
            r.label,
            r.workload,
            r.target_put_per_s,
            r.accepted_put_per_s,
            r.errors,
            r.rate_limited,
            r.queued,
            r.dropped,
            r.put_p50_ms,
            r.put_p99_ms,
            r.delivery_p50_ms,
            r.delivery_p99_ms,
            r.delivery_max_ms,
            r.deliveries_seen,
            r.deliveries_expected,
            opt(r.server_cpu_ms_per_update, 3),
            opt(r.server_cpu_percent, 0),
            opt(r.server_peak_rss_mib, 1),
            opt(r.client_cpu_percent, 0),
        );
    }
}
