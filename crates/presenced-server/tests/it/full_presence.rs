//! Full-presence marks (module API `send_local_online_presence_to`) are
//! stored and survive a restart of the presence driver: a sync token from
//! before the call still gets its one snapshot afterwards.

use std::sync::Arc;
use std::time::Duration;

use presenced_engine::{EngineConfig, Presence, StreamPos};
use presenced_router::{ModuleCommand, PresenceRouter};
use presenced_server::presence::token::PresenceToken;
use presenced_server::presence::{PresenceService, SyncRequest};
use presenced_server::store::presence::{PresenceStore, SqlitePresenceStore};
use ruma_common::{OwnedRoomId, OwnedUserId};

fn ids() -> (OwnedUserId, OwnedUserId, OwnedRoomId) {
    (
        "@receiver:test".try_into().unwrap(),
        "@sender:test".try_into().unwrap(),
        "!room:test".try_into().unwrap(),
    )
}

fn start(store: Arc<SqlitePresenceStore>) -> PresenceService {
    let (receiver, sender, room) = ids();
    let (service, _outbound) = PresenceService::start(
        EngineConfig::default(),
        "test".try_into().unwrap(),
        PresenceRouter::default(),
        store,
        vec![(room.clone(), receiver), (room, sender)],
    );
    service
}

async fn sync(service: &PresenceService, since: Option<StreamPos>) -> (Vec<String>, StreamPos) {
    let (receiver, _, _) = ids();
    let view = service
        .sync(SyncRequest {
            user: &receiver,
            since: since.map(PresenceToken::Local),
            room_since: None,
            include_offline: since.is_some(),
            timeout: Duration::ZERO,
            stop_waiting: None,
        })
        .await;
    let users = view.states.iter().map(|s| s.user_id.to_string()).collect();
    (users, view.next.local().expect("a single node's token"))
}

#[tokio::test]
async fn marks_are_stored_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presence.db");
    let (receiver, sender, _) = ids();

    let store = Arc::new(SqlitePresenceStore::open(&path).unwrap());
    let service = start(store.clone());
    service
        .set_presence(&sender, None, Presence::Online, None)
        .await
        .unwrap();
    let (_, token) = sync(&service, None).await;
    assert!(sync(&service, Some(token)).await.0.is_empty());
    service.module_command(ModuleCommand::SendLocalOnlinePresenceTo(vec![
        receiver.clone()
    ]));
    // The mark is stored by the persistence task; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mark = loop {
        if let Some(m) = store
            .load_marks()
            .unwrap()
            .into_iter()
            .find(|(u, _)| *u == receiver)
        {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "mark never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(mark.1 >= token);
    drop(service);

    // A new driver over the same database: the old token still gets the
    // snapshot once, and tokens handed out now are past the mark.
    let store = Arc::new(SqlitePresenceStore::open(&path).unwrap());
    let service = start(store);
    let (users, next) = sync(&service, Some(token)).await;
    assert_eq!(users, vec![sender.to_string()]);
    assert!(next > mark.1);
    assert!(sync(&service, Some(next)).await.0.is_empty());
}

#[test]
fn a_later_mark_replaces_an_earlier_one_never_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlitePresenceStore::open(&dir.path().join("presence.db")).unwrap();
    let (receiver, _, _) = ids();
    store.persist_marks(&[(receiver.clone(), 5)]).unwrap();
    store.persist_marks(&[(receiver.clone(), 9)]).unwrap();
    store.persist_marks(&[(receiver.clone(), 7)]).unwrap();
    assert_eq!(store.load_marks().unwrap(), vec![(receiver, 9)]);
}
