//! The single-node presence writer: a thread of its own that commits the
//! engine's persistence outputs to this server's database in groups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presenced_engine::{PresenceState, StreamPos};
use ruma_common::OwnedUserId;

use crate::store::presence::group::GroupCommit;
use crate::store::presence::PresenceStore;

/// Notified states and full-presence marks to store, forgotten remote
/// users to delete, and who waits for the commit.
pub(super) struct PersistJob {
    pub(super) states: Vec<(StreamPos, PresenceState)>,
    pub(super) marks: Vec<(OwnedUserId, StreamPos)>,
    /// Deleted only where stored at or before their position, so applying
    /// them after the batch's states cannot drop a newer state.
    pub(super) forget: Vec<(OwnedUserId, StreamPos)>,
    pub(super) done: tokio::sync::oneshot::Sender<bool>,
}

/// Shortest time between two presence commits (see [`spawn_persist_thread`]):
/// the most a PUT's answer waits for others to share its commit.
const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(1);

/// The presence writer: a thread of its own that takes every job queued
/// since its last commit and stores them in one transaction (group
/// commit), then answers their waiters. A dedicated thread rather than a
/// task plus `spawn_blocking` per batch: each PUT then costs one hand-off
/// to the writer and one back, not four.
///
/// Under load it commits at most once per [`MIN_COMMIT_INTERVAL`]: a job
/// arriving sooner after the previous commit waits out the rest of the
/// interval, so the jobs of that interval share one commit. A transaction
/// costs SQLite file-lock and WAL-write syscalls whatever its size; with
/// the pause the writer thread's CPU at 12,800 PUT/s fell from ~19 % to
/// ~13 % of a core (BENCHMARKS.md). An idle writer commits at once, so a
/// lone PUT waits for nothing.
pub(super) fn spawn_persist_thread(
    store: Arc<dyn PresenceStore>,
) -> std::sync::mpsc::Sender<PersistJob> {
    let (tx, rx) = std::sync::mpsc::channel::<PersistJob>();
    let spawned = std::thread::Builder::new()
        .name("presence-writer".to_owned())
        .spawn(move || {
            let mut last_commit: Option<Instant> = None;
            // Ends when every sender (the service) is gone.
            while let Ok(first) = rx.recv() {
                if let Some(wait) =
                    last_commit.and_then(|at| MIN_COMMIT_INTERVAL.checked_sub(at.elapsed()))
                {
                    std::thread::sleep(wait);
                }
                last_commit = Some(Instant::now());
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter());
                persist_batch(&*store, jobs);
            }
        });
    if let Err(e) = spawned {
        // Without a writer every PUT answers an error (its job is dropped
        // unanswered), which is what the operator should see.
        tracing::error!("could not start the presence writer thread: {e}");
    }
    tx
}

/// Stores one group of jobs in one go and tells each waiter how it went:
/// a row the store refuses fails only its own job (`GroupCommit`).
fn persist_batch(store: &dyn PresenceStore, jobs: Vec<PersistJob>) {
    let mut group = GroupCommit::default();
    let mut waiting = Vec::with_capacity(jobs.len());
    for job in jobs {
        group.add(job.states, job.marks, job.forget);
        waiting.push(job.done);
    }
    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.commit(store)));
    let Ok(outcome) = stored else {
        tracing::error!("persisting presence panicked");
        for done in waiting {
            let _ = done.send(false);
        }
        return;
    };
    // One line per group, not per job: a database that is down fails them all.
    let failed = outcome.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = outcome.iter().find(|r| r.is_err()) {
        tracing::error!(
            failed,
            of = outcome.len(),
            "persisting presence failed: {e}"
        );
    }
    for (done, result) in waiting.into_iter().zip(outcome) {
        let _ = done.send(result.is_ok());
    }
}
