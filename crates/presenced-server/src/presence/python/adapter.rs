//! A Python module's callbacks as router callbacks: one host round trip
//! per call, the answer checked into the engine's types, and a short
//! per-user cache for `get_interested_users`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presenced_engine::{Interest, PresenceState, UsersForStates};
use presenced_router::{
    GetInterestedUsers, GetUsersForStates, ModuleApi, ModuleError, PRESENCE_ALL_USERS_STR,
};
use ruma_common::OwnedUserId;

use super::host::{CallError, PythonHost};
use super::protocol::{OwnedWireState, ToHost, WireState};
use super::stats::ModuleCalls;

/// How long a `get_interested_users` answer is reused for the same user.
/// Synapse asks on every sync; a host round trip per sync would cap a
/// busy server at the host's call rate, so a changed answer of a Python
/// module takes up to this long to apply to syncs (Rust modules are asked
/// every time).
pub const INTEREST_TTL: Duration = Duration::from_secs(2);

/// Past this many cached users, expired answers are swept out.
const CACHE_SWEEP: usize = 100_000;

/// One registered pair of a module in the host.
#[derive(Clone)]
pub(super) struct Callbacks {
    pub(super) host: PythonHost,
    pub(super) name: Arc<str>,
    pub(super) index: usize,
    pub(super) slot: usize,
    pub(super) deadline: Duration,
    pub(super) calls: Arc<ModuleCalls>,
}

/// Registers the module's `pairs` callback pairs on `api`.
pub(super) fn register(api: &mut ModuleApi, template: Callbacks, pairs: usize) {
    for slot in 0..pairs {
        let callbacks = Callbacks {
            slot,
            ..template.clone()
        };
        let for_states = callbacks.clone();
        let users_for_states: GetUsersForStates = Arc::new(move |states| {
            let c = for_states.clone();
            Box::pin(async move { c.users_for_states(&states).await })
        });
        let cache: Arc<Mutex<HashMap<OwnedUserId, (Instant, Interest)>>> = Arc::default();
        let interested_users: GetInterestedUsers = Arc::new(move |user| {
            let c = callbacks.clone();
            let cache = cache.clone();
            Box::pin(async move { c.interested_users(user, &cache).await })
        });
        api.register_presence_router_callbacks(Some(users_for_states), Some(interested_users))
            .expect("both callbacks are given");
    }
}

impl Callbacks {
    async fn users_for_states(
        &self,
        states: &[PresenceState],
    ) -> Result<UsersForStates, ModuleError> {
        let started = Instant::now();
        let answer = self
            .host
            .call(self.deadline, |id| ToHost::UsersForStates {
                id,
                module: self.index,
                slot: self.slot,
                callback: "get_users_for_states",
                states: states.iter().map(WireState::from).collect(),
            })
            .await
            .and_then(|value| self.states_answer(value));
        self.finish(started, answer)
    }

    async fn interested_users(
        &self,
        user: OwnedUserId,
        cache: &Mutex<HashMap<OwnedUserId, (Instant, Interest)>>,
    ) -> Result<Interest, ModuleError> {
        let now = Instant::now();
        if let Some((at, interest)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&user) {
            if now.duration_since(*at) < INTEREST_TTL {
                self.calls.cache_hit();
                return Ok(interest.clone());
            }
        }
        let answer = self
            .host
            .call(self.deadline, |id| ToHost::InterestedUsers {
                id,
                module: self.index,
                slot: self.slot,
                callback: "get_interested_users",
                user_id: user.as_str(),
            })
            .await
            .and_then(interest_answer);
        let interest = self.finish(now, answer)?;
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_SWEEP {
            cache.retain(|_, (at, _)| now.duration_since(*at) < INTEREST_TTL);
        }
        cache.insert(user, (now, interest.clone()));
        Ok(interest)
    }

    /// Counts the call and turns a failure into the router's error (the
    /// router logs it with the module's name and counts the answer empty).
    fn finish<T>(&self, started: Instant, answer: Result<T, CallError>) -> Result<T, ModuleError> {
        self.calls
            .record(started.elapsed(), answer.as_ref().map(|_| ()));
        answer.map_err(|e| match e {
            CallError::Exception(traceback) => ModuleError::new(format!("raised:\n{traceback}")),
            CallError::WrongType(detail) => {
                ModuleError::new(format!("wrong answer type: {detail}"))
            }
            CallError::Deadline => ModuleError::new(format!(
                "no answer within {:?}; its Python task was cancelled",
                self.deadline
            )),
            CallError::HostDown => ModuleError::new("the Python module host is restarting"),
        })
    }

    fn states_answer(&self, value: serde_json::Value) -> Result<UsersForStates, CallError> {
        let wrong = |detail: String| CallError::WrongType(detail);
        let serde_json::Value::Object(map) = value else {
            return Err(wrong(format!("host answered {value}")));
        };
        let mut out = UsersForStates::with_capacity(map.len());
        for (user, states) in map {
            let Ok(user) = OwnedUserId::try_from(user.as_str()) else {
                tracing::warn!(module = %self.name, "get_users_for_states named {user:?}, not a user id; skipped");
                continue;
            };
            let states: Vec<OwnedWireState> = serde_json::from_value(states)
                .map_err(|e| wrong(format!("states for {user}: {e}")))?;
            let set = states
                .into_iter()
                .map(OwnedWireState::into_state)
                .collect::<Result<_, _>>()
                .map_err(|e| wrong(format!("a state for {user}: {e}")))?;
            out.insert(user, set);
        }
        Ok(out)
    }
}

fn interest_answer(value: serde_json::Value) -> Result<Interest, CallError> {
    match value {
        serde_json::Value::String(s) if s == PRESENCE_ALL_USERS_STR => Ok(Interest::All),
        serde_json::Value::Array(users) => {
            let set: std::collections::HashSet<OwnedUserId> = users
                .iter()
                .filter_map(|u| u.as_str().and_then(|s| OwnedUserId::try_from(s).ok()))
                .collect();
            Ok(if set.is_empty() {
                Interest::None
            } else {
                Interest::Users(set)
            })
        }
        other => Err(CallError::WrongType(format!("host answered {other}"))),
    }
}
