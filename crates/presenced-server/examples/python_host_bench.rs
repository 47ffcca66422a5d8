//! Calls per second and latency of the Python module host, through the
//! real pipe and the real host, with the module API docs' example router
//! (`python/fixtures/custom_router.py`).
//!
//! `cargo run --release -p presenced-server --example python_host_bench [-- CALLS]`
//! (`PRESENCED_PYTHON` picks the interpreter). Prints one line per row:
//! 100-state `get_users_for_states` batches and `get_interested_users`,
//! one caller and 64 concurrent callers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_engine::{Presence, PresenceState, Timestamp};
use presenced_server::presence::python::host::{HostSpec, PythonHost};
use presenced_server::presence::python::protocol::{InitModule, ToHost, WireState};
use presenced_server::presence::python::stats::HostStats;
use ruma_common::OwnedUserId;

fn batch() -> Vec<PresenceState> {
    // Every 10th state is bob's and every 10th+5 charlie's, so the example
    // answers {alice: 20 states} (the spike's batch).
    (0..100)
        .map(|i| {
            let user = match i % 10 {
                0 => "@bob:example.com".to_owned(),
                5 => "@charlie:somewhere.org".to_owned(),
                _ => format!("@user{i}:example.com"),
            };
            let user: OwnedUserId = user.try_into().unwrap();
            PresenceState {
                presence: Presence::Online,
                last_active_ts: Timestamp(1_700_000_000_000 + i),
                status_msg: (i % 3 == 0).then(|| Arc::from("hello")),
                currently_active: true,
                ..PresenceState::new(user)
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn run(
    host: &PythonHost,
    calls: usize,
    tasks: usize,
    interest: bool,
) -> (f64, Vec<Duration>) {
    let states = Arc::new(batch());
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let host = host.clone();
        let states = states.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(calls / tasks);
            for _ in 0..calls / tasks {
                let t = Instant::now();
                let answer = if interest {
                    host.call(Duration::from_secs(5), |id| ToHost::InterestedUsers {
                        id,
                        module: 0,
                        slot: 0,
                        callback: "get_interested_users",
                        user_id: "@alice:example.com",
                    })
                    .await
                } else {
                    host.call(Duration::from_secs(5), |id| ToHost::UsersForStates {
                        id,
                        module: 0,
                        slot: 0,
                        callback: "get_users_for_states",
                        states: states.iter().map(WireState::from).collect(),
                    })
                    .await
                };
                answer.expect("the example answers");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("CALLS is a number"))
        .unwrap_or(20_000);
    let python = std::env::var_os("PRESENCED_PYTHON").unwrap_or_else(|| "python3".into());
    let spec = HostSpec {
        python: python.into(),
        path: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/python/fixtures").into()],
        server_name: "example.com".to_owned(),
        modules: vec![InitModule {
            index: 0,
            module: "custom_router.CustomPresenceRouter".to_owned(),
            config: serde_json::json!({}),
            legacy: false,
        }],
        stall: Duration::from_secs(10),
        max_rss: 1 << 30,
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (host, _) =
        PythonHost::start(spec, tx, Arc::new(HostStats::default())).expect("host starts");
    // Warm up.
    run(&host, 500, 1, false).await;
    for (name, interest) in [
        ("get_users_for_states (100 in, 20 out)", false),
        ("get_interested_users", true),
    ] {
        for tasks in [1, 64] {
            let (rate, latencies) = run(&host, calls, tasks, interest).await;
            println!(
                "{name:40} tasks {tasks:3}: {rate:9.0} calls/s  p50 {:7.0} µs  p99 {:7.0} µs",
                percentile(&latencies, 0.50).as_secs_f64() * 1e6,
                percentile(&latencies, 0.99).as_secs_f64() * 1e6,
            );
        }
    }
}
