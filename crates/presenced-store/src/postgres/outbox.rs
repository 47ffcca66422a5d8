//! [`OutboxStore`] on PostgreSQL, with the rules of `sqlite/outbox.rs`:
//! one counter for queue places and versions, a replaced row keeps its
//! place and gets a new `seq`, a sent row goes only if its `seq` is
//! unchanged.

use std::collections::HashMap;

use presenced_engine::{Presence, PresenceState, Timestamp};
use ruma_common::{OwnedServerName, OwnedUserId, ServerName};

use super::PgStore;
use crate::outbox::{OutboxEntry, OutboxStore};
use crate::sqlite::parse_or_skip;
use crate::StoreResult;

/// The transaction-level advisory lock that serialises queueing, so two
/// batches never read the same `MAX(seq)` (`b"outbox"`).
const QUEUE_LOCK: i64 = 0x6f75_7462_6f78;

impl OutboxStore for PgStore {
    fn queue_presence(&self, items: &[(OwnedServerName, PresenceState)]) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        // One row per (destination, user), as one statement: its queue place
        // is its first occurrence in the batch, its version and state the
        // last, which is what applying the batch row by row would leave.
        let mut at: HashMap<(&str, &str), usize> = HashMap::new();
        let mut rows: Vec<(usize, usize, &OwnedServerName, &PresenceState)> = Vec::new();
        for (i, (destination, state)) in items.iter().enumerate() {
            let key = (destination.as_str(), state.user_id.as_str());
            match at.get(&key) {
                Some(&row) => {
                    rows[row].1 = i;
                    rows[row].3 = state;
                }
                None => {
                    at.insert(key, rows.len());
                    rows.push((i, i, destination, state));
                }
            }
        }
        let mut columns = QueueColumns::default();
        for (first, last, destination, state) in rows {
            columns.destination.push(destination.to_string());
            columns.user_id.push(state.user_id.to_string());
            columns.queued.push(first as i64 + 1);
            columns.seq.push(last as i64 + 1);
            columns.presence.push(state.presence.as_str().to_owned());
            columns.last_active_ts.push(state.last_active_ts.0 as i64);
            columns
                .status_msg
                .push(state.status_msg.as_deref().map(str::to_owned));
            columns.currently_active.push(state.currently_active);
        }
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
            tx.execute(&lock, &[&QUEUE_LOCK]).await?;
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO destination_presence_outbox
                       (destination, user_id, queued, seq, presence, last_active_ts,
                        status_msg, currently_active)
                     SELECT d, u, base.n + q, base.n + s, p, a, m, c
                     FROM (SELECT COALESCE(MAX(seq), 0) AS n FROM destination_presence_outbox) base,
                          UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[],
                                 $6::BIGINT[], $7::TEXT[], $8::BOOLEAN[]) AS x(d, u, q, s, p, a, m, c)
                     ON CONFLICT (destination, user_id) DO UPDATE SET seq = excluded.seq,
                       presence = excluded.presence, last_active_ts = excluded.last_active_ts,
                       status_msg = excluded.status_msg,
                       currently_active = excluded.currently_active",
                )
                .await?;
            tx.execute(
                &upsert,
                &[
                    &columns.destination,
                    &columns.user_id,
                    &columns.queued,
                    &columns.seq,
                    &columns.presence,
                    &columns.last_active_ts,
                    &columns.status_msg,
                    &columns.currently_active,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn pending_presence(
        &self,
        destination: &ServerName,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEntry>> {
        let destination = destination.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT seq, user_id, presence, last_active_ts, status_msg, currently_active
                     FROM destination_presence_outbox WHERE destination = $1
                     ORDER BY queued LIMIT $2",
                )
                .await?;
            let rows = c.query(&stmt, &[&destination, &limit]).await?;
            let mut entries = Vec::with_capacity(rows.len());
            for r in rows {
                let user: &str = r.get(1);
                let Some(user_id) = parse_or_skip::<OwnedUserId>("outbox user_id", user) else {
                    continue;
                };
                let presence: &str = r.get(2);
                let Some(presence) = Presence::parse(presence) else {
                    tracing::warn!(%user, presence, "skipping unreadable outbox row");
                    continue;
                };
                let mut state = PresenceState::new(user_id);
                state.presence = presence;
                state.last_active_ts = Timestamp(r.get::<_, i64>(3) as u64);
                state.status_msg =
                    presenced_engine::presence::status_msg(r.get::<_, Option<&str>>(4));
                state.currently_active = r.get(5);
                entries.push(OutboxEntry {
                    seq: r.get(0),
                    state,
                });
            }
            Ok(entries)
        })
    }

    fn remove_sent_presence(
        &self,
        destination: &ServerName,
        sent: &[(OwnedUserId, i64)],
    ) -> StoreResult<usize> {
        if sent.is_empty() {
            return Ok(0);
        }
        let destination = destination.to_string();
        let users: Vec<String> = sent.iter().map(|(u, _)| u.to_string()).collect();
        let seqs: Vec<i64> = sent.iter().map(|(_, s)| *s).collect();
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "DELETE FROM destination_presence_outbox o
                     USING UNNEST($2::TEXT[], $3::BIGINT[]) AS x(u, s)
                     WHERE o.destination = $1 AND o.user_id = x.u AND o.seq = x.s",
                )
                .await?;
            let removed = c.execute(&stmt, &[&destination, &users, &seqs]).await?;
            Ok(removed as usize)
        })
    }

    fn outbox_destinations(&self) -> StoreResult<Vec<OwnedServerName>> {
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT DISTINCT destination FROM destination_presence_outbox")
                .await?;
            let rows = c.query(&stmt, &[]).await?;
            Ok(rows
                .iter()
                .filter_map(|r| parse_or_skip("outbox destination", r.get::<_, &str>(0)))
                .collect())
        })
    }

    fn outbox_len(&self) -> StoreResult<u64> {
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT COUNT(*) FROM destination_presence_outbox")
                .await?;
            let n: i64 = c.query_one(&stmt, &[]).await?.get(0);
            Ok(n as u64)
        })
    }
}

/// The batch as columns, for one `UNNEST` insert.
#[derive(Default)]
struct QueueColumns {
    destination: Vec<String>,
    user_id: Vec<String>,
    queued: Vec<i64>,
    seq: Vec<i64>,
    presence: Vec<String>,
    last_active_ts: Vec<i64>,
    status_msg: Vec<Option<String>>,
    currently_active: Vec<bool>,
}
