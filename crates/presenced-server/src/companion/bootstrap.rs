//! The membership bootstrap: every room's members read through Synapse's
//! admin API at first start, on `presenced synapse-resync`, and
//! periodically, reconciled with what the transactions said.
//!
//! Synapse pushes membership changes only from the moment the
//! application service is registered (and may replay old history), so
//! rooms that existed before presenced are read here: the room list
//! (`GET /_synapse/admin/v1/rooms`, pages of [`ROOMS_PER_PAGE`]) and each
//! room's current state (`GET /_synapse/admin/v1/rooms/{roomId}/state`),
//! whose `m.room.member` events carry the `origin_server_ts` and
//! `event_id` the store's ordering rule compares. So the bootstrap and a
//! replayed transaction can arrive in any order and agree.
//!
//! When: at start if nothing is stored yet; every [`RECONCILE_EVERY`]
//! after that, to repair anything a lost or skipped transaction left
//! wrong (an operator who cleared Synapse's appservice queue, an event
//! skipped as invalid); and on demand with `presenced synapse-resync`,
//! whose result the running server applies to presence at its next start
//! (the command has no presence driver; its rows are stored, so the
//! server's own reconciliation finds nothing new to tell).
//!
//! Also at start: the application-service ping
//! (`POST /_matrix/client/v1/appservice/{id}/ping`), which makes Synapse
//! retry its backlog of transactions at once instead of after its
//! back-off (up to 512 s). Best effort: logged, never fatal.

use std::sync::Arc;
use std::time::Duration;

use ruma_common::OwnedRoomId;
use serde_json::Value;

use super::members::{membership_events, FeedError, MembershipFeed};
use super::path_segment;
use super::registration::Registration;
use super::upstream::{Upstream, UpstreamError, CALL_TIMEOUT};
use crate::config::Secret;
use crate::store::companion::MembershipEvent;

/// How often the running server reads every room again. Six hours: each
/// run reads every room's state, which costs Synapse about what a
/// client's initial sync of those rooms costs, while a missed change is
/// rare (Synapse retries transactions until they are acknowledged).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(6 * 60 * 60);

/// Rooms per admin-API page.
pub const ROOMS_PER_PAGE: u32 = 100;

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootstrapReport {
    /// Rooms read.
    pub rooms: usize,
    /// Membership events read.
    pub memberships: usize,
    /// Memberships that changed the stored view.
    pub changed: usize,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Synapse failed or refused.
    #[error("reading rooms from Synapse's admin API: {0}")]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error("storing the rooms' members: {0}")]
    Feed(#[from] FeedError),
}

/// The admin-API reader.
pub struct Bootstrap {
    upstream: Upstream,
    admin_token: Secret,
}

impl Bootstrap {
    /// A reader calling Synapse through `upstream` with `admin_token`.
    pub fn new(upstream: Upstream, admin_token: Secret) -> Self {
        Self {
            upstream,
            admin_token,
        }
    }

    /// Reads every room's members and stores them through `feed` (which
    /// tells presence what changed), one room at a time.
    pub async fn run(&self, feed: &MembershipFeed) -> Result<BootstrapReport, BootstrapError> {
        let mut report = BootstrapReport::default();
        let mut from: u64 = 0;
        loop {
            let page: Value = self
                .upstream
                .get_json(
                    &format!("/_synapse/admin/v1/rooms?from={from}&limit={ROOMS_PER_PAGE}"),
                    self.admin_token.expose(),
                )
                .await?;
            let rooms = room_ids(&page);
            for room in &rooms {
                let Some(events) = self.room_members(room).await? else {
                    continue;
                };
                report.rooms += 1;
                report.memberships += events.len();
                report.changed += feed.apply_state(events).await?;
            }
            // `next_batch` is there while more rooms follow (a number, or
            // a numeric string in some Synapse versions).
            match next_batch(&page) {
                Some(next) if next > from && !rooms.is_empty() => from = next,
                _ => break,
            }
        }
        Ok(report)
    }

    /// A room's membership events; `None` for a room gone meanwhile.
    async fn room_members(
        &self,
        room: &OwnedRoomId,
    ) -> Result<Option<Vec<MembershipEvent>>, BootstrapError> {
        let path = format!(
            "/_synapse/admin/v1/rooms/{}/state",
            path_segment(room.as_str())
        );
        match self
            .upstream
            .get_json::<Value>(&path, self.admin_token.expose())
            .await
        {
            Ok(answer) => {
                let state = answer
                    .get("state")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                Ok(Some(membership_events(state, Some(room))))
            }
            Err(UpstreamError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                tracing::info!(room_id = %room, "room gone from Synapse during the bootstrap");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs in the server: the ping, the first bootstrap if nothing is
/// stored, then a reconciliation every [`RECONCILE_EVERY`]. A failed run
/// is logged and tried again at the next tick.
pub fn spawn(feed: Arc<MembershipFeed>, bootstrap: Bootstrap, registration: Registration) {
    // Apart, so a failing ping never holds the bootstrap up.
    let upstream = bootstrap.upstream.clone();
    tokio::spawn(async move { ping_when_listening(&upstream, &registration).await });
    tokio::spawn(async move {
        match feed.is_empty().await {
            Ok(true) => run_logged(&bootstrap, &feed, "first start").await,
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot read the stored memberships: {e}"),
        }
        let mut ticks = tokio::time::interval(RECONCILE_EVERY);
        ticks.tick().await; // the first tick is now
        loop {
            ticks.tick().await;
            run_logged(&bootstrap, &feed, "reconciliation").await;
        }
    });
}

async fn run_logged(bootstrap: &Bootstrap, feed: &MembershipFeed, why: &'static str) {
    match bootstrap.run(feed).await {
        Ok(r) => tracing::info!(
            why,
            rooms = r.rooms,
            memberships = r.memberships,
            changed = r.changed,
            "read Synapse's rooms and members"
        ),
        Err(e) => tracing::warn!(why, "membership bootstrap failed: {e}"),
    }
}

/// The ping, once presenced's listeners are likely up: Synapse calls
/// presenced back while answering it, so a ping sent before presenced
/// listens fails. Tried at 0.5 s and then at 1, 2, 4 and 8 s intervals
/// until it succeeds.
async fn ping_when_listening(upstream: &Upstream, registration: &Registration) {
    let mut wait = Duration::from_millis(500);
    for _ in 0..5 {
        tokio::time::sleep(wait).await;
        if ping(upstream, registration).await {
            return;
        }
        wait = (wait * 2).max(Duration::from_secs(1));
    }
}

/// Asks Synapse to ping the service, which makes it deliver any
/// transactions it holds for presenced now rather than after its back-off.
/// Whether Synapse answered that the ping went through.
pub async fn ping(upstream: &Upstream, registration: &Registration) -> bool {
    let url = format!(
        "{}/_matrix/client/v1/appservice/{}/ping",
        upstream.base_url(),
        path_segment(&registration.id)
    );
    let transaction_id = format!("presenced-start-{}", crate::util::ids::new_secret());
    let answer = upstream
        .http()
        .post(&url)
        .bearer_auth(&registration.as_token)
        .json(&serde_json::json!({ "transaction_id": transaction_id }))
        .timeout(CALL_TIMEOUT)
        .send()
        .await;
    match answer {
        Ok(a) if a.status().is_success() => {
            tracing::info!("Synapse reached presenced's application-service API (ping)");
            true
        }
        Ok(a) => {
            let status = a.status();
            let body = a.text().await.unwrap_or_default();
            tracing::warn!(%status, body, "Synapse's application-service ping failed");
            false
        }
        Err(e) => {
            tracing::warn!("cannot ask Synapse to ping presenced: {}", e.without_url());
            false
        }
    }
}

fn room_ids(page: &Value) -> Vec<OwnedRoomId> {
    let rooms = page.get("rooms").and_then(Value::as_array);
    rooms
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("room_id").and_then(Value::as_str))
        .filter_map(|id| match id.parse() {
            Ok(room) => Some(room),
            Err(_) => {
                tracing::warn!(room_id = id, "skipping a room with an invalid ID");
                None
            }
        })
        .collect()
}

fn next_batch(page: &Value) -> Option<u64> {
    match page.get("next_batch")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pages_and_path_segments() {
        assert_eq!(path_segment("!a:b.org"), "%21a:b.org");
        assert_eq!(next_batch(&json!({"next_batch": 100})), Some(100));
        assert_eq!(next_batch(&json!({"next_batch": "200"})), Some(200));
        assert_eq!(next_batch(&json!({"total_rooms": 3})), None);
        let rooms = room_ids(&json!({"rooms": [{"room_id": "!a:b"}, {"room_id": "bad"}, {}]}));
        assert_eq!(rooms.len(), 1);
    }
}
