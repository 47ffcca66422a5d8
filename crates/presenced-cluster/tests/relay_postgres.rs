//! The membership relay end to end on real parts: membership changes
//! committed concurrently to PostgreSQL (the store's outbox) reach the
//! membership feed on a real nats-server once each, in commit order, while
//! the relay is killed and another takes over.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use presenced_cluster::relay::{self, OutboxSource, RelayTiming};
use presenced_cluster::testing::NatsServers;
use presenced_cluster::Bus;
use presenced_engine::Timestamp;
use presenced_store::postgres::PgStore;
use presenced_store::testing::{member_event, FreshPgDatabase};
use presenced_store::Store;
use ruma_common::{OwnedRoomId, OwnedUserId};

/// What the server will wrap the same way: the store's calls block, so
/// they run on the blocking pool.
#[derive(Clone)]
struct PgOutbox(Arc<PgStore>);

impl OutboxSource for PgOutbox {
    async fn committed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, String> {
        let store = self.0.clone();
        let rows = tokio::task::spawn_blocking(move || store.membership_outbox_after(after, limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|(id, row)| {
                let payload = serde_json::json!({
                    "room_id": row.room_id, "user_id": row.user_id,
                    "membership": row.membership.as_str(), "stream": row.stream,
                });
                (id, Bytes::from(payload.to_string()))
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_the_feed_once_in_commit_order_across_a_relay_kill() {
    let Some(db) = FreshPgDatabase::create("relay_feed") else {
        return;
    };
    let Some(nats) = NatsServers::start(1, "membership relay on JetStream") else {
        return;
    };
    let store = Arc::new(PgStore::open(&db.opts, "example.org".try_into().unwrap()).unwrap());
    let bus = common::connect(&common::jetstream_config(nats.urls(), "", 1)).await;
    let source = PgOutbox(store.clone());
    let timing = RelayTiming {
        lease_ttl: Duration::from_secs(4),
        renew_every: Duration::from_secs(1),
        poll: Duration::from_millis(50),
        batch: 16,
    };
    let first = tokio::spawn(relay::run(
        "a".to_owned(),
        bus.clone(),
        source.clone(),
        timing.clone(),
    ));
    let room: OwnedRoomId = "!feed:example.org".try_into().unwrap();
    let creator: OwnedUserId = "@creator:example.org".try_into().unwrap();
    {
        let store = store.clone();
        let (room, creator) = (room.clone(), creator.clone());
        tokio::task::spawn_blocking(move || {
            store.create_room(
                &room,
                &creator,
                Timestamp(1),
                &[member_event(&room, &creator, "join")],
            )
        })
        .await
        .unwrap()
        .unwrap();
    }
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, room) = (store.clone(), room.clone());
            tokio::task::spawn_blocking(move || {
                for n in 0..50 {
                    let user: OwnedUserId = format!("@r{w}x{n}:example.org").try_into().unwrap();
                    store
                        .append_events(&[member_event(&room, &user, "join")])
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    // Kill the first relay mid-way; the second takes the lease over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.abort();
    let second = tokio::spawn(relay::run("b".to_owned(), bus.clone(), source, timing));
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 1 + 3 * 50;
    let mut ids = Vec::new();
    let mut entries = bus.feed_read_from(1).await.unwrap();
    while ids.len() < total {
        let entry = tokio::time::timeout(Duration::from_secs(20), entries.next())
            .await
            .expect("the feed gets every row within 20 s")
            .unwrap()
            .unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&entry.payload).unwrap();
        assert_eq!(payload["membership"], "join");
        ids.push(entry.key.parse::<u64>().unwrap());
    }
    assert_eq!(ids, (1..=total as u64).collect::<Vec<_>>());
    // Nothing more arrives (no duplicates after the takeover).
    assert!(tokio::time::timeout(Duration::from_secs(1), entries.next())
        .await
        .is_err());
    second.abort();
}
