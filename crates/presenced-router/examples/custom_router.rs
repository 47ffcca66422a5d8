//! A presence router written in Rust: the module API docs' example, where
//! `@alice:example.com` receives every presence update of
//! `@bob:example.com` and `@charlie:somewhere.org`, whether or not they
//! share a room.
//!
//! Run: `cargo run -p presenced-router --example custom_router`

use std::collections::HashSet;
use std::sync::Arc;

use futures::FutureExt;
use presenced_router::{
    command_channel, parse_config, ConfigUserId, ConstructError, GetInterestedUsers,
    GetUsersForStates, Interest, ModuleApi, ModuleEntry, ModuleRegistry, Presence, PresenceState,
    UsersForStates,
};
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;

/// The module's configuration. `deny_unknown_fields` and [`ConfigUserId`]
/// make a typo fail start-up with a message naming the field or the value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    receiver: ConfigUserId,
    senders: Vec<ConfigUserId>,
}

/// The module: Synapse's `CustomPresenceRouter(config, api)`, as a
/// constructor that reads its config and registers both callbacks.
fn custom_router(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
    let config: Config = parse_config(config)?;
    let receiver = config.receiver.into_inner();
    // Callbacks return `'static` futures, so they share the module's data
    // through `Arc`s.
    let senders: Arc<HashSet<OwnedUserId>> = Arc::new(
        config
            .senders
            .into_iter()
            .map(ConfigUserId::into_inner)
            .collect(),
    );

    let (for_states, to) = (senders.clone(), receiver.clone());
    let get_users_for_states: GetUsersForStates = Arc::new(move |states: Arc<[PresenceState]>| {
        // For these updates: the senders' ones go to the receiver.
        let mut answer = UsersForStates::new();
        for state in states.iter().filter(|s| for_states.contains(&s.user_id)) {
            answer.entry(to.clone()).or_default().insert(state.clone());
        }
        futures::future::ready(Ok(answer)).boxed()
    });

    let get_interested_users: GetInterestedUsers = Arc::new(move |user: OwnedUserId| {
        // The receiver may see the senders; nobody else gains anything.
        let interest = if user == receiver {
            Interest::Users((*senders).clone())
        } else {
            Interest::None
        };
        futures::future::ready(Ok(interest)).boxed()
    });

    Ok(api.register_presence_router_callbacks(
        Some(get_users_for_states),
        Some(get_interested_users),
    )?)
}

fn online(user: &str) -> PresenceState {
    let mut state = PresenceState::new(UserId::parse(user).unwrap());
    state.presence = Presence::Online;
    state
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // presenced's registry with this module added; operators then name it
    // under `modules:` like any built-in router:
    //
    //   modules:
    //     - module: example.CustomPresenceRouter
    //       config:
    //         receiver: "@alice:example.com"
    //         senders: ["@bob:example.com", "@charlie:somewhere.org"]
    let mut registry = ModuleRegistry::default();
    registry.register("example.CustomPresenceRouter", custom_router);
    let entry: ModuleEntry = serde_json::from_value(serde_json::json!({
        "module": "example.CustomPresenceRouter",
        "config": {
            "receiver": "@alice:example.com",
            "senders": ["@bob:example.com", "@charlie:somewhere.org"],
        },
    }))
    .expect("a well-formed entry");
    let (commands, _driver_side) = command_channel();
    let router = registry
        .load(&[entry], "example.com".try_into().unwrap(), commands, None)
        .expect("the module loads");

    let alice = UserId::parse("@alice:example.com").unwrap();
    let batch = [
        online("@bob:example.com"),
        online("@charlie:somewhere.org"),
        online("@dave:example.com"),
    ];
    let answer = router.get_users_for_states(&batch).await;
    let mut received: Vec<_> = answer[&alice].iter().map(|s| s.user_id.as_str()).collect();
    received.sort_unstable();
    println!("alice receives the presence of {received:?}");
    assert_eq!(received, ["@bob:example.com", "@charlie:somewhere.org"]);
    assert_eq!(answer.len(), 1, "only alice gains extra presence");

    let interest = router.get_interested_users(&alice).await;
    println!("alice may see {interest:?}");
    assert!(interest.includes(UserId::parse("@charlie:somewhere.org").unwrap().as_ref()));

    let bob = UserId::parse("@bob:example.com").unwrap();
    let reasons = router.explain(&alice, &bob).await;
    println!("why alice sees bob: {reasons:?}");
    assert_eq!(reasons.len(), 1);

    // A typo in the config refuses start-up, naming module and value.
    let bad = ModuleEntry::new(
        "example.CustomPresenceRouter",
        serde_json::json!({"receiver": "alice", "senders": []}),
    );
    let (commands, _driver_side) = command_channel();
    let err = registry
        .load(&[bad], "example.com".try_into().unwrap(), commands, None)
        .err()
        .expect("a bad user id is refused");
    println!("a bad config is refused: {err}");
}
