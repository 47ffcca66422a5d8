//! Engine benchmark: the whole write path, the sync view and memory per user
//! on the realistic layout (100,000 users, ~10 rooms each, 10 observers routed
//! everyone's presence, 10% of users with a sync waiting; a woken sync's
//! client syncs again 1 s later).
//!
//! Run: `cargo bench -p presenced-workload --bench engine`
//! (`BENCH_USERS=20000` for a quicker run). Prints figures; asserts nothing
//! about speed.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use presenced_engine::{
    Engine, EngineConfig, Interest, Membership, Output, Presence, PresenceState, Timestamp,
    UsersForStates,
};
use presenced_workload::{Layout, LayoutSpec};
use ruma_common::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

/// Counts live heap bytes, so memory per user is measured, not estimated.
struct CountingAlloc;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BATCH: usize = 1_000;

/// The Observers router's answer, computed as the built-in module does:
/// every state of the batch goes to every observer.
fn observers_answer(observers: &[OwnedUserId], states: &[PresenceState]) -> UsersForStates {
    let set: HashSet<PresenceState> = states.iter().cloned().collect();
    observers.iter().map(|o| (o.clone(), set.clone())).collect()
}

struct Bench {
    engine: Engine,
    users: Vec<OwnedUserId>,
    observers: Vec<OwnedUserId>,
    device: OwnedDeviceId,
    now: Timestamp,
    rng: u64,
    flip: Vec<bool>,
    wakes: u64,
    /// Woken syncs come back this long after their wake-up.
    resync_after: Duration,
    /// Simulated time one batch takes at the offered rate.
    batch_time: Duration,
    resyncs: VecDeque<(Timestamp, OwnedUserId)>,
}

impl Bench {
    fn next_user(&mut self) -> usize {
        // xorshift: cheap, deterministic, outside the measured engine work.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.users.len() as u64) as usize
    }

    /// Applies `count` presence updates in batches, driving every output
    /// like the server does (router answers, wake-ups, re-registered syncs).
    fn updates(&mut self, count: usize) {
        let mut done = 0;
        while done < count {
            let n = BATCH.min(count - done);
            for _ in 0..n {
                let u = self.next_user();
                self.flip[u] = !self.flip[u];
                let presence = if self.flip[u] {
                    Presence::Online
                } else {
                    Presence::Unavailable
                };
                let user = &self.users[u];
                self.engine
                    .handle_set_presence(self.now, user, Some(&self.device), presence, None);
            }
            self.drain();
            done += n;
            self.now = self.now + self.batch_time;
            while self.resyncs.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, user) = self.resyncs.pop_front().unwrap();
                self.engine.wait_for_presence(&user);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Route { batch, states } => {
                    let answer = observers_answer(&self.observers, &states);
                    self.engine.handle_route_answer(self.now, batch, answer);
                }
                Output::Wake(users) => {
                    self.wakes += users.len() as u64;
                    // The woken syncs answer, and their clients sync again later.
                    let at = self.now + self.resync_after;
                    self.resyncs.extend(users.into_iter().map(|u| (at, u)));
                }
                Output::Persist(_)
                | Output::Send { .. }
                | Output::PersistFullPresence { .. }
                | Output::Forget(_) => {}
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // The simulated clock runs at this rate; it decides how often a woken
    // sync (which comes back 1 s later) can be woken again.
    let offered_rate: f64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000.0);
    let layout = Layout::generate(&LayoutSpec::realistic(n));
    let users: Vec<OwnedUserId> = layout
        .users
        .iter()
        .map(|u| u.as_str().try_into().unwrap())
        .collect();
    let observers: Vec<OwnedUserId> = layout
        .observers
        .iter()
        .map(|u| u.as_str().try_into().unwrap())
        .collect();
    let rooms: Vec<(OwnedRoomId, Vec<u32>)> = layout
        .rooms
        .iter()
        .map(|r| (r.id.as_str().try_into().unwrap(), r.members.clone()))
        .collect();
    println!(
        "layout: {} users, {} rooms, {} memberships, {} observers (largest room {})",
        users.len(),
        rooms.len(),
        layout.memberships(),
        observers.len(),
        layout
            .rooms
            .iter()
            .map(|r| r.members.len())
            .max()
            .unwrap_or(0)
    );
    drop(layout);

    let before = LIVE.load(Ordering::Relaxed);
    let config = EngineConfig {
        routing: true,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, "bench.example".try_into().unwrap(), 0);
    let mut now = Timestamp(1_800_000_000_000);
    let started = Instant::now();
    for (room, members) in &rooms {
        for &m in members {
            engine.handle_membership(now, room, &users[m as usize], Membership::Join);
        }
    }
    while engine.poll_output().is_some() {}
    println!(
        "setup: {} joins in {:.2?}; membership index {} bytes/user",
        rooms.iter().map(|r| r.1.len()).sum::<usize>(),
        started.elapsed(),
        (LIVE.load(Ordering::Relaxed) - before) / users.len()
    );
    now = now + Duration::from_secs(1);

    let mut bench = Bench {
        engine,
        flip: vec![false; users.len()],
        users,
        observers,
        device: "BENCHDEV".into(),
        now,
        rng: 0x9e37_79b9_7f4a_7c15,
        wakes: 0,
        resync_after: Duration::from_secs(1),
        batch_time: Duration::from_secs_f64(BATCH as f64 / offered_rate),
        resyncs: VecDeque::new(),
    };
    // Everyone gets a presence state first, so memory covers tracked users.
    for u in 0..bench.users.len() {
        let user = bench.users[u].clone();
        bench.engine.handle_set_presence(
            bench.now,
            &user,
            Some(&bench.device),
            Presence::Online,
            None,
        );
        bench.flip[u] = true;
        if u % BATCH == 0 {
            bench.drain();
        }
    }
    bench.drain();
    // 10% of users (and every observer) have a sync waiting.
    for u in (0..bench.users.len()).step_by(10) {
        let user = bench.users[u].clone();
        bench.engine.wait_for_presence(&user);
    }
    for o in bench.observers.clone() {
        bench.engine.wait_for_presence(&o);
    }
    let tracked = bench.engine.stats().users_tracked;
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: {} bytes for {} tracked users = {} bytes/user (incl. membership index)",
        bytes,
        tracked,
        bytes / tracked.max(1)
    );

    // Write path: state machine + router answers + audience + wake-ups + stream.
    let total = 1_000_000;
    bench.wakes = 0;
    let started = Instant::now();
    bench.updates(total);
    let elapsed = started.elapsed();
    println!(
        "write path: {total} updates in {:.2?} = {:.0} updates/s ({} wake-ups, batches of {BATCH}, simulated {offered_rate}/s, syncs return 1 s after a wake-up)",
        elapsed,
        total as f64 / elapsed.as_secs_f64(),
        bench.wakes
    );
    bench.batch_time = Duration::from_secs_f64(BATCH as f64 / 10_000.0);

    // Sync view at 10,000 updates/s server-wide, 1 s between syncs.
    let mut typical = Vec::new();
    let mut observer = Vec::new();
    let mut returned: HashMap<&str, usize> = HashMap::new();
    for _round in 0..20 {
        let since = bench.engine.position();
        bench.updates(10_000);
        for _ in 0..500 {
            let u = bench.next_user();
            let user = &bench.users[u];
            let t = Instant::now();
            let view = bench
                .engine
                .sync_view(user, Some(since), true, &Interest::None);
            typical.push(t.elapsed());
            *returned.entry("typical").or_default() += view.states.len();
        }
        for o in &bench.observers {
            let t = Instant::now();
            let view = bench.engine.sync_view(o, Some(since), true, &Interest::All);
            observer.push(t.elapsed());
            *returned.entry("observer").or_default() += view.states.len();
        }
    }
    typical.sort();
    observer.sort();
    println!(
        "sync view, typical user: p50 {:.1?} p99 {:.1?} max {:.1?} (avg {} states)",
        percentile(&typical, 0.5),
        percentile(&typical, 0.99),
        typical.last().unwrap(),
        returned["typical"] / typical.len()
    );
    println!(
        "sync view, observer (ALL): p50 {:.1?} p99 {:.1?} max {:.1?} (avg {} states)",
        percentile(&observer, 0.5),
        percentile(&observer, 0.99),
        observer.last().unwrap(),
        returned["observer"] / observer.len()
    );
    let stats = bench.engine.stats();
    println!(
        "engine: stream at {}, {} timers, {} users tracked, {} rooms",
        stats.stream_position, stats.timers, stats.users_tracked, stats.rooms
    );
}
