//! Property tests over random module answers: the merged
//! `get_users_for_states` answer is exactly the union of the modules'
//! answers, in any module order; the united interest is the union, or ALL
//! if any module says ALL, in any order; and modules after the first ALL
//! are never called (the only thing order changes).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use presenced_router::{
    command_channel, ConstructError, Interest, ModuleApi, ModuleEntry, ModuleRegistry, Presence,
    PresenceRouter, PresenceState, UsersForStates,
};
use proptest::prelude::*;
use ruma_common::{OwnedUserId, UserId};

fn uid(i: u8) -> OwnedUserId {
    UserId::parse(format!("@u{i}:test")).unwrap()
}

/// States differ by user and presence, so sets of them can overlap partly.
fn st(i: u8) -> PresenceState {
    let mut s = PresenceState::new(uid(i % 6));
    s.presence = if i < 6 {
        Presence::Online
    } else {
        Presence::Unavailable
    };
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
    // Constructors are `fn`s; they find their module's answers here.
    static MODULES: std::cell::RefCell<Vec<(Answers, Arc<AtomicUsize>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn construct(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
    let i = config["i"].as_u64().unwrap() as usize;
    let (a, calls) = MODULES.with(|m| m.borrow()[i].clone());
    let (map, interest) = (to_map(&a), to_interest(&a));
    Ok(api.register_presence_router_callbacks(
        Some(Arc::new(move |_| {
            futures::future::ready(Ok(map.clone())).boxed()
        })),
        Some(Arc::new(move |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            futures::future::ready(Ok(interest.clone())).boxed()
        })),
    )?)
}

/// Loads the modules; returns the router and each module's call counter of
/// `get_interested_users`.
fn load(modules: &[Answers]) -> (PresenceRouter, Vec<Arc<AtomicUsize>>) {
    let counters: Vec<_> = modules.iter().map(|_| Arc::default()).collect();
    MODULES.with(|m| {
        *m.borrow_mut() = modules.iter().cloned().zip(counters.clone()).collect();
    });
    let mut registry = ModuleRegistry::default();
    let entries: Vec<_> = (0..modules.len())
        .map(|i| {
            registry.register(format!("p{i}"), construct);
            ModuleEntry::new(format!("p{i}"), serde_json::json!({ "i": i }))
        })
        .collect();
    let (tx, _rx) = command_channel();
    let router = registry
        .load(&entries, "test".try_into().unwrap(), tx, None)
        .unwrap();
    (router, counters)
}

fn answers() -> impl Strategy<Value = Answers> {
    (
        prop::collection::vec((0u8..6, prop::collection::vec(0u8..12, 0..4)), 0..4),
        prop::option::weighted(0.8, prop::collection::vec(0u8..6, 0..4)),
    )
        .prop_map(|(routes, interest)| Answers { routes, interest })
}

/// A list of modules and a permutation of it.
fn modules_and_permutation() -> impl Strategy<Value = (Vec<Answers>, Vec<Answers>)> {
    prop::collection::vec(answers(), 0..6)
        .prop_flat_map(|modules| (Just(modules.clone()), Just(modules).prop_shuffle()))
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
    fn merged_users_for_states_is_exactly_the_union_in_any_order(
        (modules, permuted) in modules_and_permutation(),
    ) {
        let mut expected: HashMap<OwnedUserId, HashSet<PresenceState>> = HashMap::new();
        for a in &modules {
            for (user, set) in to_map(a) {
                expected.entry(user).or_default().extend(set);
            }
        }
        let states = [st(0)];
        prop_assert_eq!(&block(load(&modules).0.get_users_for_states(&states)), &expected);
        prop_assert_eq!(&block(load(&permuted).0.get_users_for_states(&states)), &expected);
    }

    #[test]
    fn united_interest_is_the_union_or_all_in_any_order(
        (modules, permuted) in modules_and_permutation(),
    ) {
        let any_all = modules.iter().any(|a| a.interest.is_none());
        let union: HashSet<OwnedUserId> =
            modules.iter().filter_map(|a| a.interest.clone()).flatten().map(uid).collect();
        let expected = if any_all {
            Interest::All
        } else if union.is_empty() {
            Interest::None
        } else {
            Interest::Users(union)
        };
        prop_assert_eq!(block(load(&modules).0.get_interested_users(&uid(0))), expected.clone());
        prop_assert_eq!(block(load(&permuted).0.get_interested_users(&uid(0))), expected);
    }

    #[test]
    fn modules_after_the_first_all_are_not_called(modules in prop::collection::vec(answers(), 0..6)) {
        let (router, calls) = load(&modules);
        block(router.get_interested_users(&uid(0)));
        let first_all = modules.iter().position(|a| a.interest.is_none());
        for (i, calls) in calls.iter().enumerate() {
            let expected = usize::from(first_all.is_none_or(|f| i <= f));
            prop_assert_eq!(calls.load(Ordering::Relaxed), expected, "module {}", i);
        }
    }
}
