//! A presence router written in Rust: the module API docs' example, where
//! `@alice:example.com` receives the presence of `@bob:example.com` and
//! `@charlie:somewhere.org` whether or not they share a room.
//!
//! Run: `cargo run -p presenced-router --example custom_router`

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use presenced_engine::{Interest, Presence, PresenceState};
use presenced_router::{
    command_channel, parse_config, ConstructError, ModuleApi, ModuleEntry, ModuleRegistry,
    UsersForStates,
};
use ruma_common::{OwnedUserId, UserId};
use serde::Deserialize;

/// The module's configuration, checked strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    receiver: OwnedUserId,
    senders: Vec<OwnedUserId>,
}

/// The module's constructor: reads its config and registers both callbacks.
fn custom_router(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
    let Config { receiver, senders } = parse_config(config)?;
    let senders: Arc<HashSet<OwnedUserId>> = Arc::new(senders.into_iter().collect());
    let (for_states, for_interest) = (senders.clone(), senders);
    let receiver_for_interest = receiver.clone();
    Ok(api.register_presence_router_callbacks(
        Some(Arc::new(move |states: Arc<[PresenceState]>| {
            let mut answer = UsersForStates::new();
            for state in states.iter().filter(|s| for_states.contains(&s.user_id)) {
                answer
                    .entry(receiver.clone())
                    .or_default()
                    .insert(state.clone());
            }
            futures::future::ready(Ok(answer)).boxed()
        })),
        Some(Arc::new(move |user: OwnedUserId| {
            let interest = if user == receiver_for_interest {
                Interest::Users((*for_interest).clone())
            } else {
                Interest::None
            };
            futures::future::ready(Ok(interest)).boxed()
        })),
    )?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Build presenced's module registry with this module added; operators
    // then name it under `modules:` like any built-in.
    let mut registry = ModuleRegistry::default();
    registry.register("example.CustomPresenceRouter", custom_router);
    let config = serde_json::json!({
        "receiver": "@alice:example.com",
        "senders": ["@bob:example.com", "@charlie:somewhere.org"],
    });
    let (commands, _receiver) = command_channel();
    let router = registry
        .load(
            &[ModuleEntry::new("example.CustomPresenceRouter", config)],
            "example.com".try_into().unwrap(),
            commands,
            None,
        )
        .expect("the module loads");

    let mut bob = PresenceState::new(UserId::parse("@bob:example.com").unwrap());
    bob.presence = Presence::Online;
    let answer = router.get_users_for_states(&[bob]).await;
    let alice = UserId::parse("@alice:example.com").unwrap();
    println!("alice receives: {:?}", answer.get(&alice).map(|s| s.len()));
    println!(
        "alice may see: {:?}",
        router.get_interested_users(&alice).await
    );
    let unrelated: HashMap<_, _> = router.get_users_for_states(&[]).await;
    println!("an empty batch routes to {} users", unrelated.len());
}
