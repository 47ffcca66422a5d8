//! The `Bus`: everything cluster mode needs from the shared moving part.
//!
//! Two implementations keep one contract: [`crate::MemBus`] (one process,
//! fault hooks, for the deterministic simulator) and
//! [`crate::JetStreamBus`] (NATS JetStream). `tests/bus_conformance.rs` runs
//! the same checks on both, so the simulator proves things about the code
//! that runs on NATS.
//!
//! The contract, primitive by primitive:
//! - **Partition logs.** Partition `p` has one ordered log whose sequence
//!   numbers start at 1 and have no gaps. A log keeps only the newest entry
//!   per key (JetStream's "one message per subject"), so reading from `s + 1`
//!   yields exactly the keys whose newest entry is after `s`.
//!   [`Bus::append`] writes entries only if the log's last sequence is the
//!   one the caller names: that check is the fencing of partition owners.
//! - **Leases.** Small values with a revision and a time to live per bucket:
//!   `create` fails if the key is live, `update` and `release` need the
//!   current revision (compare-and-set). Revisions only grow.
//! - **Request/reply.** Core messaging: at most once, no storage.
//! - **The membership feed.** One ordered log keeping every entry (for its
//!   retention time), each named by the outbox row id it relays. Appends
//!   are fenced like partition appends and deduplicated by id, so a relay
//!   that crashed and a zombie relay can never write a row twice or out of
//!   order.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

/// Position in a partition log. 0 means "before the first entry".
pub type Seq = u64;

/// One entry read back from a partition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub partition: u16,
    pub seq: Seq,
    /// The key within the partition (a JetStream subject's last tokens).
    pub key: String,
    pub payload: Bytes,
}

/// The lease buckets. Each has its own time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseBucket {
    /// Node heartbeats: key = node name.
    Nodes,
    /// Partition owners: key = partition number.
    Owners,
}

/// A live lease: its value and the revision a compare-and-set must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The log was not at the expected sequence: nothing of this call was
    /// written. `actual` is the log's last sequence when the server said it.
    #[error("the log is not at the expected sequence (it is at {actual:?})")]
    WrongLastSequence { actual: Option<Seq> },
    /// `create` of a lease that is live.
    #[error("the lease is held")]
    LeaseHeld,
    /// `update` or `release` named a revision that is not the current one
    /// (someone else holds the lease now, or it expired).
    #[error("the lease changed hands")]
    LeaseLost,
    /// Nobody serves the subject of a request.
    #[error("nobody serves {0}")]
    NoResponders(String),
    #[error("timed out")]
    TimedOut,
    /// The bus could not be reached, or answered in a way that leaves the
    /// outcome unknown: an append may or may not have been written.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The servers answered but cannot carry the cluster as configured (too
    /// old, too few replicas, other lease timings): waiting will not help.
    #[error("{0}")]
    Refused(String),
}

/// A request received on a served subject; answer it with [`Request::respond`].
pub struct Request {
    pub payload: Bytes,
    pub(crate) responder: Responder,
}

pub(crate) enum Responder {
    Mem(tokio::sync::oneshot::Sender<Bytes>),
    Nats {
        client: async_nats::Client,
        reply: async_nats::Subject,
    },
}

impl Request {
    /// Sends the answer. A requester that gave up meanwhile is not an error.
    pub async fn respond(self, answer: Bytes) {
        match self.responder {
            Responder::Mem(sender) => {
                let _ = sender.send(answer);
            }
            Responder::Nats { client, reply } => {
                if let Err(error) = client.publish(reply, answer).await {
                    tracing::debug!(%error, "answer to a cluster request not sent");
                }
            }
        }
    }
}

/// What cluster mode needs from its bus; see the module doc for the contract.
pub trait Bus: Clone + Send + Sync + 'static {
    /// Ordered entries of one partition log, from a sequence on, then live.
    type Entries: Stream<Item = Result<LogEntry, BusError>> + Send + Unpin + 'static;
    /// Requests arriving on a served subject, until the stream is dropped.
    type Requests: Stream<Item = Request> + Send + Unpin + 'static;

    /// Appends `entries` in order if the log's last sequence is
    /// `expected_last`; returns the sequence of the last one written.
    /// `WrongLastSequence` means nothing was written; any other error leaves
    /// the outcome unknown (some, none or all may have been written), and
    /// the caller must read the log before it appends again.
    fn append(
        &self,
        partition: u16,
        expected_last: Seq,
        entries: Vec<(String, Bytes)>,
    ) -> impl Future<Output = Result<Seq, BusError>> + Send;

    /// The log's last sequence (0 when empty).
    fn last_seq(&self, partition: u16) -> impl Future<Output = Result<Seq, BusError>> + Send;

    /// Entries from sequence `from` on (superseded ones are skipped), in
    /// order, then new ones as they are written.
    fn read_from(
        &self,
        partition: u16,
        from: Seq,
    ) -> impl Future<Output = Result<Self::Entries, BusError>> + Send;

    fn lease_get(
        &self,
        bucket: LeaseBucket,
        key: &str,
    ) -> impl Future<Output = Result<Option<Lease>, BusError>> + Send;

    /// Every live lease of a bucket, by key.
    fn lease_list(
        &self,
        bucket: LeaseBucket,
    ) -> impl Future<Output = Result<Vec<(String, Lease)>, BusError>> + Send;

    /// Takes a free lease; returns its revision.
    fn lease_create(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<u64, BusError>> + Send;

    /// Renews a held lease (its time to live starts again); returns the new revision.
    fn lease_update(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> impl Future<Output = Result<u64, BusError>> + Send;

    /// Gives a held lease up before it expires.
    fn lease_release(
        &self,
        bucket: LeaseBucket,
        key: &str,
        revision: u64,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Sends a request and waits for the first answer.
    fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, BusError>> + Send;

    /// Serves a subject until the returned stream is dropped.
    fn serve(&self, subject: &str)
        -> impl Future<Output = Result<Self::Requests, BusError>> + Send;

    /// Appends outbox row `id` to the membership feed if the feed's last
    /// sequence is `expected_last`; returns the sequence of the entry that
    /// carries `id`. A row id already in the feed is never written again:
    /// the call then fails the fence or returns the earlier entry's
    /// sequence without writing (JetStream checks the id first, within its
    /// duplicate window).
    fn feed_append(
        &self,
        expected_last: Seq,
        id: u64,
        payload: Bytes,
    ) -> impl Future<Output = Result<Seq, BusError>> + Send;

    /// The feed's last sequence and the row id it carries (`None`: empty).
    fn feed_last(&self) -> impl Future<Output = Result<Option<(Seq, u64)>, BusError>> + Send;

    /// Feed entries from `from` on (key = the row id), then live ones.
    fn feed_read_from(
        &self,
        from: Seq,
    ) -> impl Future<Output = Result<Self::Entries, BusError>> + Send;
}

/// The partition number [`LogEntry`]s of the membership feed carry.
pub const FEED_PARTITION: u16 = u16::MAX;
