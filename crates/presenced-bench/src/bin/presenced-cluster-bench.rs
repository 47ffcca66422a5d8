//! `presenced-cluster-bench`: what cluster mode's bus costs, on a real
//! 3-server JetStream cluster (R3, file storage, `sync_interval: always`)
//! started on loopback. Figures go into SCALING.md.
//!
//! Measures:
//! 1. fenced appends to one partition log, one append in flight (as an
//!    owner does), at several batch sizes: records/s and appends/s;
//! 2. the same on all 16 partitions at once;
//! 3. NATS servers' CPU per record during (2);
//! 4. a node's replica following every log from the start: CPU µs per
//!    record (client decode + apply), and `Replica::apply` alone;
//! 5. NATS servers' memory per subject: RSS before and after writing
//!    distinct users;
//! 6. one node owning all 16 partitions taking writes through its front
//!    door (request to the owner, fenced append, replica applied before the
//!    answer): writes/s and this process's CPU per write, the "per owner
//!    input" cost of SCALING.md (front door, owner and replica together).
//!
//! `--quick` runs each for a fraction of the time (CI runs it so the tool
//! keeps working; its figures are not the documented ones).

#[path = "../procfs.rs"]
#[allow(dead_code, unreachable_pub)]
mod procfs;

// presenced-cluster's nats-server starter, compiled in from its file: its
// `testing` feature stays off, because cargo would unify this crate's
// features into `cargo build --bin presenced` (every workspace member is
// selected by `--bin`) and so into the presenced binary's build.
#[path = "../../../presenced-cluster/src/testing.rs"]
#[allow(dead_code, unreachable_pub)]
mod nats_testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use presenced_cluster::record::{Record, StateRecord};
use presenced_cluster::{
    Bus, JetStreamBus, JetStreamConfig, LogEntry, Node, Replica, Timing, PARTITIONS,
};

use crate::nats_testing::NatsServers;

fn state_entry(user: &str, n: u64) -> (String, Bytes) {
    Record::State(StateRecord {
        user: user.to_owned(),
        epoch: 1,
        command: format!("bench-{n}"),
        state: serde_json::json!({"presence": "online", "last_active_ts": 1_700_000_000_000u64 + n}),
    })
    .encode()
}

fn cpu(pid: &str) -> Duration {
    procfs::cpu_time(pid).unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Appends batches to one partition for `run`, one in flight; returns records written.
async fn append_for(
    bus: &JetStreamBus,
    partition: u16,
    batch: usize,
    run: Duration,
    users: u64,
) -> u64 {
    let mut last = bus.last_seq(partition).await.expect("last_seq");
    let started = Instant::now();
    let mut written = 0u64;
    let mut n = 0u64;
    while started.elapsed() < run {
        let entries: Vec<(String, Bytes)> = (0..batch)
            .map(|_| {
                n += 1;
                state_entry(&format!("@u{}-{partition}:bench", n % users), n)
            })
            .collect();
        last = bus.append(partition, last, entries).await.expect("append");
        written += batch as u64;
    }
    written
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let run = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let distinct: u64 = if quick { 2_000 } else { 100_000 };
    let nats = NatsServers::start(3, "cluster bench").unwrap_or_else(|| {
        eprintln!("presenced-cluster-bench needs nats-server: run scripts/install-nats-server");
        std::process::exit(2);
    });
    let config = JetStreamConfig {
        servers: nats.urls(),
        credentials: None,
        replicas: 3,
        allow_unreplicated: false,
        node_ttl: Duration::from_secs(6),
        owner_ttl: Duration::from_secs(10),
        namespace: String::new(),
    };
    let mut bus = None;
    for _ in 0..40 {
        if let Ok(connected) = JetStreamBus::connect(&config).await {
            bus = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let bus = bus.expect("JetStream cluster ready");
    let pids: Vec<String> = (0..3)
        .filter_map(|i| nats.pid(i))
        .map(|p| p.to_string())
        .collect();
    println!(
        "presenced-cluster-bench: 3 nats-server (R3, file, sync_interval always), {run:?} per step"
    );

    // 1. One partition, one append in flight.
    println!("\n| batch | records/s (1 partition) | appends/s |");
    println!("|---:|---:|---:|");
    for batch in [1usize, 8, 64] {
        let started = Instant::now();
        let written = append_for(&bus, 0, batch, run, 1_000).await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {batch} | {:.0} | {:.0} |",
            written as f64 / secs,
            written as f64 / batch as f64 / secs
        );
    }

    // 2 and 3. All partitions at once, batch 8.
    let before: Vec<Duration> = pids.iter().map(|p| cpu(p)).collect();
    let started = Instant::now();
    let tasks: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move { append_for(&bus, p, 8, run, 1_000).await })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task.await.expect("append task");
    }
    let secs = started.elapsed().as_secs_f64();
    let nats_cpu: Duration = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| cpu(p).saturating_sub(*b))
        .sum();
    println!(
        "\n16 partitions, batch 8: {:.0} records/s ({:.0} per partition); NATS servers' CPU {:.1} µs per record (3 servers together)",
        total as f64 / secs,
        total as f64 / secs / f64::from(PARTITIONS),
        nats_cpu.as_secs_f64() * 1e6 / total as f64
    );

    // 4. A replica following every log from the start.
    let replica = Arc::new(Replica::new());
    let lasts: Vec<u64> = {
        let mut lasts = Vec::new();
        for p in 0..PARTITIONS {
            lasts.push(bus.last_seq(p).await.expect("last_seq"));
        }
        lasts
    };
    let cpu_before = cpu("self");
    let started = Instant::now();
    let mut applied = 0u64;
    let mut entries_seen: Vec<LogEntry> = Vec::new();
    for p in 0..PARTITIONS {
        let mut entries = bus.read_from(p, 1).await.expect("read");
        while let Some(entry) = entries.next().await {
            let entry = entry.expect("entry");
            replica.apply(&entry);
            applied += 1;
            let done = entry.seq >= lasts[usize::from(p)];
            if entries_seen.len() < 200_000 {
                entries_seen.push(entry);
            }
            if done {
                break;
            }
        }
    }
    let follow_cpu = cpu("self").saturating_sub(cpu_before);
    println!(
        "\nreplica catch-up: {applied} live records in {:.2} s, {:.1} µs CPU per record (this process: client decode + apply)",
        started.elapsed().as_secs_f64(),
        follow_cpu.as_secs_f64() * 1e6 / applied.max(1) as f64
    );
    let fresh = Replica::new();
    let started = Instant::now();
    for entry in &entries_seen {
        fresh.apply(entry);
    }
    println!(
        "Replica::apply alone: {:.2} µs per record ({} records)",
        started.elapsed().as_secs_f64() * 1e6 / entries_seen.len().max(1) as f64,
        entries_seen.len()
    );

    // 5. Memory per subject.
    let numeric_pids: Vec<u32> = (0..3).filter_map(|i| nats.pid(i)).collect();
    let rss_before: u64 = numeric_pids.iter().map(|p| rss_kib(*p)).sum();
    let per_partition = distinct / u64::from(PARTITIONS);
    let tasks: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut last = bus.last_seq(p).await.expect("last_seq");
                let mut n = 0u64;
                while n < per_partition {
                    let entries: Vec<(String, Bytes)> = (0..64)
                        .map(|_| {
                            n += 1;
                            state_entry(&format!("@distinct{n}-{p}:bench"), n)
                        })
                        .collect();
                    last = bus.append(p, last, entries).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("distinct task");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after: u64 = numeric_pids.iter().map(|p| rss_kib(*p)).sum();
    println!(
        "\nmemory: {} distinct subjects added, NATS servers' RSS {} → {} KiB (all 3), {:.0} bytes per subject per server",
        per_partition * u64::from(PARTITIONS),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before) as f64 * 1024.0 / 3.0 / (per_partition * u64::from(PARTITIONS)) as f64
    );

    // 6. Writes through one node's front door.
    let node = Node::start("bench", bus.clone(), Timing::default());
    let handle = node.handle();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.owned().len() < usize::from(PARTITIONS) {
        assert!(
            Instant::now() < deadline,
            "the bench node never owned every partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes: u64 = if quick { 2_000 } else { 40_000 };
    let concurrency = 64u64;
    let cpu_before = cpu("self");
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let handle = handle.clone();
            tokio::spawn(async move {
                for n in 0..writes / concurrency {
                    let user = format!("@w{}:bench", (c * 1_000 + n) % 5_000);
                    let state = serde_json::json!({"presence": "online", "n": n});
                    handle.write(&user, state).await.expect("write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let secs = started.elapsed().as_secs_f64();
    let spent = cpu("self").saturating_sub(cpu_before);
    let done = writes / concurrency * concurrency;
    println!(
        "\nwrites through a node's front door (64 in flight): {:.0} writes/s, {:.1} µs CPU per write in the node's process",
        done as f64 / secs,
        spent.as_secs_f64() * 1e6 / done as f64
    );
    node.stop();
}
