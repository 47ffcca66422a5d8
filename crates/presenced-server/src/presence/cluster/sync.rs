//! The presence part of `/sync` on a cluster node.
//!
//! The engine's stream positions are this node's own, so a token from
//! another node cannot be answered from them. A cluster token is instead
//! the vector of the 16 partition logs' sequences the client has seen,
//! and the answer is computed from the replica (design §5.5): of everyone
//! the user may see, those whose logged state is past the token's
//! component for their partition and not past this node's applied vector
//! (so the next token, the component-wise maximum, never skips or repeats
//! one), plus those the user met after the token's room position (joins
//! and invites come from the room stream, which every node shares). Only
//! logged states are shown, never one an owner computed but has not
//! written yet.
//!
//! Cost: O(audience) per look, where a single node walks its change logs;
//! the design's per-partition rings are the known speed-up.

use presenced_cluster::{VectorToken, PARTITIONS};
use presenced_engine::{Presence, PresenceState};

use super::super::token::PresenceToken;
use super::super::{PresenceService, SyncPresence, SyncRequest};
use super::link::ClusterLink;
use super::ClusterBackend;

/// What `request.user` may see past the token, waiting up to the timeout
/// for something when there is nothing yet.
pub(super) async fn sync(
    service: &PresenceService,
    backend: &ClusterBackend,
    link: &ClusterLink,
    request: SyncRequest<'_>,
) -> SyncPresence {
    let SyncRequest {
        user,
        since,
        room_since,
        include_offline,
        timeout,
        stop_waiting,
    } = request;
    let since = since.as_ref().and_then(PresenceToken::vector).copied();
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
        // Read before the engine: everything up to it is in the engine.
        let applied = link.applied();
        let met_since = room_since.map(|at| backend.meetings_position(at));
        let (audience, met) = {
            let mut engine = service.engine();
            let (audience, met) = engine.cluster_view(user, met_since, &interest);
            let owned = |ids: Vec<&ruma_common::UserId>| -> Vec<_> {
                ids.into_iter().map(ToOwned::to_owned).collect()
            };
            let (audience, met) = (owned(audience), owned(met));
            engine.wait_for_presence(user);
            (audience, met)
        };
        let (states, pending) = pick(
            link,
            since.as_ref(),
            &applied,
            include_offline,
            &audience,
            &met,
        );
        let next = since.map_or(applied, |t| t.max(&applied));
        let found = SyncPresence {
            states,
            next: PresenceToken::Vector(next),
        };
        let done = !found.states.is_empty()
            || tokio::time::Instant::now() >= deadline
            || stop
            || service.is_stopping();
        if done {
            service.engine().cancel_wait(user);
            return found;
        }
        // A state logged here but not yet under the applied vector (the
        // engine woke this sync from inside the replica's apply, just
        // before the vector moved): wait for the vector, not a wake-up.
        if let Some((partition, seq)) = pending {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            link.wait_applied(partition, seq, wait).await;
            continue;
        }
        // Woken, or the deadline: either way, look again.
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// The logged states to show: audience members past the token (all of
/// them without one) and met users, none past `applied`; and one state
/// that would be shown but is past `applied` (its partition and sequence).
fn pick(
    link: &ClusterLink,
    since: Option<&VectorToken>,
    applied: &VectorToken,
    include_offline: bool,
    audience: &[ruma_common::OwnedUserId],
    met: &[ruma_common::OwnedUserId],
) -> (Vec<PresenceState>, Option<(u16, u64)>) {
    let mut pending = None;
    let mut states = Vec::new();
    let mut shown = std::collections::HashSet::new();
    for (user, always) in (audience.iter().map(|u| (u, false))).chain(met.iter().map(|u| (u, true)))
    {
        let Some((partition, seq, state)) = link.logged(user) else {
            continue;
        };
        let p = usize::from(partition % PARTITIONS);
        if seq > applied.0[p] {
            // Shown with the next token, which will be past it.
            pending = Some((partition, seq));
            continue;
        }
        let fresh = since.is_none_or(|t| seq > t.0[p]);
        let wanted = if since.is_none() {
            include_offline || state.presence != Presence::Offline
        } else {
            fresh || always
        };
        if wanted && shown.insert(user.clone()) {
            states.push(state);
        }
    }
    (states, pending)
}
