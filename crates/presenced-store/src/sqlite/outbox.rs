//! [`OutboxStore`] on SQLite (table `destination_presence_outbox`,
//! migration 0002).

use presenced_engine::{Presence, PresenceState, Timestamp};
use ruma_common::{OwnedServerName, OwnedUserId, ServerName};
use rusqlite::{params, TransactionBehavior};

use super::{parse_or_skip, SqliteStore};
use crate::outbox::{OutboxEntry, OutboxStore};
use crate::StoreResult;

impl OutboxStore for SqliteStore {
    fn queue_presence(&self, items: &[(OwnedServerName, PresenceState)]) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        // IMMEDIATE: the transaction reads before it writes, and a reader
        // that later wants to write while another connection (the presence
        // store's) writes gets SQLITE_BUSY at once instead of waiting.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            // One counter for queue places and versions: the largest `seq`
            // only grows while its row exists, so a replaced row always gets
            // a `seq` its sender has never read.
            let mut next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM destination_presence_outbox",
                [],
                |r| r.get(0),
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO destination_presence_outbox
                   (destination, user_id, queued, seq, presence, last_active_ts, status_msg, currently_active)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(destination, user_id) DO UPDATE SET seq = excluded.seq,
                   presence = excluded.presence, last_active_ts = excluded.last_active_ts,
                   status_msg = excluded.status_msg, currently_active = excluded.currently_active",
            )?;
            for (destination, state) in items {
                next += 1;
                upsert.execute(params![
                    destination.as_str(),
                    state.user_id.as_str(),
                    next,
                    state.presence.as_str(),
                    state.last_active_ts.0 as i64,
                    state.status_msg.as_deref(),
                    state.currently_active,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn pending_presence(
        &self,
        destination: &ServerName,
        limit: usize,
    ) -> StoreResult<Vec<OutboxEntry>> {
        // A reader: it sees every queue commit that woke the sender.
        let conn = self.reader()?;
        let mut query = conn.prepare_cached(
            "SELECT seq, user_id, presence, last_active_ts, status_msg, currently_active
             FROM destination_presence_outbox WHERE destination = ?1
             ORDER BY queued LIMIT ?2",
        )?;
        let rows = query.query_map(params![destination.as_str(), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (seq, user, presence, last_active_ts, status_msg, currently_active) = row?;
            let Some(user_id) = parse_or_skip::<OwnedUserId>("outbox user_id", &user) else {
                continue;
            };
            let Some(presence) = Presence::parse(&presence) else {
                tracing::warn!(%user, presence, "skipping unreadable outbox row");
                continue;
            };
            let mut state = PresenceState::new(user_id);
            state.presence = presence;
            state.last_active_ts = Timestamp(last_active_ts as u64);
            state.status_msg = presenced_engine::presence::status_msg(status_msg.as_deref());
            state.currently_active = currently_active;
            entries.push(OutboxEntry { seq, state });
        }
        Ok(entries)
    }

    fn remove_sent_presence(
        &self,
        destination: &ServerName,
        sent: &[(OwnedUserId, i64)],
    ) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut removed = 0;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM destination_presence_outbox
                 WHERE destination = ?1 AND user_id = ?2 AND seq = ?3",
            )?;
            for (user, seq) in sent {
                removed += delete.execute(params![destination.as_str(), user.as_str(), seq])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    fn outbox_destinations(&self) -> StoreResult<Vec<OwnedServerName>> {
        let conn = self.reader()?;
        let mut query =
            conn.prepare_cached("SELECT DISTINCT destination FROM destination_presence_outbox")?;
        let rows = query.query_map([], |r| r.get::<_, String>(0))?;
        let mut destinations = Vec::new();
        for row in rows {
            if let Some(d) = parse_or_skip("outbox destination", &row?) {
                destinations.push(d);
            }
        }
        Ok(destinations)
    }

    fn outbox_len(&self) -> StoreResult<u64> {
        let conn = self.reader()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM destination_presence_outbox",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}

// Behaviour tests: `tests/conformance.rs` (the same on both backends).
