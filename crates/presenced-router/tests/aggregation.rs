//! Synapse's aggregation and registration rules, one test each.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{answering, load, uid, Behaviour};
use futures::FutureExt;
use presenced_engine::{Interest, Presence, PresenceState, UsersForStates};
use presenced_router::{
    command_channel, ConstructError, GetInterestedUsers, GetUsersForStates, LoadError, ModuleApi,
    ModuleEntry, ModuleRegistry, PresenceRouter,
};
use ruma_common::OwnedUserId;

fn state(user: &str, presence: Presence) -> PresenceState {
    let mut s = PresenceState::new(uid(user));
    s.presence = presence;
    s
}

fn users(ids: &[&str]) -> HashSet<OwnedUserId> {
    ids.iter().map(|s| uid(s)).collect()
}

#[tokio::test]
async fn no_modules_give_empty_answers() {
    let router = PresenceRouter::default();
    assert!(!router.has_modules());
    assert!(router
        .get_users_for_states(&[state("@a:test", Presence::Online)])
        .await
        .is_empty());
    assert_eq!(
        router.get_interested_users(&uid("@a:test")).await,
        Interest::None
    );
}

#[tokio::test]
async fn users_for_states_are_merged_by_union() {
    let a = state("@a:test", Presence::Online);
    let b = state("@b:test", Presence::Unavailable);
    let m0 = HashMap::from([(uid("@x:test"), HashSet::from([a.clone()]))]);
    let m1 = HashMap::from([
        (uid("@x:test"), HashSet::from([b.clone()])),
        (uid("@y:remote"), HashSet::from([a.clone()])),
    ]);
    let router = load(vec![
        answering(m0, Interest::None),
        answering(m1, Interest::None),
    ]);
    let merged = router.get_users_for_states(&[a.clone(), b.clone()]).await;
    assert_eq!(merged[&uid("@x:test")], HashSet::from([a.clone(), b]));
    assert_eq!(merged[&uid("@y:remote")], HashSet::from([a]));
    assert_eq!(merged.len(), 2);
}

/// A module answering `interest` that records its index in `log` when asked.
fn logging(i: usize, log: &Arc<Mutex<Vec<usize>>>, interest: Interest) -> Behaviour {
    let log = log.clone();
    (
        Arc::new(|_| futures::future::ready(Ok(UsersForStates::new())).boxed()),
        Arc::new(move |_| {
            log.lock().unwrap().push(i);
            futures::future::ready(Ok(interest.clone())).boxed()
        }),
    )
}

#[tokio::test]
async fn interested_users_are_united_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let router = load(vec![
        logging(0, &log, Interest::Users(users(&["@a:test"]))),
        logging(1, &log, Interest::None),
        logging(2, &log, Interest::Users(users(&["@b:remote", "@a:test"]))),
    ]);
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::Users(users(&["@a:test", "@b:remote"]))
    );
    assert_eq!(
        *log.lock().unwrap(),
        [0, 1, 2],
        "called in registration order"
    );
}

#[tokio::test]
async fn empty_interest_answers_unite_to_none() {
    let router = load(vec![
        answering(UsersForStates::new(), Interest::Users(HashSet::new())),
        answering(UsersForStates::new(), Interest::None),
    ]);
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::None
    );
}

#[tokio::test]
async fn first_all_wins_and_later_modules_are_not_called() {
    let later_calls = Arc::new(AtomicUsize::new(0));
    let counter = later_calls.clone();
    let later: Behaviour = (
        Arc::new(|_| futures::future::ready(Ok(UsersForStates::new())).boxed()),
        Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(Ok(Interest::Users(users(&["@z:test"])))).boxed()
        }),
    );
    let router = load(vec![
        answering(UsersForStates::new(), Interest::Users(users(&["@a:test"]))),
        answering(UsersForStates::new(), Interest::All),
        later,
    ]);
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::All
    );
    assert_eq!(
        later_calls.load(Ordering::SeqCst),
        0,
        "modules after ALL are not called"
    );
}

#[test]
fn registering_one_callback_names_both() {
    let (tx, _rx) = command_channel();
    let mut api = ModuleApi::new("test".try_into().unwrap(), tx);
    let only: GetUsersForStates =
        Arc::new(|_| futures::future::ready(Ok(UsersForStates::new())).boxed());
    let err = api
        .register_presence_router_callbacks(Some(only), None)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("get_users_for_states") && message.contains("get_interested_users"),
        "{message}"
    );
    assert!(api.register_presence_router_callbacks(None, None).is_ok());
}

#[test]
fn a_module_registering_one_callback_refuses_start() {
    fn half(_: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
        let only: GetInterestedUsers =
            Arc::new(|_| futures::future::ready(Ok(Interest::None)).boxed());
        Ok(api.register_presence_router_callbacks(None, Some(only))?)
    }
    let mut registry = ModuleRegistry::default();
    registry.register("half", half);
    let (tx, _rx) = command_channel();
    let err = registry
        .load(
            &[ModuleEntry::new("half", serde_json::Value::Null)],
            "test".try_into().unwrap(),
            tx,
            None,
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Registration { ref module, .. } if module == "half"),
        "{err}"
    );
}

#[tokio::test]
async fn slow_modules_are_asked_concurrently_for_states() {
    fn slow(user: &'static str) -> Behaviour {
        (
            Arc::new(move |states: Arc<[PresenceState]>| {
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    Ok(HashMap::from([(
                        uid(user),
                        states.iter().cloned().collect(),
                    )]))
                }
                .boxed()
            }),
            Arc::new(|_| futures::future::ready(Ok(Interest::None)).boxed()),
        )
    }
    let router = load(vec![slow("@x:test"), slow("@y:test"), slow("@z:test")]);
    let started = std::time::Instant::now();
    let merged = router
        .get_users_for_states(&[state("@a:test", Presence::Online)])
        .await;
    let waited = started.elapsed();
    assert_eq!(merged.len(), 3, "every answer arrives");
    // One after another would take 900 ms.
    assert!(waited < std::time::Duration::from_millis(800), "{waited:?}");
}
