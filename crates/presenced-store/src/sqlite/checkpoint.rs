//! WAL checkpoints on their own thread.
//!
//! With `synchronous = NORMAL` a commit only appends to the WAL; the
//! fsyncs happen when the WAL is copied back into the database file (a
//! checkpoint). Left to SQLite, the writer that pushes the WAL past its
//! threshold runs that checkpoint inside its commit, so every thousandth
//! presence PUT or so waited for two fsyncs (tens of milliseconds on a
//! virtual disk): that was the PUT latency tail under load. Here a
//! separate connection checkpoints in the background instead; the writers
//! keep SQLite's automatic checkpoint only as a far-off safety net (for a
//! process that runs without this thread, such as `register-user`).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the background thread copies the WAL back.
const INTERVAL: Duration = Duration::from_millis(250);

/// WAL pages after which a writer checkpoints by itself (about 80 MiB with
/// 4 KiB pages): only reached if the background thread falls behind or is
/// not running.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// The background checkpointer; stops (and joins) when dropped.
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every [`INTERVAL`].
    pub(crate) fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // Asked to stop, or the store is gone.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                // PASSIVE: copies what it can without waiting for readers
                // or blocking the writer.
                let result =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                if let Err(e) = result {
                    tracing::warn!("background WAL checkpoint failed: {e}");
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_frames(conn: &Connection) -> i64 {
        // (busy, frames in the WAL, frames checkpointed); a no-op PASSIVE
        // checkpoint only reports.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    #[test]
    fn the_wal_is_copied_back_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (x INTEGER);",
            )
            .unwrap();
        for i in 0..50 {
            writer.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let checkpointer = Checkpointer::start(&path).unwrap();
        std::thread::sleep(INTERVAL * 3);
        drop(checkpointer);
        // Everything was checkpointed, so the next commit restarts the WAL
        // from its beginning: it is short again.
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let frames = wal_frames(&writer);
        assert!(frames <= 3, "WAL still holds {frames} frames");
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 51);
    }
}
