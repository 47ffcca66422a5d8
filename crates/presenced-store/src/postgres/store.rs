//! [`Store`] on PostgreSQL: the statements of `sqlite.rs` in PostgreSQL's
//! dialect, with the same answers (the conformance suite runs both).
//!
//! Every call borrows one pooled connection for its statements; writes
//! that SQLite does in a transaction are one transaction here too. Room
//! writes are serialised by the server's room writer, so stream positions
//! become visible in order, as on SQLite.

use std::str::FromStr;

use deadpool_postgres::{GenericClient, Object, Transaction};
use presenced_engine::Timestamp;
use ruma_common::{
    DeviceId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{PgStore, ROOM_WRITES_LOCK_KEY};
use crate::membership::Membership;
use crate::sql_time;
use crate::sqlite::{parse_or_skip, RawEvent, EVENT_COLUMNS};
use crate::{
    MembershipRow, NewEvent, NewUser, Store, StoreError, StoreResult, StoredEvent, TailedEvent,
    Timeline, TokenOwner, UserRecord,
};

fn raw_event(r: &Row) -> RawEvent {
    RawEvent {
        stream: r.get(0),
        event_id: r.get(1),
        room_id: r.get(2),
        sender: r.get(3),
        event_type: r.get(4),
        state_key: r.get(5),
        content: r.get(6),
        origin_server_ts: r.get(7),
        txn_device_id: r.get(8),
        txn_id: r.get(9),
    }
}

async fn query_events<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<StoredEvent>> {
    let stmt = c.prepare_cached(sql).await?;
    let rows = c.query(&stmt, params).await?;
    Ok(rows
        .iter()
        .map(raw_event)
        .filter_map(RawEvent::parse)
        .collect())
}

async fn query_memberships<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<MembershipRow>> {
    let stmt = c.prepare_cached(sql).await?;
    let rows = c.query(&stmt, params).await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(MembershipRow {
                room_id: parse_or_skip("room_id", r.get::<_, &str>(0))?,
                user_id: parse_or_skip("user_id", r.get::<_, &str>(1))?,
                membership: parse_or_skip("membership", r.get::<_, &str>(2))?,
                stream: r.get(3),
            })
        })
        .collect())
}

/// Appends events inside an open transaction; membership events also
/// update `roomid_userid_membership` (as `sqlite.rs` does) and write a
/// `membership_outbox` row (ids from the head row: commit order).
async fn insert_events(tx: &Transaction<'_>, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
    // Room writes commit one at a time, so stream positions are visible in
    // order: a cluster node that has read position N has seen every event
    // below N (an identity column alone hands out positions that commit
    // out of order). One writer thread per node means no wait on a single
    // node; the lock ends with the transaction.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROOM_WRITES_LOCK_KEY])
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO events (event_id, room_id, sender, event_type, state_key, content, \
             origin_server_ts, txn_device_id, txn_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING stream",
        )
        .await?;
    let member = tx
        .prepare_cached(
            "INSERT INTO roomid_userid_membership (room_id, user_id, membership, stream) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) \
             DO UPDATE SET membership = excluded.membership, stream = excluded.stream",
        )
        .await?;
    let outbox = tx
        .prepare_cached(
            "WITH head AS (UPDATE membership_outbox_head SET last_id = last_id + 1 \
             RETURNING last_id) \
             INSERT INTO membership_outbox (id, room_id, user_id, membership, stream) \
             SELECT last_id, $1, $2, $3, $4 FROM head",
        )
        .await?;
    let mut streams = Vec::with_capacity(events.len());
    for e in events {
        let content =
            serde_json::to_string(&e.content).map_err(|err| StoreError::Backend(Box::new(err)))?;
        let stream: i64 = tx
            .query_one(
                &insert,
                &[
                    &e.event_id.as_str(),
                    &e.room_id.as_str(),
                    &e.sender.as_str(),
                    &e.event_type,
                    &e.state_key,
                    &content,
                    &sql_time::to_column(e.origin_server_ts),
                    &e.txn.as_ref().map(|t| t.device_id.as_str()),
                    &e.txn.as_ref().map(|t| t.txn_id.as_str()),
                ],
            )
            .await?
            .get(0);
        if e.event_type == "m.room.member" {
            let membership = e
                .content
                .get("membership")
                .and_then(Value::as_str)
                .and_then(|m| Membership::from_str(m).ok());
            if let (Some(state_key), Some(membership)) = (&e.state_key, membership) {
                let row: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
                    &e.room_id.as_str(),
                    state_key,
                    &membership.as_str(),
                    &stream,
                ];
                tx.execute(&member, &row).await?;
                tx.execute(&outbox, &row).await?;
            }
        }
        streams.push(stream);
    }
    Ok(streams)
}

impl PgStore {
    /// Membership outbox rows after `after`, in id order, at most `limit`
    /// (cluster mode's relay reads them into the membership feed). Ids are
    /// taken in commit order, so reading past id N never skips a row
    /// below N that commits later.
    pub fn membership_outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, MembershipRow)>> {
        let (after, limit) = (after as i64, limit as i64);
        self.call(move |c| async move {
            let rows = c
                .query(
                    "SELECT id, room_id, user_id, membership, stream FROM membership_outbox \
                     WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let row = MembershipRow {
                        room_id: parse_or_skip("room id", r.get::<_, &str>(1))?,
                        user_id: parse_or_skip("user id", r.get::<_, &str>(2))?,
                        membership: parse_or_skip("membership", r.get::<_, &str>(3))?,
                        stream: r.get(4),
                    };
                    Some((r.get::<_, i64>(0) as u64, row))
                })
                .collect())
        })
    }

    /// Runs `f` with a pooled connection on the store's runtime; failures
    /// of the backend are logged once per outage.
    pub(crate) fn call<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = StoreResult<T>> + Send,
        T: Send + 'static,
    {
        let pool = self.pool();
        let result = self.run(async move {
            let client = pool.get().await?;
            f(client).await
        });
        match result {
            Ok(v) => {
                self.up();
                Ok(v)
            }
            Err(e @ StoreError::Backend(_)) => Err(super::backend(self, e)),
            Err(e) => Err(e),
        }
    }
}

impl Store for PgStore {
    fn create_user(&self, user: &NewUser) -> StoreResult<()> {
        let user = user.clone();
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO users (user_id, password_hash, admin, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            let result = c
                .execute(
                    &stmt,
                    &[
                        &user.user_id.as_str(),
                        &user.password_hash,
                        &user.admin,
                        &sql_time::to_column(user.created_ts),
                    ],
                )
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::UserInUse)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let user_id = user_id.to_owned();
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT password_hash, admin, deactivated FROM users WHERE user_id = $1",
                )
                .await?;
            let row = c.query_opt(&stmt, &[&user_id.as_str()]).await?;
            Ok(row.map(|r| UserRecord {
                user_id,
                password_hash: r.get(0),
                admin: r.get(1),
                deactivated: r.get(2),
            }))
        })
    }

    fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let user_id = user_id.to_string();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            for sql in [
                "UPDATE users SET deactivated = TRUE WHERE user_id = $1",
                "DELETE FROM access_tokens WHERE user_id = $1",
                "DELETE FROM devices WHERE user_id = $1",
            ] {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, &[&user_id]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn local_users(&self) -> StoreResult<Vec<OwnedUserId>> {
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT user_id FROM users WHERE NOT deactivated ORDER BY user_id COLLATE \"C\"",
                )
                .await?;
            let rows = c.query(&stmt, &[]).await?;
            Ok(rows
                .iter()
                .filter_map(|r| parse_or_skip("user id", r.get::<_, &str>(0)))
                .collect())
        })
    }

    fn issue_token(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        let display_name = display_name.map(str::to_owned);
        let token_hash = token_hash.to_owned();
        let now = sql_time::to_column(now);
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            let device = tx
                .prepare_cached(
                    "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE SET \
                     display_name = COALESCE(excluded.display_name, devices.display_name), \
                     last_seen_ts = excluded.last_seen_ts",
                )
                .await?;
            tx.execute(&device, &[&user_id, &device_id, &display_name, &now])
                .await?;
            let old = tx
                .prepare_cached("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
                .await?;
            tx.execute(&old, &[&user_id, &device_id]).await?;
            let new = tx
                .prepare_cached(
                    "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(&new, &[&token_hash, &user_id, &device_id, &now])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn token_owner(&self, token_hash: &str) -> StoreResult<Option<TokenOwner>> {
        let token_hash = token_hash.to_owned();
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT t.user_id, t.device_id, u.admin FROM access_tokens t \
                     JOIN users u ON u.user_id = t.user_id \
                     WHERE t.token_hash = $1 AND NOT u.deactivated",
                )
                .await?;
            let row = c.query_opt(&stmt, &[&token_hash]).await?;
            Ok(row.and_then(|r| {
                Some(TokenOwner {
                    user_id: parse_or_skip("user_id", r.get::<_, &str>(0))?,
                    device_id: OwnedDeviceId::from(r.get::<_, String>(1)),
                    admin: r.get(2),
                })
            }))
        })
    }

    fn delete_device(&self, user_id: &UserId, device_id: &DeviceId) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            for sql in [
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
            ] {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, &[&user_id, &device_id]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<Vec<OwnedDeviceId>> {
        let user_id = user_id.to_string();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            let select = tx
                .prepare_cached("SELECT device_id FROM devices WHERE user_id = $1")
                .await?;
            let devices = tx
                .query(&select, &[&user_id])
                .await?
                .iter()
                .map(|r| OwnedDeviceId::from(r.get::<_, String>(0)))
                .collect();
            for sql in [
                "DELETE FROM access_tokens WHERE user_id = $1",
                "DELETE FROM devices WHERE user_id = $1",
            ] {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, &[&user_id]).await?;
            }
            tx.commit().await?;
            Ok(devices)
        })
    }

    fn create_room(
        &self,
        room_id: &RoomId,
        creator: &UserId,
        now: Timestamp,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>> {
        let (room_id, creator) = (room_id.to_string(), creator.to_string());
        let events = events.to_vec();
        let now = sql_time::to_column(now);
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO rooms (room_id, creator, created_ts) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&room_id, &creator, &now]).await?;
            let streams = insert_events(&tx, &events).await?;
            tx.commit().await?;
            Ok(streams)
        })
    }

    fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
        let events = events.to_vec();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            let streams = insert_events(&tx, &events).await?;
            tx.commit().await?;
            Ok(streams)
        })
    }

    fn event_for_txn(
        &self,
        sender: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
    ) -> StoreResult<Option<OwnedEventId>> {
        let (sender, device_id, txn_id) =
            (sender.to_string(), device_id.to_string(), txn_id.to_owned());
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT event_id FROM events \
                     WHERE sender = $1 AND txn_device_id = $2 AND txn_id = $3",
                )
                .await?;
            let row = c.query_opt(&stmt, &[&sender, &device_id, &txn_id]).await?;
            Ok(row.and_then(|r| parse_or_skip("event_id", r.get::<_, &str>(0))))
        })
    }

    fn membership(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<Option<Membership>> {
        let (room_id, user_id) = (room_id.to_string(), user_id.to_string());
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT membership FROM roomid_userid_membership \
                     WHERE room_id = $1 AND user_id = $2",
                )
                .await?;
            let row = c.query_opt(&stmt, &[&room_id, &user_id]).await?;
            Ok(row.and_then(|r| parse_or_skip("membership", r.get::<_, &str>(0))))
        })
    }

    fn room_memberships(&self, room_id: &RoomId) -> StoreResult<Vec<MembershipRow>> {
        let room_id = room_id.to_string();
        self.call(move |c| async move {
            query_memberships(
                &c,
                "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
                 WHERE room_id = $1 ORDER BY stream",
                &[&room_id],
            )
            .await
        })
    }

    fn member_events(&self, room_id: &RoomId) -> StoreResult<Vec<StoredEvent>> {
        let room_id = room_id.to_string();
        self.call(move |c| async move {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream IN \
                 (SELECT stream FROM roomid_userid_membership WHERE room_id = $1) ORDER BY stream"
            );
            query_events(&c, &sql, &[&room_id]).await
        })
    }

    fn user_memberships(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRow>> {
        let user_id = user_id.to_string();
        self.call(move |c| async move {
            query_memberships(
                &c,
                "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
                 WHERE user_id = $1 ORDER BY stream",
                &[&user_id],
            )
            .await
        })
    }

    fn live_memberships(&self) -> StoreResult<Vec<MembershipRow>> {
        self.call(move |c| async move {
            query_memberships(
                &c,
                "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
                 WHERE membership IN ('invite', 'join') ORDER BY stream",
                &[],
            )
            .await
        })
    }

    fn room_join_rules(&self) -> StoreResult<Vec<(OwnedRoomId, Option<String>)>> {
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT r.room_id, (SELECT content FROM events \
                     WHERE room_id = r.room_id AND event_type = 'm.room.join_rules' \
                     AND state_key = '' ORDER BY stream DESC LIMIT 1) FROM rooms r",
                )
                .await?;
            let rows = c.query(&stmt, &[]).await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let room = parse_or_skip("room_id", r.get::<_, &str>(0))?;
                    let rule = r
                        .get::<_, Option<&str>>(1)
                        .and_then(|c| serde_json::from_str::<Value>(c).ok())
                        .and_then(|c| Some(c.get("join_rule")?.as_str()?.to_owned()));
                    Some((room, rule))
                })
                .collect())
        })
    }

    fn max_stream(&self) -> StoreResult<i64> {
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT COALESCE(MAX(stream), 0)::BIGINT FROM events")
                .await?;
            Ok(c.query_one(&stmt, &[]).await?.get(0))
        })
    }

    fn room_events_after(&self, after: i64, limit: usize) -> StoreResult<Vec<TailedEvent>> {
        let limit = limit as i64;
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT e.stream, e.room_id, e.sender, e.event_type, e.state_key, \
                     CASE WHEN e.event_type = 'm.room.member' \
                          THEN e.content::jsonb->>'membership' END, \
                     CASE WHEN e.event_type = 'm.room.create' THEN \
                          (SELECT j.content::jsonb->>'join_rule' FROM events j \
                           WHERE j.room_id = e.room_id AND j.event_type = 'm.room.join_rules' \
                           ORDER BY j.stream LIMIT 1) END \
                     FROM events e WHERE e.stream > $1 ORDER BY e.stream LIMIT $2",
                )
                .await?;
            let rows = c.query(&stmt, &[&after, &limit]).await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let event_type: &str = r.get(3);
                    let membership =
                        match (r.get::<_, Option<&str>>(4), r.get::<_, Option<&str>>(5)) {
                            (Some(target), Some(m)) if event_type == "m.room.member" => Some((
                                parse_or_skip("state_key", target)?,
                                parse_or_skip("membership", m)?,
                            )),
                            _ => None,
                        };
                    Some(TailedEvent {
                        stream: r.get(0),
                        room_id: parse_or_skip("room_id", r.get::<_, &str>(1))?,
                        sender: parse_or_skip("sender", r.get::<_, &str>(2))?,
                        membership,
                        created_public: (event_type == "m.room.create")
                            .then(|| r.get::<_, Option<&str>>(6) == Some("public")),
                    })
                })
                .collect())
        })
    }

    fn membership_changes(
        &self,
        user_id: &UserId,
        since: i64,
        upto: i64,
    ) -> StoreResult<Vec<MembershipRow>> {
        let user_id = user_id.to_string();
        self.call(move |c| async move {
            query_memberships(
                &c,
                "SELECT room_id, user_id, membership, stream FROM roomid_userid_membership \
                 WHERE user_id = $1 AND stream > $2 AND stream <= $3 ORDER BY stream",
                &[&user_id, &since, &upto],
            )
            .await
        })
    }

    fn timeline(
        &self,
        room_id: &RoomId,
        since: Option<i64>,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Timeline> {
        let room_id = room_id.to_string();
        self.call(move |c| async move {
            // One more than asked for: its presence means "limited".
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream > $2 \
                 AND stream <= $3 ORDER BY stream DESC LIMIT $4"
            );
            let mut events =
                query_events(&c, &sql, &[&room_id, &since.unwrap_or(0), &upto, &fetch]).await?;
            let limited = events.len() > limit;
            events.truncate(limit);
            events.reverse();
            Ok(Timeline { events, limited })
        })
    }

    fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<StoredEvent>> {
        let room_id = room_id.to_string();
        self.call(move |c| async move {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE room_id = $1 \
                 AND state_key IS NOT NULL \
                 AND stream = (SELECT MAX(stream) FROM events e2 WHERE e2.room_id = e.room_id \
                 AND e2.event_type = e.event_type AND e2.state_key = e.state_key \
                 AND e2.stream <= $2) ORDER BY stream"
            );
            query_events(&c, &sql, &[&room_id, &at]).await
        })
    }

    fn create_filter(&self, user_id: &UserId, filter: &Value) -> StoreResult<String> {
        let user_id = user_id.to_string();
        let json = filter.to_string();
        self.call(move |mut c| async move {
            let tx = c.transaction().await?;
            // Two uploads of one user at once must not pick the same id.
            let lock = tx
                .prepare_cached("SELECT pg_advisory_xact_lock(hashtext($1)::BIGINT)")
                .await?;
            tx.execute(&lock, &[&user_id]).await?;
            let next_stmt = tx
                .prepare_cached(
                    "SELECT (COALESCE(MAX(filter_id), -1) + 1)::BIGINT \
                     FROM userid_filterid_filter WHERE user_id = $1",
                )
                .await?;
            let next: i64 = tx.query_one(&next_stmt, &[&user_id]).await?.get(0);
            let insert = tx
                .prepare_cached(
                    "INSERT INTO userid_filterid_filter (user_id, filter_id, filter_json) \
                     VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&insert, &[&user_id, &next, &json]).await?;
            tx.commit().await?;
            Ok(next.to_string())
        })
    }

    fn filter(&self, user_id: &UserId, filter_id: &str) -> StoreResult<Option<Value>> {
        let Ok(id) = filter_id.parse::<i64>() else {
            return Ok(None);
        };
        let user_id = user_id.to_string();
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT filter_json FROM userid_filterid_filter \
                     WHERE user_id = $1 AND filter_id = $2",
                )
                .await?;
            let row = c.query_opt(&stmt, &[&user_id, &id]).await?;
            Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
        })
    }
}
