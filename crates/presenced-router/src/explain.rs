//! The operators' explanation query: which router modules let observer A
//! see target B. Reasons from shared rooms come from the engine; this file
//! only answers for modules.

use presenced_engine::Interest;
use ruma_common::UserId;

use crate::router::PresenceRouter;

/// Why a module lets an observer see a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// The module answered `PRESENCE_ALL_USERS` for the observer.
    AllUsers,
    /// The module named the target among the observer's interested users.
    Listed,
}

/// One module that lets the observer see the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleReason {
    /// The module's name (`module:` in the config).
    pub module: String,
    /// How it grants visibility.
    pub reason: RouteReason,
}

impl PresenceRouter {
    /// Which modules let `observer` see `target`, in registration order.
    ///
    /// Every module is asked on its own, without the ALL short-circuit of
    /// [`PresenceRouter::get_interested_users`], so that every module that
    /// grants visibility is named (an operator removing one should know the
    /// others). A failing module is logged and counted as usual and simply
    /// grants nothing here.
    pub async fn explain(&self, observer: &UserId, target: &UserId) -> Vec<ModuleReason> {
        self.interest_per_module(observer)
            .await
            .into_iter()
            .filter_map(|(module, interest)| {
                let reason = match interest {
                    Interest::All => RouteReason::AllUsers,
                    Interest::Users(users) if users.contains(target) => RouteReason::Listed,
                    Interest::Users(_) | Interest::None => return None,
                };
                Some(ModuleReason { module, reason })
            })
            .collect()
    }
}
