//! The full presence replica every node keeps: each user's newest state
//! and its sequence, applied from the 16 partition logs in order.
//!
//! Reads (`/sync`, `GET`) are served from here, never by asking owners.
//! Applying is idempotent by sequence, so a reader that resumes after an
//! error may see an entry twice and nothing changes.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;

use crate::bus::{Bus, LogEntry, Seq};
use crate::partition::PARTITIONS;
use crate::record::{EpochMarker, Record, StateRecord};
use crate::token::VectorToken;
use crate::watched::Watched;

/// One user's newest state and where it sits in its partition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatedState {
    pub partition: u16,
    pub seq: Seq,
    pub record: StateRecord,
}

pub struct Replica {
    state: Mutex<ReplicaState>,
    applied: Watched<VectorToken>,
}

#[derive(Default)]
struct ReplicaState {
    users: BTreeMap<String, ReplicatedState>,
    markers: [Option<EpochMarker>; PARTITIONS as usize],
    /// State records of an older epoch after a newer marker, or markers
    /// whose epoch did not grow: fencing failures. Always 0 unless the
    /// owner protocol is broken; the simulator asserts it.
    fencing_violations: u64,
}

impl Default for Replica {
    fn default() -> Self {
        Self::new()
    }
}

impl Replica {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(ReplicaState::default()),
            applied: Watched::new(VectorToken::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ReplicaState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one log entry; entries at or below the applied sequence are
    /// ignored (a resumed reader repeats them).
    pub fn apply(&self, entry: &LogEntry) {
        self.apply_with(entry, |_| {});
    }

    /// Applies one log entry and hands a state record to `applied` before
    /// the applied vector moves past it: whoever waits for the vector (a
    /// `PUT` answered once its write is applied here) then also sees what
    /// `applied` did with it (the engine's state, for a `GET`).
    pub fn apply_with(&self, entry: &LogEntry, applied: impl FnOnce(&StateRecord)) {
        let p = usize::from(entry.partition);
        if entry.seq <= self.applied.get().0[p] {
            return;
        }
        let mut record_applied = None;
        {
            let mut state = self.state();
            match Record::decode(&entry.key, &entry.payload) {
                Some(Record::State(record)) => {
                    let current = state.markers[p].as_ref().map_or(0, |m| m.epoch);
                    if record.epoch < current {
                        state.fencing_violations += 1;
                    }
                    record_applied = Some(record.clone());
                    let replicated = ReplicatedState {
                        partition: entry.partition,
                        seq: entry.seq,
                        record,
                    };
                    state
                        .users
                        .insert(replicated.record.user.clone(), replicated);
                }
                Some(Record::Epoch(marker)) => {
                    let current = state.markers[p].as_ref().map_or(0, |m| m.epoch);
                    if marker.epoch <= current {
                        state.fencing_violations += 1;
                    }
                    state.markers[p] = Some(marker);
                }
                None => {}
            }
        }
        if let Some(record) = &record_applied {
            applied(record);
        }
        self.applied.modify(|vector| vector.0[p] = entry.seq);
    }

    /// The newest state of every user of a partition.
    pub fn users_of(&self, partition: u16) -> Vec<StateRecord> {
        self.state()
            .users
            .values()
            .filter(|state| state.partition == partition)
            .map(|state| state.record.clone())
            .collect()
    }

    /// The applied vector: partition `p` is applied up to `applied().0[p]`.
    pub fn applied(&self) -> VectorToken {
        self.applied.get()
    }

    /// Waits until partition `p` is applied up to `seq`; false on timeout.
    pub async fn wait_applied(&self, partition: u16, seq: Seq, timeout: Duration) -> bool {
        let p = usize::from(partition);
        let reached = self.applied.wait_for(|applied| applied.0[p] >= seq);
        tokio::time::timeout(timeout, reached).await.is_ok()
    }

    /// A user's newest state as applied here.
    pub fn get(&self, user: &str) -> Option<ReplicatedState> {
        self.state().users.get(user).cloned()
    }

    /// The current owner epoch of a partition as its log says.
    pub fn epoch(&self, partition: u16) -> u64 {
        self.state().markers[usize::from(partition)]
            .as_ref()
            .map_or(0, |m| m.epoch)
    }

    pub fn fencing_violations(&self) -> u64 {
        self.state().fencing_violations
    }

    /// Every user whose newest state is past the token, and the token to
    /// hand back: the component-wise maximum of the token and what is
    /// applied here, so it never goes backwards, whichever node served the
    /// previous one.
    pub fn changes_since(&self, token: &VectorToken) -> (Vec<ReplicatedState>, VectorToken) {
        // Read the vector first: a state applied after it is at most
        // delivered again next time (its sequence is above the vector),
        // never skipped.
        let applied = self.applied();
        let changes = self
            .state()
            .users
            .values()
            .filter(|state| {
                let p = usize::from(state.partition);
                state.seq > token.0[p] && state.seq <= applied.0[p]
            })
            .cloned()
            .collect();
        (changes, token.max(&applied))
    }
}

/// How long a reader may go without an entry while the log is ahead of
/// it before it is started again.
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Keeps `replica` following partition `partition` for as long as it runs:
/// reads from the applied sequence on and starts again after an error, or
/// when it has stalled: a consumer can stop delivering without an error
/// (JetStream clients have had such bugs, and a server restart under a
/// consumer is one way there), so silence while the log's last sequence is
/// ahead of the replica counts as a failure.
pub async fn follow<B: Bus>(
    bus: B,
    replica: std::sync::Arc<Replica>,
    driver: std::sync::Arc<dyn crate::PresenceDriver>,
    partition: u16,
) {
    let p = usize::from(partition);
    loop {
        let from = replica.applied().0[p] + 1;
        match bus.read_from(partition, from).await {
            Ok(mut entries) => {
                let mut check = tokio::time::interval(STALL_CHECK);
                check.reset();
                let mut progressed = false;
                loop {
                    tokio::select! {
                        biased;
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => {
                                replica.apply_with(&entry, |record| {
                                    driver.replicated(partition, record);
                                });
                                progressed = true;
                            }
                            Some(Err(error)) => {
                                tracing::debug!(partition, %error, "partition reader stopped");
                                break;
                            }
                            None => break,
                        },
                        _ = check.tick() => {
                            if !progressed {
                                let behind = bus
                                    .last_seq(partition)
                                    .await
                                    .is_ok_and(|last| last > replica.applied().0[p]);
                                if behind {
                                    tracing::warn!(partition, "partition reader stalled; starting it again");
                                    break;
                                }
                            }
                            progressed = false;
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(partition, %error, "partition reader not started"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
