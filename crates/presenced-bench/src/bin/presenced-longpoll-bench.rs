//! `presenced-longpoll-bench`: what an open idle `/sync` long-poll costs a
//! server (issue 30), and what another client's `/sync?timeout=0` sees
//! while they are open.
//!
//! Registers `--long-polls` users plus one probe user (shared-secret
//! registration), gives each an initial sync, then measures the server's
//! RSS (`/proc/PID/status`), opens one long-poll per user
//! (`/sync?since=<next_batch>&timeout=600000`, the bench's
//! `set_presence=offline` presence-only filter) over its own connection,
//! spread over several 127.0.0.x source addresses (each has its own
//! ephemeral ports), waits `--settle` seconds and measures again. The
//! difference over the count is the figure: RSS per open idle long-poll.
//! Then the probe user's `/sync?timeout=0` calls, one after the other,
//! give p50/p99 while the long-polls are open.
//!
//! The long-poll sockets are only written, never read until the end: an
//! idle client costs the tool nothing while the server is measured. At the
//! end each must still be open with no answer (the server answering or
//! closing a waiting long-poll early is a failure, as is any error); the
//! figures themselves never fail a run (they are noisy on a shared
//! machine). `scripts/longpoll-memory` starts the server and runs this.

#[path = "../client.rs"]
#[allow(dead_code, unreachable_pub)]
mod client;
#[path = "../load_http.rs"]
#[allow(dead_code, unreachable_pub)]
mod load_http;
#[path = "../procfs.rs"]
#[allow(dead_code, unreachable_pub)]
mod procfs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Account, Homeserver, SyncTarget};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long each long-poll asks to wait: far past any measurement, so an
/// answer before the end means the server ended it.
const LONG_POLL_TIMEOUT_MS: u64 = 600_000;
/// Password of every account the tool creates.
const PASSWORD: &str = "presenced-longpoll-bench-password";

#[derive(Parser, Debug)]
#[command(
    name = "presenced-longpoll-bench",
    about = "RSS per open idle /sync long-poll, and another client's sync latency meanwhile"
)]
struct Args {
    /// Client-server API base URL (plain http on loopback).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: String,
    /// The server's `registration_shared_secret`.
    #[arg(long, env = "BENCH_SHARED_SECRET")]
    shared_secret: String,
    /// PID of the server, whose RSS is read from /proc.
    #[arg(long)]
    server_pid: u32,
    /// Open long-polls, one user and connection each.
    #[arg(long, default_value_t = 16_000)]
    long_polls: usize,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... the connections are
    /// spread over.
    #[arg(long, default_value_t = 8)]
    source_addresses: u8,
    /// Seconds between the last long-poll opened and the RSS read.
    #[arg(long, default_value_t = 12.0)]
    settle: f64,
    /// The probe user's `/sync?timeout=0` calls while the long-polls wait.
    #[arg(long, default_value_t = 1_000)]
    probes: usize,
    /// Setup requests (registration, initial syncs) in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    long_polls: usize,
    still_open: usize,
    answered_early: usize,
    closed_early: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    rss_after_probes_kib: u64,
    kib_per_long_poll: f64,
    settle_s: f64,
    open_s: f64,
    probes: usize,
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    probe_max_ms: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(report) => {
            print(&args, &report);
            if report.still_open == report.long_polls {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "longpoll-bench: {} of {} long-polls did not stay open ({} answered, {} closed)",
                    report.long_polls - report.still_open,
                    report.long_polls,
                    report.answered_early,
                    report.closed_early
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("longpoll-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(args: &Args, r: &Report) {
    if args.json {
        println!("{}", serde_json::to_string(r).expect("a report serializes"));
        return;
    }
    println!(
        "long-polls: {} open ({} still open at the end), opened in {:.1} s",
        r.long_polls, r.still_open, r.open_s
    );
    println!(
        "server RSS: {} KiB before, {} KiB {:.0} s after the last opened, {} KiB after the probes",
        r.rss_before_kib, r.rss_after_kib, r.settle_s, r.rss_after_probes_kib
    );
    println!(
        "RSS per open idle long-poll: {:.1} KiB",
        r.kib_per_long_poll
    );
    println!(
        "another client's /sync?timeout=0 meanwhile ({} calls): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.probes, r.probe_p50_ms, r.probe_p99_ms, r.probe_max_ms
    );
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    procfs::rss(&pid.to_string())
        .map(|b| b / 1024)
        .ok_or_else(|| format!("cannot read the RSS of pid {pid}"))
}

async fn run(args: &Args) -> Result<Report, String> {
    let hs = Homeserver::new(std::slice::from_ref(&args.base_url)).await?;
    let server = server_addr(&args.base_url).await?;
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);

    let started = Instant::now();
    let accounts = register(&hs, args, run).await?;
    let (probe, waiters) = accounts.split_last().expect("at least the probe user");
    let positions = initial_syncs(&hs, waiters, args.concurrency).await?;
    eprintln!(
        "longpoll-bench: {} users registered and synced in {:.1} s",
        accounts.len(),
        started.elapsed().as_secs_f64()
    );

    // Let setup's garbage and connections settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(args.server_pid)?;

    let opening = Instant::now();
    let streams = open_long_polls(&hs, server, waiters, &positions, args).await?;
    let open_s = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = rss_kib(args.server_pid)?;

    let latencies = probe_syncs(&hs, probe, args.probes).await?;
    let rss_after_probes = rss_kib(args.server_pid)?;

    let (mut still_open, mut answered_early, mut closed_early) = (0, 0, 0);
    let mut byte = [0u8; 1];
    for s in &streams {
        match s.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
            Ok(0) | Err(_) => closed_early += 1,
            Ok(_) => answered_early += 1,
        }
    }
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    Ok(Report {
        long_polls: streams.len(),
        still_open,
        answered_early,
        closed_early,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_after_probes_kib: rss_after_probes,
        kib_per_long_poll: (rss_after as f64 - rss_before as f64) / streams.len().max(1) as f64,
        settle_s: args.settle,
        open_s,
        probes: latencies.len(),
        probe_p50_ms: pct(0.50),
        probe_p99_ms: pct(0.99),
        probe_max_ms: pct(1.0),
    })
}

async fn server_addr(base: &str) -> Result<SocketAddr, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: plain http only"))?
        .trim_end_matches('/');
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("{base}: {e}"))?
        .next()
        .ok_or_else(|| format!("{base}: no address"))
}

/// `long_polls` users and the probe user, last.
async fn register(hs: &Homeserver, args: &Args, run: u128) -> Result<Vec<Account>, String> {
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..=args.long_polls {
        let (hs, limit, secret) = (hs.clone(), limit.clone(), args.shared_secret.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let account = hs
                .register_or_login(&secret, &format!("lp{run}u{i}"), PASSWORD)
                .await?;
            Ok::<_, String>((i, account))
        });
    }
    let mut accounts = vec![None; args.long_polls + 1];
    while let Some(joined) = tasks.join_next().await {
        let (i, account) = joined.map_err(|e| e.to_string())??;
        accounts[i] = Some(account);
    }
    Ok(accounts
        .into_iter()
        .map(|a| a.expect("every index"))
        .collect())
}

/// Each user's initial sync: the `next_batch` its long-poll starts from.
async fn initial_syncs(
    hs: &Homeserver,
    users: &[Account],
    concurrency: usize,
) -> Result<Vec<String>, String> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, account) in users.iter().enumerate() {
        let (hs, limit) = (hs.clone(), limit.clone());
        let target = hs.sync_target(account);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let body = hs.sync(&target, None, 0).await?;
            Ok::<_, String>((i, body.next_batch))
        });
    }
    let mut positions = vec![String::new(); users.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, next) = joined.map_err(|e| e.to_string())??;
        positions[i] = next;
    }
    Ok(positions)
}

/// One long-poll per user, each on its own connection from one of the
/// source addresses; returns the connections once every request is sent.
async fn open_long_polls(
    hs: &Homeserver,
    server: SocketAddr,
    users: &[Account],
    positions: &[String],
    args: &Args,
) -> Result<Vec<TcpStream>, String> {
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for (i, (account, since)) in users.iter().zip(positions).enumerate() {
        let target: SyncTarget = hs.sync_target(account);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {server}\r\nAuthorization: {}\r\n\r\n",
            target.path(Some(since), LONG_POLL_TIMEOUT_MS),
            target.auth().to_str().expect("ascii token"),
        );
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(args.source_addresses.max(1))) as u8,
        ));
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
            let mut stream = socket
                .connect(server)
                .await
                .map_err(|e| format!("connect from {source}: {e}"))?;
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("long-poll request: {e}"))?;
            Ok::<_, String>(stream)
        });
    }
    let mut streams = Vec::with_capacity(users.len());
    while let Some(joined) = tasks.join_next().await {
        streams.push(joined.map_err(|e| e.to_string())??);
    }
    Ok(streams)
}

/// `count` syncs of the probe user with `timeout=0`, following
/// `next_batch`; their latencies, sorted.
async fn probe_syncs(
    hs: &Homeserver,
    probe: &Account,
    count: usize,
) -> Result<Vec<Duration>, String> {
    let target = hs.sync_target(probe);
    let mut since = hs.sync(&target, None, 0).await?.next_batch;
    let mut latencies = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let t = Instant::now();
        since = hs.sync(&target, Some(&since), 0).await?.next_batch;
        latencies.push(t.elapsed());
    }
    latencies.sort_unstable();
    Ok(latencies)
}
