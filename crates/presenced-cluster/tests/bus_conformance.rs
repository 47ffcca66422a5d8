//! One contract, two buses: every check here runs on the in-memory bus and
//! on NATS JetStream, so what the simulator proves on the first holds for
//! the code that runs on the second.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presenced_cluster::{Bus, BusError, LeaseBucket, MemBus, MemBusConfig};

const TTL: Duration = Duration::from_secs(4);

fn mem_bus() -> MemBus {
    MemBus::new(MemBusConfig {
        node_ttl: Duration::from_secs(3),
        owner_ttl: TTL,
        ..MemBusConfig::default()
    })
}

fn entry(key: &str, value: &str) -> (String, Bytes) {
    (key.to_owned(), Bytes::from(value.to_owned()))
}

async fn next_entry<B: Bus>(entries: &mut B::Entries) -> presenced_cluster::LogEntry {
    tokio::time::timeout(Duration::from_secs(5), entries.next())
        .await
        .expect("an entry within 5 s")
        .expect("the reader goes on")
        .expect("no reader error")
}

/// Appends are fenced by the expected last sequence, and a refused append
/// writes nothing.
async fn appends_are_fenced<B: Bus>(bus: B) {
    assert_eq!(bus.last_seq(3).await.unwrap(), 0);
    let last = bus
        .append(3, 0, vec![entry("s.a", "1"), entry("s.b", "1")])
        .await
        .unwrap();
    assert_eq!(last, 2);
    let refused = bus.append(3, 0, vec![entry("s.c", "1")]).await;
    assert!(
        matches!(refused, Err(BusError::WrongLastSequence { .. })),
        "{refused:?}"
    );
    assert_eq!(bus.last_seq(3).await.unwrap(), 2);
    assert_eq!(bus.append(3, 2, vec![entry("e", "m")]).await.unwrap(), 3);
    // Other partitions have their own sequences.
    assert_eq!(bus.last_seq(4).await.unwrap(), 0);
}

/// Readers see entries in order, only the newest per key, then live ones.
async fn readers_see_the_newest_entry_per_key<B: Bus>(bus: B) {
    bus.append(
        5,
        0,
        vec![entry("s.a", "1"), entry("s.b", "1"), entry("s.a", "2")],
    )
    .await
    .unwrap();
    let mut entries = bus.read_from(5, 1).await.unwrap();
    let first = next_entry::<B>(&mut entries).await;
    assert_eq!((first.seq, first.key.as_str()), (2, "s.b"));
    let second = next_entry::<B>(&mut entries).await;
    assert_eq!(
        (second.seq, second.key.as_str(), &second.payload[..]),
        (3, "s.a", &b"2"[..])
    );
    bus.append(5, 3, vec![entry("s.c", "1")]).await.unwrap();
    let live = next_entry::<B>(&mut entries).await;
    assert_eq!((live.seq, live.key.as_str(), live.partition), (4, "s.c", 5));
    // A reader from the middle starts there.
    let mut later = bus.read_from(5, 4).await.unwrap();
    assert_eq!(next_entry::<B>(&mut later).await.seq, 4);
}

/// Leases: create once, compare-and-set renewals, release, expiry.
async fn leases_are_compare_and_set<B: Bus>(bus: B) {
    let owners = LeaseBucket::Owners;
    let first = bus
        .lease_create(owners, "p1", Bytes::from("a"))
        .await
        .unwrap();
    assert_eq!(
        bus.lease_create(owners, "p1", Bytes::from("b")).await,
        Err(BusError::LeaseHeld)
    );
    assert_eq!(
        bus.lease_update(owners, "p1", Bytes::from("b"), first + 1000)
            .await,
        Err(BusError::LeaseLost)
    );
    let second = bus
        .lease_update(owners, "p1", Bytes::from("a"), first)
        .await
        .unwrap();
    assert!(second > first);
    let held = bus.lease_get(owners, "p1").await.unwrap().unwrap();
    assert_eq!((held.revision, &held.value[..]), (second, &b"a"[..]));
    let listed = bus.lease_list(owners).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "p1");
    // The other bucket is separate.
    assert!(bus.lease_list(LeaseBucket::Nodes).await.unwrap().is_empty());
    assert_eq!(
        bus.lease_release(owners, "p1", first).await,
        Err(BusError::LeaseLost)
    );
    bus.lease_release(owners, "p1", second).await.unwrap();
    assert_eq!(bus.lease_get(owners, "p1").await.unwrap(), None);
    let third = bus
        .lease_create(owners, "p1", Bytes::from("b"))
        .await
        .unwrap();
    assert!(third > second, "revisions only grow");
    // Not renewed: it runs out after its time to live, and can be taken.
    tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
    assert_eq!(bus.lease_get(owners, "p1").await.unwrap(), None);
    let fourth = bus
        .lease_create(owners, "p1", Bytes::from("c"))
        .await
        .unwrap();
    assert!(fourth > third);
    assert_eq!(
        bus.lease_update(owners, "p1", Bytes::from("b"), third)
            .await,
        Err(BusError::LeaseLost)
    );
}

/// Request/reply reaches a server while it serves, and says so when nobody does.
async fn requests_reach_servers<B: Bus>(bus: B) {
    let timeout = Duration::from_secs(2);
    let nobody = bus.request("cmd.x", Bytes::from("ping"), timeout).await;
    assert!(
        matches!(nobody, Err(BusError::NoResponders(_))),
        "{nobody:?}"
    );
    let mut requests = bus.serve("cmd.x").await.unwrap();
    let server = tokio::spawn(async move {
        let request = requests.next().await.unwrap();
        let mut answer = request.payload.to_vec();
        answer.extend_from_slice(b" pong");
        request.respond(Bytes::from(answer)).await;
        requests
    });
    let answer = bus
        .request("cmd.x", Bytes::from("ping"), timeout)
        .await
        .unwrap();
    assert_eq!(&answer[..], b"ping pong");
    drop(server.await.unwrap());
    // Unsubscribing travels to the server; give it a moment.
    let mut gone = false;
    for _ in 0..20 {
        if matches!(
            bus.request("cmd.x", Bytes::from("ping"), Duration::from_millis(300))
                .await,
            Err(BusError::NoResponders(_))
        ) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a dropped server still receives requests");
}

/// The membership feed: fenced appends, ids never written twice, readers
/// from a sequence on.
async fn the_feed_is_fenced_and_deduplicated<B: Bus>(bus: B) {
    assert_eq!(bus.feed_last().await.unwrap(), None);
    assert_eq!(bus.feed_append(0, 10, Bytes::from("a")).await.unwrap(), 1);
    assert_eq!(bus.feed_append(1, 11, Bytes::from("b")).await.unwrap(), 2);
    // A relay retrying its own append: the id is there, nothing is written.
    assert_eq!(bus.feed_append(2, 11, Bytes::from("b")).await.unwrap(), 2);
    // A zombie relay behind the feed: refused by the id or by the fence.
    let zombie = bus.feed_append(1, 11, Bytes::from("b")).await;
    assert!(
        matches!(zombie, Ok(2) | Err(BusError::WrongLastSequence { .. })),
        "{zombie:?}"
    );
    let stale = bus.feed_append(1, 12, Bytes::from("c")).await;
    assert!(
        matches!(stale, Err(BusError::WrongLastSequence { .. })),
        "{stale:?}"
    );
    assert_eq!(bus.feed_last().await.unwrap(), Some((2, 11)));
    let mut entries = bus.feed_read_from(1).await.unwrap();
    let first = next_entry::<B>(&mut entries).await;
    assert_eq!(
        (first.seq, first.key.as_str(), &first.payload[..]),
        (1, "10", &b"a"[..])
    );
    assert_eq!(next_entry::<B>(&mut entries).await.key, "11");
    assert_eq!(bus.feed_append(2, 12, Bytes::from("c")).await.unwrap(), 3);
    let live = next_entry::<B>(&mut entries).await;
    assert_eq!((live.seq, live.key.as_str()), (3, "12"));
    // The partition logs are separate from the feed.
    assert_eq!(bus.last_seq(0).await.unwrap(), 0);
}

macro_rules! on_both_buses {
    ($($check:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::mem_bus()).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test]
                async fn $check() {
                    let what = concat!("bus conformance on JetStream: ", stringify!($check));
                    let Some(servers) = presenced_cluster::testing::NatsServers::start(1, what) else {
                        return;
                    };
                    let config = super::common::jetstream_config(servers.urls(), "", 1);
                    super::$check(super::common::connect(&config).await).await;
                }
            )*
        }
    };
}

on_both_buses!(
    appends_are_fenced,
    readers_see_the_newest_entry_per_key,
    leases_are_compare_and_set,
    requests_reach_servers,
    the_feed_is_fenced_and_deduplicated,
);
