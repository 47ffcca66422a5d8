//! The membership outbox cluster mode relays: every membership change
//! writes a row in its own transaction, ids in commit order, so a reader
//! polling while writers commit concurrently never skips or repeats one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use presenced_engine::Timestamp;
use presenced_store::postgres::PgStore;
use presenced_store::testing::{member_event, FreshPgDatabase};
use presenced_store::Store;
use ruma_common::{OwnedRoomId, OwnedUserId};

#[test]
fn concurrent_membership_changes_reach_the_outbox_once_each_in_commit_order() {
    let Some(db) = FreshPgDatabase::create("membership_outbox") else {
        return;
    };
    let store = Arc::new(PgStore::open(&db.opts, "example.org".try_into().unwrap()).unwrap());
    let creator: OwnedUserId = "@creator:example.org".try_into().unwrap();
    let rooms: Vec<OwnedRoomId> = (0..4)
        .map(|n| format!("!room{n}:example.org").try_into().unwrap())
        .collect();
    for room in &rooms {
        store
            .create_room(
                room,
                &creator,
                Timestamp(1),
                &[member_event(room, &creator, "join")],
            )
            .unwrap();
    }
    let created = rooms.len() as u64;
    // A reader polls like the relay while four writers commit.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let rows = store.membership_outbox_after(cursor, 7).unwrap();
                for (id, _) in &rows {
                    seen.push(*id);
                    cursor = *id;
                }
                if rows.is_empty() && finished {
                    return seen;
                }
            }
        })
    };
    let per_writer = 60;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, rooms) = (store.clone(), rooms.clone());
            std::thread::spawn(move || {
                for n in 0..per_writer {
                    let user: OwnedUserId = format!("@w{w}u{n}:example.org").try_into().unwrap();
                    let room = &rooms[n % rooms.len()];
                    // Two changes in one transaction, then one alone.
                    store
                        .append_events(&[
                            member_event(room, &user, "invite"),
                            member_event(room, &user, "join"),
                        ])
                        .unwrap();
                    store
                        .append_events(&[member_event(room, &user, "leave")])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    let total = created + 4 * per_writer as u64 * 3;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<u64>>(),
        "every id once, in order, no gap"
    );
    // Each row is the change it records: the last one of each user is its leave.
    let rows = store.membership_outbox_after(0, total as usize).unwrap();
    assert_eq!(rows.len() as u64, total);
    let last = rows
        .iter()
        .rev()
        .find(|(_, row)| row.user_id.as_str() == "@w0u0:example.org")
        .unwrap();
    assert_eq!(last.1.membership.as_str(), "leave");
    assert_eq!(last.1.room_id, rooms[0]);
    // Streams of one user's changes rise with the ids.
    let w0u0: Vec<i64> = rows
        .iter()
        .filter(|(_, row)| row.user_id.as_str() == "@w0u0:example.org")
        .map(|(_, row)| row.stream)
        .collect();
    assert_eq!(w0u0.len(), 3);
    assert!(w0u0.windows(2).all(|w| w[0] < w[1]), "{w0u0:?}");
}
