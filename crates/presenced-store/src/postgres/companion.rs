//! [`CompanionStore`] on PostgreSQL, with the rule of `sqlite/companion.rs`.
//! Writers take one transaction-level advisory lock first, so two nodes
//! (or the bootstrap beside a transaction) never compare against the same
//! stored row at once, and a transaction id is claimed once.

use presenced_engine::Timestamp;
use ruma_common::{OwnedRoomId, OwnedUserId};

use super::PgStore;
use crate::companion::{
    is_newer, AppliedMembership, CompanionStore, MembershipEvent, RawChange, KEPT_CHANGES,
    KEPT_TRANSACTION_IDS,
};
use crate::sqlite::parse_or_skip;
use crate::{sql_time, StoreResult};

/// The advisory lock serialising membership-view writes (`b"compmem"`).
const WRITE_LOCK: i64 = 0x63_6f6d_706d_656d;

impl CompanionStore for PgStore {
    fn apply_membership_transaction(
        &self,
        txn_id: &str,
        events: &[MembershipEvent],
    ) -> StoreResult<Vec<AppliedMembership>> {
        let txn_id = txn_id.to_owned();
        let events = events.to_vec();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .await?;
            let fresh = tx
                .execute(
                    "INSERT INTO companion_as_txns (txn_id) VALUES ($1) \
                     ON CONFLICT (txn_id) DO NOTHING",
                    &[&txn_id],
                )
                .await?;
            if fresh == 0 {
                return Ok(Vec::new());
            }
            tx.execute(
                "DELETE FROM companion_as_txns \
                 WHERE seq <= (SELECT MAX(seq) FROM companion_as_txns) - $1",
                &[&KEPT_TRANSACTION_IDS],
            )
            .await?;
            let applied = apply(&tx, &events).await?;
            tx.commit().await?;
            Ok(applied)
        })
    }

    fn upsert_memberships(
        &self,
        events: &[MembershipEvent],
    ) -> StoreResult<Vec<AppliedMembership>> {
        let events = events.to_vec();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .await?;
            let applied = apply(&tx, &events).await?;
            tx.commit().await?;
            Ok(applied)
        })
    }

    fn companion_joined(&self) -> StoreResult<Vec<(OwnedRoomId, OwnedUserId)>> {
        self.call(move |c| async move {
            // Byte order, as SQLite sorts, whatever the database's collation.
            let rows = c
                .query(
                    "SELECT room_id, user_id FROM companion_memberships \
                     WHERE membership = 'join' ORDER BY room_id COLLATE \"C\", user_id COLLATE \"C\"",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    Some((
                        parse_or_skip("room_id", r.get::<_, &str>(0))?,
                        parse_or_skip("user_id", r.get::<_, &str>(1))?,
                    ))
                })
                .collect())
        })
    }

    fn companion_has_memberships(&self) -> StoreResult<bool> {
        self.call(move |c| async move {
            let row = c
                .query_one("SELECT EXISTS (SELECT 1 FROM companion_memberships)", &[])
                .await?;
            Ok(row.get(0))
        })
    }

    fn companion_changes_after(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AppliedMembership)>> {
        let limit = limit as i64;
        self.call(move |c| async move {
            let rows = c
                .query(
                    "SELECT seq, room_id, user_id, sender, membership, previous, \
                       origin_server_ts, event_id FROM companion_membership_changes \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| RawChange {
                    seq: r.get(0),
                    room_id: r.get(1),
                    user_id: r.get(2),
                    sender: r.get(3),
                    membership: r.get(4),
                    previous: r.get(5),
                    origin_server_ts: r.get(6),
                    event_id: r.get(7),
                })
                .filter_map(RawChange::parse)
                .collect())
        })
    }

    fn companion_change_position(&self) -> StoreResult<i64> {
        self.call(move |c| async move {
            let row = c
                .query_one(
                    "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM companion_membership_changes",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }
}

/// Applies the events to the view and numbers each kept change for
/// cluster nodes to follow. The numbers are taken under the write lock,
/// which is held until commit, so they become visible in order.
async fn apply(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[MembershipEvent],
) -> StoreResult<Vec<AppliedMembership>> {
    let applied = apply_to_view(tx, events).await?;
    let record = tx
        .prepare_cached(
            "INSERT INTO companion_membership_changes \
               (seq, room_id, user_id, sender, membership, previous, origin_server_ts, event_id) \
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM companion_membership_changes), \
               $1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    for change in &applied {
        let event = &change.event;
        tx.execute(
            &record,
            &[
                &event.room_id.as_str(),
                &event.user_id.as_str(),
                &event.sender.as_str(),
                &event.membership.as_str(),
                &change.previous.map(|p| p.as_str()),
                &sql_time::to_column(event.origin_server_ts),
                &event.event_id.as_str(),
            ],
        )
        .await?;
    }
    if !applied.is_empty() {
        tx.execute(
            "DELETE FROM companion_membership_changes \
             WHERE seq <= (SELECT MAX(seq) FROM companion_membership_changes) - $1",
            &[&KEPT_CHANGES],
        )
        .await?;
    }
    Ok(applied)
}

/// Applies the events one by one; the comparison is made here, in Rust,
/// so it is byte order whatever the database's collation.
async fn apply_to_view(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[MembershipEvent],
) -> StoreResult<Vec<AppliedMembership>> {
    let read = tx
        .prepare_cached(
            "SELECT membership, origin_server_ts, event_id FROM companion_memberships \
             WHERE room_id = $1 AND user_id = $2",
        )
        .await?;
    let write = tx
        .prepare_cached(
            "INSERT INTO companion_memberships \
               (room_id, user_id, membership, origin_server_ts, event_id) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
               origin_server_ts = excluded.origin_server_ts, event_id = excluded.event_id",
        )
        .await?;
    let mut applied = Vec::new();
    for event in events {
        let stored = tx
            .query_opt(&read, &[&event.room_id.as_str(), &event.user_id.as_str()])
            .await?;
        let previous = match &stored {
            Some(row) => {
                let ts: i64 = row.get(1);
                let id: &str = row.get(2);
                let stored_key: (Timestamp, &str) = (sql_time::from_column(ts), id);
                if !is_newer(
                    (event.origin_server_ts, event.event_id.as_str()),
                    stored_key,
                ) {
                    continue;
                }
                parse_or_skip("membership", row.get::<_, &str>(0))
            }
            None => None,
        };
        tx.execute(
            &write,
            &[
                &event.room_id.as_str(),
                &event.user_id.as_str(),
                &event.membership.as_str(),
                &sql_time::to_column(event.origin_server_ts),
                &event.event_id.as_str(),
            ],
        )
        .await?;
        applied.push(AppliedMembership {
            event: event.clone(),
            previous,
        });
    }
    Ok(applied)
}
