//! [`CompanionStore`] on SQLite (migration 0004): one IMMEDIATE
//! transaction per call on the writer connection, so a transaction id and
//! the memberships it brought are stored together or not at all.

use presenced_engine::Timestamp;
use ruma_common::{OwnedRoomId, OwnedUserId};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{parse_or_skip, SqliteStore};
use crate::companion::{
    is_newer, AppliedMembership, CompanionStore, MembershipEvent, RawChange, KEPT_CHANGES,
    KEPT_TRANSACTION_IDS,
};
use crate::{sql_time, StoreResult};

impl CompanionStore for SqliteStore {
    fn apply_membership_transaction(
        &self,
        txn_id: &str,
        events: &[MembershipEvent],
    ) -> StoreResult<Vec<AppliedMembership>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fresh = tx.execute(
            "INSERT INTO companion_as_txns (txn_id) VALUES (?1) ON CONFLICT (txn_id) DO NOTHING",
            [txn_id],
        )?;
        if fresh == 0 {
            return Ok(Vec::new());
        }
        tx.execute(
            "DELETE FROM companion_as_txns WHERE seq <= (SELECT MAX(seq) FROM companion_as_txns) - ?1",
            [KEPT_TRANSACTION_IDS],
        )?;
        let applied = apply(&tx, events)?;
        tx.commit()?;
        Ok(applied)
    }

    fn upsert_memberships(
        &self,
        events: &[MembershipEvent],
    ) -> StoreResult<Vec<AppliedMembership>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied = apply(&tx, events)?;
        tx.commit()?;
        Ok(applied)
    }

    fn companion_joined(&self) -> StoreResult<Vec<(OwnedRoomId, OwnedUserId)>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT room_id, user_id FROM companion_memberships \
             WHERE membership = 'join' ORDER BY room_id, user_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(room, user)| {
                Some((
                    parse_or_skip("room_id", &room)?,
                    parse_or_skip("user_id", &user)?,
                ))
            })
            .collect())
    }

    fn companion_has_memberships(&self) -> StoreResult<bool> {
        let conn = self.reader()?;
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM companion_memberships)",
            [],
            |r| r.get(0),
        )?)
    }

    fn companion_changes_after(
        &self,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AppliedMembership)>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, room_id, user_id, sender, membership, previous, origin_server_ts, \
               event_id FROM companion_membership_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(RawChange {
                    seq: r.get(0)?,
                    room_id: r.get(1)?,
                    user_id: r.get(2)?,
                    sender: r.get(3)?,
                    membership: r.get(4)?,
                    previous: r.get(5)?,
                    origin_server_ts: r.get(6)?,
                    event_id: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().filter_map(RawChange::parse).collect())
    }

    fn companion_change_position(&self) -> StoreResult<i64> {
        let conn = self.reader()?;
        Ok(conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM companion_membership_changes",
            [],
            |r| r.get(0),
        )?)
    }
}

/// Applies the events one by one, each against the row the previous one
/// may have written (two events for one member in a batch compare too),
/// and numbers each kept change for cluster nodes to follow.
fn apply(tx: &Transaction<'_>, events: &[MembershipEvent]) -> StoreResult<Vec<AppliedMembership>> {
    let applied = apply_to_view(tx, events)?;
    let mut record = tx.prepare_cached(
        "INSERT INTO companion_membership_changes \
           (seq, room_id, user_id, sender, membership, previous, origin_server_ts, event_id) \
         VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM companion_membership_changes), \
           ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for change in &applied {
        let event = &change.event;
        record.execute(params![
            event.room_id.as_str(),
            event.user_id.as_str(),
            event.sender.as_str(),
            event.membership.as_str(),
            change.previous.map(|p| p.as_str()),
            sql_time::to_column(event.origin_server_ts),
            event.event_id.as_str(),
        ])?;
    }
    if !applied.is_empty() {
        tx.execute(
            "DELETE FROM companion_membership_changes \
             WHERE seq <= (SELECT MAX(seq) FROM companion_membership_changes) - ?1",
            [KEPT_CHANGES],
        )?;
    }
    Ok(applied)
}

fn apply_to_view(
    tx: &Transaction<'_>,
    events: &[MembershipEvent],
) -> StoreResult<Vec<AppliedMembership>> {
    let mut read = tx.prepare_cached(
        "SELECT membership, origin_server_ts, event_id FROM companion_memberships \
         WHERE room_id = ?1 AND user_id = ?2",
    )?;
    let mut write = tx.prepare_cached(
        "INSERT INTO companion_memberships \
           (room_id, user_id, membership, origin_server_ts, event_id) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
           origin_server_ts = excluded.origin_server_ts, event_id = excluded.event_id",
    )?;
    let mut applied = Vec::new();
    for event in events {
        let stored: Option<(String, i64, String)> = read
            .query_row(
                params![event.room_id.as_str(), event.user_id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let candidate = (event.origin_server_ts, event.event_id.as_str());
        if let Some((_, ts, id)) = &stored {
            let stored_key: (Timestamp, &str) = (sql_time::from_column(*ts), id);
            if !is_newer(candidate, stored_key) {
                continue;
            }
        }
        write.execute(params![
            event.room_id.as_str(),
            event.user_id.as_str(),
            event.membership.as_str(),
            sql_time::to_column(event.origin_server_ts),
            event.event_id.as_str(),
        ])?;
        applied.push(AppliedMembership {
            event: event.clone(),
            previous: stored.and_then(|(m, _, _)| parse_or_skip("membership", &m)),
        });
    }
    Ok(applied)
}
