//! The presence part of `/sync` on a single node: the engine's change log
//! answers from the token's stream position.

use super::super::token::PresenceToken;
use super::super::{PresenceService, SyncPresence, SyncRequest};

/// What `request.user` may see past the token, waiting up to the timeout
/// for something when there is nothing yet.
pub(super) async fn sync(service: &PresenceService, request: SyncRequest<'_>) -> SyncPresence {
    let SyncRequest {
        user,
        since,
        include_offline,
        timeout,
        stop_waiting,
        room_since: _,
    } = request;
    // A cluster's token on a single node: a snapshot, once.
    let since = since.and_then(|t| t.local());
    let interest = service.interest(user).await;
    let deadline = tokio::time::Instant::now() + timeout;
    let notify = service.waiter_of(user);
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before looking, so a wake-up between the look and
        // the wait is not lost.
        notified.as_mut().enable();
        let stop = stop_waiting.is_some_and(|f| f());
        let view = {
            let mut engine = service.engine();
            let view = engine.sync_view(user, since, include_offline, &interest);
            let found = SyncPresence {
                states: view.states.into_iter().cloned().collect(),
                next: PresenceToken::Local(view.next),
            };
            if found.states.is_empty() && tokio::time::Instant::now() < deadline && !stop {
                engine.wait_for_presence(user);
            }
            found
        };
        if !view.states.is_empty() || tokio::time::Instant::now() >= deadline || stop {
            return view;
        }
        // Read after the notifier was enabled, so a shutdown in between
        // is not missed.
        if service.is_stopping() {
            service.engine().cancel_wait(user);
            return view;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            service.engine().cancel_wait(user);
        }
    }
}
