//! Helpers shared by the integration tests: ids, states, closure-backed
//! modules, and a tracing subscriber that records warnings.

#![allow(dead_code, unreachable_pub)] // each test file uses a subset

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use presenced_router::{
    command_channel, ConstructError, GetInterestedUsers, GetUsersForStates, Interest, ModuleApi,
    ModuleEntry, ModuleRegistry, Presence, PresenceRouter, PresenceState, UsersForStates,
};
use ruma_common::{OwnedUserId, UserId};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

pub fn uid(s: &str) -> OwnedUserId {
    UserId::parse(s).unwrap()
}

pub fn online(user: &str) -> PresenceState {
    let mut s = PresenceState::new(uid(user));
    s.presence = Presence::Online;
    s
}

/// Both callbacks of one test module.
pub type Behaviour = (GetUsersForStates, GetInterestedUsers);

/// A module that always gives these answers.
pub fn answering(map: UsersForStates, interest: Interest) -> Behaviour {
    (
        Arc::new(move |_| futures::future::ready(Ok(map.clone())).boxed()),
        Arc::new(move |_| futures::future::ready(Ok(interest.clone())).boxed()),
    )
}

thread_local! {
    // Constructors are plain `fn`s (as the registry requires), so the
    // closures they register are handed over through this slot; loading is
    // synchronous on the test's thread.
    static BEHAVIOURS: RefCell<Vec<(Behaviour, Option<Duration>)>> = const { RefCell::new(Vec::new()) };
}

fn construct(config: serde_json::Value, api: &mut ModuleApi) -> Result<(), ConstructError> {
    let i = config["index"].as_u64().unwrap() as usize;
    let ((a, b), own_deadline) = BEHAVIOURS.with(|s| s.borrow()[i].clone());
    if let Some(deadline) = own_deadline {
        api.set_deadline(deadline);
    }
    Ok(api.register_presence_router_callbacks(Some(a), Some(b))?)
}

/// Loads modules named m0, m1, ... with these behaviours. Each may set its
/// own deadline (module side); `entry_deadline` is the operator's.
pub fn load_with(
    behaviours: Vec<(Behaviour, Option<Duration>)>,
    entry_deadline: Option<Duration>,
) -> PresenceRouter {
    let n = behaviours.len();
    BEHAVIOURS.with(|s| *s.borrow_mut() = behaviours);
    let mut registry = ModuleRegistry::default();
    let entries: Vec<_> = (0..n)
        .map(|i| {
            registry.register(format!("m{i}"), construct);
            let mut entry = ModuleEntry::new(format!("m{i}"), serde_json::json!({ "index": i }));
            entry.deadline = entry_deadline;
            entry
        })
        .collect();
    let (tx, _rx) = command_channel();
    registry
        .load(&entries, "test".try_into().unwrap(), tx, None)
        .unwrap()
}

/// Loads modules m0, m1, ... with default deadlines.
pub fn load(behaviours: Vec<Behaviour>) -> PresenceRouter {
    load_with(behaviours.into_iter().map(|b| (b, None)).collect(), None)
}

/// Records every WARN event as `field=value` text, for the current thread
/// (installed with `tracing::subscriber::set_default`).
#[derive(Clone, Default)]
pub struct Warnings(pub Arc<Mutex<Vec<String>>>);

impl Warnings {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
