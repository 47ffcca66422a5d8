//! Aggregation of every module's answers, with isolation.
//!
//! Semantics follow Synapse: `get_users_for_states` answers are merged, the
//! sets of one user united; `get_interested_users` answers are united in
//! registration order and the first `PRESENCE_ALL_USERS` wins (later
//! modules are not called); no modules means empty answers. Beyond Synapse,
//! every call has a deadline, and an error, a panic or a missed deadline is
//! logged with the module's name, counted, and treated as an empty answer;
//! and `get_users_for_states` asks the modules concurrently (the union is
//! the same in any order).

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use presenced_engine::{Interest, PresenceState, UsersForStates};
use ruma_common::{OwnedUserId, UserId};

use crate::callbacks::{Callbacks, ModuleError};

/// One loaded module's registrations and counters.
pub(crate) struct LoadedModule {
    pub(crate) name: String,
    pub(crate) deadline: Duration,
    pub(crate) callbacks: Vec<Callbacks>,
    pub(crate) counters: Counters,
}

#[derive(Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
    latency_micros: AtomicU64,
}

/// Counters of one module, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// The module's name (`module:` in the config).
    pub name: String,
    /// Callback calls made.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that panicked.
    pub panics: u64,
    /// Calls that missed their deadline.
    pub timeouts: u64,
    /// Time spent in calls.
    pub total_latency: Duration,
}

impl ModuleStats {
    /// Calls that failed by error or panic (timeouts are counted apart).
    pub fn failures(&self) -> u64 {
        self.errors + self.panics
    }
}

/// Every loaded presence router module, in registration order.
#[derive(Clone, Default)]
pub struct PresenceRouter {
    modules: Arc<Vec<LoadedModule>>,
}

enum Failure {
    Error(ModuleError),
    Panic,
    Timeout,
}

impl PresenceRouter {
    pub(crate) fn from_modules(modules: Vec<LoadedModule>) -> Self {
        Self {
            modules: Arc::new(modules),
        }
    }

    /// Whether no module registered callbacks: every answer is empty, so
    /// the driver may skip routing.
    pub fn is_empty(&self) -> bool {
        !self.has_modules()
    }

    /// Whether any module registered callbacks. When not, the driver can
    /// skip routing altogether (answers would be empty).
    pub fn has_modules(&self) -> bool {
        self.modules.iter().any(|m| !m.callbacks.is_empty())
    }

    /// Names of the loaded modules, in order.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|m| m.name.as_str())
    }

    /// Merged `get_users_for_states` answer of every module: per user, the
    /// union of every module's set.
    ///
    /// The modules are asked concurrently (Synapse asks them one by one):
    /// a union does not depend on order, and this way a slow module costs
    /// the batch at most its own deadline, not the sum of everyone's.
    pub async fn get_users_for_states(&self, states: &[PresenceState]) -> UsersForStates {
        if !self.has_modules() {
            return UsersForStates::new();
        }
        let states: Arc<[PresenceState]> = states.into();
        let calls = self.modules.iter().flat_map(|module| {
            module.callbacks.iter().map(|callbacks| {
                let call = || (callbacks.get_users_for_states)(states.clone());
                module.guard("get_users_for_states", call)
            })
        });
        let answers = futures::future::join_all(calls).await;
        let mut merged = UsersForStates::new();
        for answer in answers.into_iter().flatten() {
            if merged.is_empty() {
                // The common single-module case: take the answer whole.
                merged = answer;
                continue;
            }
            for (user, set) in answer {
                match merged.get_mut(&user) {
                    Some(existing) => existing.extend(set),
                    None => {
                        merged.insert(user, set);
                    }
                }
            }
        }
        merged
    }

    /// United `get_interested_users` answer. Modules are asked one by one in
    /// registration order; the first `All` wins and later modules are not
    /// called (Synapse's rule, which is why this one is not concurrent).
    pub async fn get_interested_users(&self, user: &UserId) -> Interest {
        let mut union: HashSet<OwnedUserId> = HashSet::new();
        for module in self.modules.iter() {
            for callbacks in &module.callbacks {
                let call = || (callbacks.get_interested_users)(user.to_owned());
                match module.guard("get_interested_users", call).await {
                    Some(Interest::All) => return Interest::All,
                    Some(Interest::Users(users)) => union.extend(users),
                    Some(Interest::None) | None => {}
                }
            }
        }
        if union.is_empty() {
            Interest::None
        } else {
            Interest::Users(union)
        }
    }

    /// Each module's `get_interested_users` answer on its own, in order and
    /// without the ALL short-circuit (for the explanation query).
    pub(crate) async fn interest_per_module(&self, user: &UserId) -> Vec<(String, Interest)> {
        let mut answers = Vec::new();
        for module in self.modules.iter() {
            for callbacks in &module.callbacks {
                let call = || (callbacks.get_interested_users)(user.to_owned());
                let answer = module.guard("get_interested_users", call).await;
                answers.push((module.name.clone(), answer.unwrap_or_default()));
            }
        }
        answers
    }

    /// Counters of every module.
    pub fn stats(&self) -> Vec<ModuleStats> {
        self.modules.iter().map(LoadedModule::stats).collect()
    }
}

impl LoadedModule {
    /// Runs one callback call under the module's deadline, catching panics.
    /// `call` makes the future: a panic while making it (a synchronous bug
    /// in the callback) is caught as well as one while polling it.
    async fn guard<T, F>(&self, callback: &'static str, call: impl FnOnce() -> F) -> Option<T>
    where
        F: Future<Output = Result<T, ModuleError>>,
    {
        let started = Instant::now();
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Err(_panic) => Err(Failure::Panic),
            // The deadline bounds the wait, not the work: a callback stuck in
            // blocking code cannot be pre-empted, which is why modules must
            // stay async (documented in the crate docs).
            Ok(future) => {
                match tokio::time::timeout(self.deadline, AssertUnwindSafe(future).catch_unwind())
                    .await
                {
                    Ok(Ok(Ok(answer))) => Ok(answer),
                    Ok(Ok(Err(error))) => Err(Failure::Error(error)),
                    Ok(Err(_panic)) => Err(Failure::Panic),
                    Err(_elapsed) => Err(Failure::Timeout),
                }
            }
        };
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.latency_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Ok(answer) => Some(answer),
            Err(failure) => {
                let (counter, what) = match &failure {
                    Failure::Error(e) => (&c.errors, format!("failed: {e}")),
                    Failure::Panic => (&c.panics, "panicked".to_owned()),
                    Failure::Timeout => (
                        &c.timeouts,
                        format!("missed its {:?} deadline", self.deadline),
                    ),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(module = %self.name, callback, "presence router module {what}; its answer counts as empty");
                None
            }
        }
    }

    fn stats(&self) -> ModuleStats {
        let c = &self.counters;
        ModuleStats {
            name: self.name.clone(),
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            panics: c.panics.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            total_latency: Duration::from_micros(c.latency_micros.load(Ordering::Relaxed)),
        }
    }
}
