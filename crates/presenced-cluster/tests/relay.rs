//! The membership relay under faults, deterministic on the in-memory bus:
//! three relays compete for the lease while rows are committed; relays are
//! killed, frozen past their lease (zombies) and cut off. Afterwards the
//! feed must hold every row exactly once, in id order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presenced_cluster::relay::{self, OutboxSource, RelayTiming};
use presenced_cluster::{Bus, MemBus, MemBusConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rows committed so far (ids 1, 2, 3, ... in commit order).
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Vec<u64>>>);

impl OutboxSource for Outbox {
    async fn committed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, String> {
        let rows = self.0.lock().unwrap();
        Ok(rows
            .iter()
            .filter(|id| **id > after)
            .take(limit)
            .map(|id| (*id, Bytes::from(format!("row {id}"))))
            .collect())
    }
}

async fn scenario(seed: u64) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let bus = MemBus::new(MemBusConfig {
        delay: (Duration::ZERO, Duration::from_millis(3)),
        seed,
        ..MemBusConfig::default()
    });
    let outbox = Outbox::default();
    let timing = RelayTiming {
        batch: 4,
        ..RelayTiming::default()
    };
    let start = |name: String| {
        let bus = bus.endpoint(&name);
        tokio::task::spawn_local(relay::run(name, bus, outbox.clone(), timing.clone()))
    };
    let mut relays: Vec<_> = (0..3).map(|i| Some(start(format!("r{i}#0")))).collect();
    let mut incarnation = 0;
    let mut next_id = 0u64;
    for step in 0..400 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
        for _ in 0..rng.random_range(0..4) {
            next_id += 1;
            outbox.0.lock().unwrap().push(next_id);
        }
        if step % 25 == 0 {
            let i = rng.random_range(0..3);
            match rng.random_range(0..3) {
                0 => {
                    if let Some(task) = relays[i].take() {
                        task.abort();
                    }
                    incarnation += 1;
                    relays[i] = Some(start(format!("r{i}#{incarnation}")));
                }
                1 => {
                    let name = format!("r{i}#{incarnation}");
                    bus.set_frozen(&name, true);
                    let (bus, hold) = (bus.clone(), rng.random_range(2_000..15_000));
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        bus.set_frozen(&name, false);
                    });
                }
                _ => {
                    let name = format!("r{i}#{incarnation}");
                    bus.set_cut(&name, true);
                    let (bus, hold) = (bus.clone(), rng.random_range(2_000..15_000));
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        bus.set_cut(&name, false);
                    });
                }
            }
        }
    }
    // Heal: thaw and reconnect everyone, then let the relays catch up.
    tokio::time::sleep(Duration::from_secs(20)).await;
    for i in 0..3 {
        for n in 0..=incarnation {
            bus.set_frozen(&format!("r{i}#{n}"), false);
            bus.set_cut(&format!("r{i}#{n}"), false);
        }
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ids: Vec<u64> = {
        let last = bus.feed_last().await.unwrap().map_or(0, |(seq, _)| seq);
        let mut entries = bus.feed_read_from(1).await.unwrap();
        let mut ids = Vec::new();
        while (ids.len() as u64) < last {
            let entry = entries.next().await.unwrap().unwrap();
            ids.push(entry.key.parse().unwrap());
        }
        ids
    };
    let expected: Vec<u64> = (1..=next_id).collect();
    assert_eq!(
        ids, expected,
        "seed {seed}: the feed must hold every row once, in order"
    );
    for task in relays.into_iter().flatten() {
        task.abort();
    }
}

#[test]
fn every_row_reaches_the_feed_once_and_in_order() {
    let seeds: u64 = std::env::var("PRESENCED_TEST_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(50, |n: u64| (n / 20).max(50));
    for seed in 0..seeds {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, scenario(seed));
    }
}
