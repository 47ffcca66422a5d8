//! [`PresenceStore`] on PostgreSQL. `persist` is the hot path: the
//! presence writer thread calls it once per grouped commit and answers the
//! waiting PUTs after it returns, so each batch is one transaction of one
//! `UNNEST` statement, whatever its size.
//!
//! `ON CONFLICT` cannot touch a row twice in one statement, so a batch is
//! first reduced to one row per user, keeping what applying it row by row
//! (as `presence.rs` does on SQLite) would leave.

use std::collections::HashMap;

use presenced_engine::{Presence, PresenceState, StreamPos, Timestamp};
use ruma_common::OwnedUserId;

use super::PgStore;
use crate::presence::{PresenceStore, StoreFailure};
use crate::StoreError;

fn fail(e: StoreError) -> StoreFailure {
    StoreFailure::new(e.to_string())
}

/// The latest entry per user: the highest position, the later one on a
/// tie (the SQLite upsert's `>=`).
fn latest_per_user(states: &[(StreamPos, PresenceState)]) -> Vec<&(StreamPos, PresenceState)> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<&(StreamPos, PresenceState)> = Vec::new();
    for entry in states {
        match at.get(entry.1.user_id.as_str()) {
            Some(&i) if out[i].0 <= entry.0 => out[i] = entry,
            Some(_) => {}
            None => {
                at.insert(entry.1.user_id.as_str(), out.len());
                out.push(entry);
            }
        }
    }
    out
}

/// The highest position per user (marks and forgets: only the largest
/// matters).
fn max_per_user(items: &[(OwnedUserId, StreamPos)]) -> (Vec<String>, Vec<i64>) {
    let mut max: HashMap<&str, StreamPos> = HashMap::new();
    for (user, pos) in items {
        let e = max.entry(user.as_str()).or_insert(*pos);
        *e = (*e).max(*pos);
    }
    max.into_iter()
        .map(|(u, p)| (u.to_owned(), p as i64))
        .unzip()
}

/// A batch of states as columns for `UNNEST`.
#[derive(Default)]
struct StateColumns {
    user_id: Vec<String>,
    stream_pos: Vec<i64>,
    presence: Vec<String>,
    last_active_ts: Vec<i64>,
    last_federation_update_ts: Vec<i64>,
    last_user_sync_ts: Vec<i64>,
    status_msg: Vec<Option<String>>,
    currently_active: Vec<bool>,
}

impl StateColumns {
    fn push(&mut self, pos: StreamPos, s: &PresenceState) {
        self.user_id.push(s.user_id.to_string());
        self.stream_pos.push(pos as i64);
        self.presence.push(s.presence.as_str().to_owned());
        self.last_active_ts.push(s.last_active_ts.0 as i64);
        self.last_federation_update_ts
            .push(s.last_federation_update_ts.0 as i64);
        self.last_user_sync_ts.push(s.last_user_sync_ts.0 as i64);
        self.status_msg
            .push(s.status_msg.as_deref().map(str::to_owned));
        self.currently_active.push(s.currently_active);
    }
}

const UNNEST_STATES: &str = "UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], \
     $5::BIGINT[], $6::BIGINT[], $7::TEXT[], $8::BOOLEAN[])";

/// Whether PostgreSQL refused a value of the statement (SQLSTATE class 22,
/// data exception, such as U+0000 in `TEXT`: 22021; class 23, integrity
/// constraint) rather than failing as a whole: then the rows written one
/// by one may get the others through ([`crate::presence::group`]).
fn refused(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

impl PgStore {
    fn upsert_states(&self, sql: String, columns: StateColumns) -> Result<(), StoreFailure> {
        let written = self.call(move |c| async move {
            let stmt = c.prepare_cached(&sql).await?;
            let result = c
                .execute(
                    &stmt,
                    &[
                        &columns.user_id,
                        &columns.stream_pos,
                        &columns.presence,
                        &columns.last_active_ts,
                        &columns.last_federation_update_ts,
                        &columns.last_user_sync_ts,
                        &columns.status_msg,
                        &columns.currently_active,
                    ],
                )
                .await;
            match result {
                Ok(_) => Ok(None),
                Err(e) if refused(&e) => Ok(Some(super::error_chain(&e))),
                Err(e) => Err(e.into()),
            }
        });
        match written.map_err(fail)? {
            None => Ok(()),
            Some(refusal) => Err(StoreFailure::refusal(refusal)),
        }
    }
}

impl PresenceStore for PgStore {
    fn persist(&self, states: &[(StreamPos, PresenceState)]) -> Result<(), StoreFailure> {
        if states.is_empty() {
            return Ok(());
        }
        let mut columns = StateColumns::default();
        for (pos, s) in latest_per_user(states) {
            columns.push(*pos, s);
        }
        // One statement is one transaction (autocommit): answered only
        // once committed (`synchronous_commit = on`).
        self.upsert_states(
            format!(
                "INSERT INTO presence_userid_state SELECT * FROM {UNNEST_STATES}
                 ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos,
                   presence = excluded.presence, last_active_ts = excluded.last_active_ts,
                   last_federation_update_ts = excluded.last_federation_update_ts,
                   last_user_sync_ts = excluded.last_user_sync_ts,
                   status_msg = excluded.status_msg, currently_active = excluded.currently_active
                 WHERE excluded.stream_pos >= presence_userid_state.stream_pos"
            ),
            columns,
        )
    }

    fn save_quiet(&self, states: &[PresenceState]) -> Result<(), StoreFailure> {
        if states.is_empty() {
            return Ok(());
        }
        // Later wins; a new row gets position 0, an existing one keeps its.
        let mut last: HashMap<&str, &PresenceState> = HashMap::new();
        for s in states {
            last.insert(s.user_id.as_str(), s);
        }
        let mut columns = StateColumns::default();
        for s in last.into_values() {
            columns.push(0, s);
        }
        self.upsert_states(
            format!(
                "INSERT INTO presence_userid_state SELECT * FROM {UNNEST_STATES}
                 ON CONFLICT (user_id) DO UPDATE SET
                   presence = excluded.presence, last_active_ts = excluded.last_active_ts,
                   last_federation_update_ts = excluded.last_federation_update_ts,
                   last_user_sync_ts = excluded.last_user_sync_ts,
                   status_msg = excluded.status_msg, currently_active = excluded.currently_active"
            ),
            columns,
        )
    }

    fn load(&self) -> Result<Vec<(StreamPos, PresenceState)>, StoreFailure> {
        self.call(move |c| async move {
            let rows = c
                .query(
                    "SELECT user_id, stream_pos, presence, last_active_ts, \
                     last_federation_update_ts, last_user_sync_ts, status_msg, currently_active \
                     FROM presence_userid_state ORDER BY stream_pos",
                    &[],
                )
                .await?;
            let mut states = Vec::with_capacity(rows.len());
            for r in rows {
                let user: &str = r.get(0);
                let presence: &str = r.get(2);
                // A bad row is logged and skipped, never a panic.
                let (Ok(user_id), Some(presence)) =
                    (OwnedUserId::try_from(user), Presence::parse(presence))
                else {
                    tracing::warn!(%user, "skipping unreadable stored presence row");
                    continue;
                };
                let mut state = PresenceState::new(user_id);
                state.presence = presence;
                state.last_active_ts = Timestamp(r.get::<_, i64>(3) as u64);
                state.last_federation_update_ts = Timestamp(r.get::<_, i64>(4) as u64);
                state.last_user_sync_ts = Timestamp(r.get::<_, i64>(5) as u64);
                state.status_msg =
                    presenced_engine::presence::status_msg(r.get::<_, Option<&str>>(6));
                state.currently_active = r.get(7);
                states.push((r.get::<_, i64>(1) as StreamPos, state));
            }
            Ok(states)
        })
        .map_err(fail)
    }

    fn persist_marks(&self, marks: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        if marks.is_empty() {
            return Ok(());
        }
        let (users, positions) = max_per_user(marks);
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO presence_full_marks SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[])
                     ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos
                     WHERE excluded.stream_pos > presence_full_marks.stream_pos",
                )
                .await?;
            c.execute(&stmt, &[&users, &positions]).await?;
            Ok(())
        })
        .map_err(fail)
    }

    fn load_marks(&self) -> Result<Vec<(OwnedUserId, StreamPos)>, StoreFailure> {
        self.call(move |c| async move {
            let rows = c
                .query("SELECT user_id, stream_pos FROM presence_full_marks", &[])
                .await?;
            let mut marks = Vec::with_capacity(rows.len());
            for r in rows {
                let user: &str = r.get(0);
                match OwnedUserId::try_from(user) {
                    Ok(user_id) => marks.push((user_id, r.get::<_, i64>(1) as StreamPos)),
                    Err(_) => tracing::warn!(%user, "skipping unreadable full-presence mark"),
                }
            }
            Ok(marks)
        })
        .map_err(fail)
    }

    fn forget(&self, users: &[(OwnedUserId, StreamPos)]) -> Result<(), StoreFailure> {
        if users.is_empty() {
            return Ok(());
        }
        let (users, positions) = max_per_user(users);
        self.call(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "DELETE FROM presence_userid_state p
                     USING UNNEST($1::TEXT[], $2::BIGINT[]) AS x(u, at)
                     WHERE p.user_id = x.u AND p.stream_pos <= x.at",
                )
                .await?;
            c.execute(&stmt, &[&users, &positions]).await?;
            Ok(())
        })
        .map_err(fail)
    }
}
