//! The one thread that runs room writes.
//!
//! Room writes are serial anyway (they hold the room stream's write lock
//! from their checks to their record, and SQLite has one writer). Run on
//! the blocking pool, each write was a separate thread queueing on that
//! lock, and every hand-over of the lock waited for the next thread to be
//! scheduled: on a busy two-core machine, that wait was longer than the
//! write. Here the writes queue as jobs for one thread, which runs them
//! back to back while the queue is not empty; the caller awaits its
//! answer without holding a thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender};
use std::thread;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures one after another on a dedicated thread; the thread
/// ends when this handle is dropped.
pub struct RoomWriter {
    jobs: Sender<Job>,
}

/// The writer thread is gone (it could not be started, or shut down).
#[derive(Debug, thiserror::Error)]
#[error("the room writer thread is not running")]
pub struct WriterGone;

impl RoomWriter {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = channel::<Job>();
        thread::Builder::new()
            .name("room-writer".to_owned())
            .spawn(move || {
                for job in queue {
                    // A panicking write fails its own request (its answer
                    // channel is dropped), not the ones queued after it.
                    if catch_unwind(AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a room write panicked");
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the writer thread, after the writes queued before it,
    /// and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WriterGone> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(f());
        });
        self.jobs.send(job).map_err(|_| WriterGone)?;
        answered.await.map_err(|_| WriterGone)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn runs_jobs_in_order_and_survives_a_panic() {
        let writer = RoomWriter::start().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        assert_eq!(
            writer.run(move || l.lock().unwrap().push(1)).await.ok(),
            Some(())
        );
        assert!(writer.run::<()>(|| panic!("boom")).await.is_err());
        let l = log.clone();
        let pending: Vec<_> = (2..=5)
            .map(|i| {
                let l = l.clone();
                writer.run(move || l.lock().unwrap().push(i))
            })
            .collect();
        for p in pending {
            p.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), [1, 2, 3, 4, 5]);
    }
}
