//! Property tests: module order changes nothing (but the ALL short-circuit)
//! and merging is a union.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use presenced_engine::{Interest, Presence, PresenceState, UsersForStates};
use presenced_router::{
    command_channel, ConstructError, ModuleApi, ModuleEntry, ModuleRegistry, PresenceRouter,
};
use proptest::prelude::*;
use ruma_common::{OwnedUserId, UserId};

fn uid(i: u8) -> OwnedUserId {
    UserId::parse(format!("@u{i}:test")).unwrap()
}

fn st(i: u8) -> PresenceState {
    let mut s = PresenceState::new(uid(i));
    s.presence = Presence::Online;
    s
}

/// One module's fixed answers, as generated data.
#[derive(Clone, Debug)]
struct Answers {
    routes: Vec<(u8, Vec<u8>)>,
    interest: Option<Vec<u8>>, // None = ALL
}

fn to_map(a: &Answers) -> UsersForStates {
    let mut m: UsersForStates = HashMap::new();
    for (user, states) in &a.routes {
        m.entry(uid(*user))
            .or_default()
            .extend(states.iter().map(|s| st(*s)));
    }
    m
}

fn to_interest(a: &Answers) -> Interest {
    match &a.interest {
        None => Interest::All,
        Some(v) if v.is_empty() => Interest::None,
        Some(v) => Interest::Users(v.iter().map(|i| uid(*i)).collect()),
    }
}

thread_local! {
    static MODULES: std::cell::RefCell<Vec<Answers>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn construct(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
    let i = config["i"].as_u64().unwrap() as usize;
    let a = MODULES.with(|m| m.borrow()[i].clone());
    let (map, interest) = (to_map(&a), to_interest(&a));
    Ok(api.register_presence_router_callbacks(
        Some(Arc::new(move |_| {
            futures::future::ready(Ok(map.clone())).boxed()
        })),
        Some(Arc::new(move |_| {
            futures::future::ready(Ok(interest.clone())).boxed()
        })),
    )?)
}

fn load(modules: &[Answers]) -> PresenceRouter {
    MODULES.with(|m| *m.borrow_mut() = modules.to_vec());
    let mut registry = ModuleRegistry::default();
    let entries: Vec<_> = (0..modules.len())
        .map(|i| {
            registry.register(format!("p{i}"), construct);
            ModuleEntry::new(format!("p{i}"), serde_json::json!({ "i": i }))
        })
        .collect();
    let (tx, _rx) = command_channel();
    registry
        .load(&entries, "test".try_into().unwrap(), tx, None)
        .unwrap()
}

fn answers() -> impl Strategy<Value = Answers> {
    (
        prop::collection::vec((0u8..6, prop::collection::vec(0u8..6, 0..4)), 0..4),
        prop::option::weighted(0.8, prop::collection::vec(0u8..6, 0..4)),
    )
        .prop_map(|(routes, interest)| Answers { routes, interest })
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #[test]
    fn merge_is_the_union_whatever_the_order(modules in prop::collection::vec(answers(), 0..5), seed in any::<u64>()) {
        let mut expected: HashMap<OwnedUserId, HashSet<PresenceState>> = HashMap::new();
        for a in &modules {
            for (user, set) in to_map(a) {
                expected.entry(user).or_default().extend(set);
            }
        }
        let mut shuffled = modules.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % n);
        let states = [st(0)];
        prop_assert_eq!(&block(load(&modules).get_users_for_states(&states)), &expected);
        prop_assert_eq!(&block(load(&shuffled).get_users_for_states(&states)), &expected);
    }

    #[test]
    fn interest_is_order_independent_union_or_all(modules in prop::collection::vec(answers(), 0..5), seed in any::<u64>()) {
        let any_all = modules.iter().any(|a| a.interest.is_none());
        let union: HashSet<OwnedUserId> = modules.iter().filter_map(|a| a.interest.clone()).flatten().map(uid).collect();
        let expected = if any_all { Interest::All } else if union.is_empty() { Interest::None } else { Interest::Users(union) };
        let mut shuffled = modules.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % n);
        prop_assert_eq!(block(load(&modules).get_interested_users(&uid(0))), expected.clone());
        prop_assert_eq!(block(load(&shuffled).get_interested_users(&uid(0))), expected);
    }
}
