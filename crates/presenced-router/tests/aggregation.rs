//! Synapse's aggregation rules and presenced's isolation, one test each.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use presenced_engine::{Interest, Presence, PresenceState, UsersForStates};
use presenced_router::{
    command_channel, ConstructError, GetInterestedUsers, GetUsersForStates, LoadError, ModuleApi,
    ModuleEntry, ModuleError, ModuleRegistry, PresenceRouter,
};
use ruma_common::{OwnedUserId, UserId};

fn uid(s: &str) -> OwnedUserId {
    UserId::parse(s).unwrap()
}

fn state(user: &str, presence: Presence) -> PresenceState {
    let mut s = PresenceState::new(uid(user));
    s.presence = presence;
    s
}

/// Builds a router from closures registered as modules named m0, m1, ...
struct Fake {
    registry: ModuleRegistry,
    entries: Vec<ModuleEntry>,
}

type Behaviour = (GetUsersForStates, GetInterestedUsers);

thread_local! {
    static BEHAVIOURS: std::cell::RefCell<Vec<Behaviour>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn load(behaviours: Vec<Behaviour>, deadline: Option<Duration>) -> PresenceRouter {
    BEHAVIOURS.with(|b| *b.borrow_mut() = behaviours.clone());
    let mut fake = Fake {
        registry: ModuleRegistry::default(),
        entries: Vec::new(),
    };
    for i in 0..behaviours.len() {
        fn construct(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
            let i = config["index"].as_u64().unwrap() as usize;
            let (a, b) = BEHAVIOURS.with(|b| b.borrow()[i].clone());
            Ok(api.register_presence_router_callbacks(Some(a), Some(b))?)
        }
        fake.registry.register(format!("m{i}"), construct);
        fake.entries.push(ModuleEntry {
            module: format!("m{i}"),
            config: serde_json::json!({ "index": i }),
            deadline,
        });
    }
    let (tx, _rx) = command_channel();
    fake.registry
        .load(&fake.entries, "test".try_into().unwrap(), tx, None)
        .unwrap()
}

fn answering(map: UsersForStates, interest: Interest) -> Behaviour {
    (
        Arc::new(move |_| futures::future::ready(Ok(map.clone())).boxed()),
        Arc::new(move |_| futures::future::ready(Ok(interest.clone())).boxed()),
    )
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
    let router = load(
        vec![answering(m0, Interest::None), answering(m1, Interest::None)],
        None,
    );
    let merged = router.get_users_for_states(&[a.clone(), b.clone()]).await;
    assert_eq!(merged[&uid("@x:test")], HashSet::from([a.clone(), b]));
    assert_eq!(merged[&uid("@y:remote")], HashSet::from([a]));
    assert_eq!(merged.len(), 2);
}

#[tokio::test]
async fn interested_users_are_united_in_order() {
    let router = load(
        vec![
            answering(UsersForStates::new(), Interest::Users(users(&["@a:test"]))),
            answering(UsersForStates::new(), Interest::None),
            answering(
                UsersForStates::new(),
                Interest::Users(users(&["@b:remote"])),
            ),
        ],
        None,
    );
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::Users(users(&["@a:test", "@b:remote"]))
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
    let router = load(
        vec![
            answering(UsersForStates::new(), Interest::Users(users(&["@a:test"]))),
            answering(UsersForStates::new(), Interest::All),
            later,
        ],
        None,
    );
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

fn failing(kind: &'static str) -> Behaviour {
    fn fail<T: Send + 'static>(
        kind: &'static str,
    ) -> futures::future::BoxFuture<'static, Result<T, ModuleError>> {
        async move {
            match kind {
                "error" => Err(ModuleError::new("database down")),
                "panic" => panic!("module bug"),
                _ => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Err(ModuleError::new("unreachable"))
                }
            }
        }
        .boxed()
    }
    (Arc::new(move |_| fail(kind)), Arc::new(move |_| fail(kind)))
}

#[tokio::test]
async fn failing_modules_are_isolated_and_counted() {
    let a = state("@a:test", Presence::Online);
    let good = answering(
        HashMap::from([(uid("@x:test"), HashSet::from([a.clone()]))]),
        Interest::Users(users(&["@a:test"])),
    );
    let router = load(
        vec![failing("error"), failing("panic"), failing("timeout"), good],
        Some(Duration::from_millis(50)),
    );
    let merged = router.get_users_for_states(std::slice::from_ref(&a)).await;
    assert_eq!(merged.len(), 1, "the healthy module's answer still arrives");
    assert_eq!(merged[&uid("@x:test")], HashSet::from([a]));
    assert_eq!(
        router.get_interested_users(&uid("@me:test")).await,
        Interest::Users(users(&["@a:test"]))
    );
    let stats = router.stats();
    assert_eq!((stats[0].errors, stats[0].calls), (2, 2));
    assert_eq!(stats[1].panics, 2);
    assert_eq!(stats[2].timeouts, 2);
    assert_eq!(
        (
            stats[3].errors + stats[3].panics + stats[3].timeouts,
            stats[3].calls
        ),
        (0, 2)
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

#[test]
fn unknown_module_lists_known_names() {
    let (tx, _rx) = command_channel();
    let err = ModuleRegistry::default()
        .load(
            &[ModuleEntry::new("synapse.Nope", serde_json::json!({}))],
            "test".try_into().unwrap(),
            tx,
            None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("synapse.Nope"), "{err}");
    for known in [
        "presenced.routers.Observers",
        "presenced.routers.StaticRoutes",
        "presenced.routers.Groups",
        "presenced.routers.ServerWide",
    ] {
        assert!(err.contains(known), "{err}");
    }
}

#[test]
fn bad_module_config_names_module_and_field() {
    let (tx, _rx) = command_channel();
    let err = ModuleRegistry::default()
        .load(
            &[ModuleEntry::new(
                "presenced.routers.Observers",
                serde_json::json!({"observer": ["@a:test"]}),
            )],
            "test".try_into().unwrap(),
            tx,
            None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("presenced.routers.Observers") && err.contains("observer"),
        "{err}"
    );
    let (tx, _rx) = command_channel();
    let err = ModuleRegistry::default()
        .load(
            &[ModuleEntry::new(
                "presenced.routers.Observers",
                serde_json::json!({"observers": ["not-a-user"]}),
            )],
            "test".try_into().unwrap(),
            tx,
            None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("presenced.routers.Observers"), "{err}");
}

#[test]
fn module_api_calls_reach_the_driver_validated() {
    let (tx, mut rx) = command_channel();
    let api = ModuleApi::new("test".try_into().unwrap(), tx);
    let handle = api.handle();
    handle.send_local_online_presence_to(vec![uid("@a:test")]);
    assert_eq!(
        rx.try_recv().unwrap(),
        presenced_router::ModuleCommand::SendLocalOnlinePresenceTo(vec![uid("@a:test")])
    );
    let bad = HashMap::from([(uid("@a:test"), ("here".to_owned(), None))]);
    assert!(handle.set_presence_for_users_raw(bad).is_err());
    assert!(rx.try_recv().is_err(), "a rejected call sends nothing");
    let good = HashMap::from([(
        uid("@a:test"),
        ("org.matrix.msc3026.busy".to_owned(), Some("x".to_owned())),
    )]);
    handle.set_presence_for_users_raw(good).unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        presenced_router::ModuleCommand::SetPresenceForUsers(vec![(
            uid("@a:test"),
            Presence::Busy,
            Some("x".to_owned())
        )])
    );
}
