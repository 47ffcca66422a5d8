//! One cluster node: heartbeat, a replica of all 16 partitions, the owner
//! loop of each partition, and the front door that routes a write to its
//! partition's owner.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bus::{Bus, BusError, LeaseBucket, Request, Responder, Seq};
use crate::driver::{PresenceDriver, Verbatim};
use crate::owner::{self, command_subject};
use crate::partition::{partition_of, PARTITIONS};
use crate::record::{to_bytes, Command, CommandReply};
use crate::replica::{self, Replica};
use crate::watched::Watched;

/// The cluster's clocks. Safety never depends on them (fencing is in the
/// log); they decide how fast a dead owner is replaced.
#[derive(Clone, Debug)]
pub struct Timing {
    pub heartbeat_every: Duration,
    /// Must match the owner bucket's time to live on the bus.
    pub owner_ttl: Duration,
    pub renew_every: Duration,
    /// How often a node looks for a free partition.
    pub owner_poll: Duration,
    /// Delay per place in a partition's preference order before taking it.
    pub takeover_step: Duration,
    /// How often an owner looks whether another live node is preferred for
    /// its partition; seen twice in a row, it hands the partition over (a
    /// node that joins later gets its share, a restarted one its own back).
    pub rebalance_every: Duration,
    /// How long a new owner waits for its replica to reach the log's end.
    pub catch_up: Duration,
    pub max_batch: usize,
    /// How long the front door waits for an owner's answer.
    pub request_timeout: Duration,
    /// How long the front door keeps trying owners before it gives up (503).
    pub write_deadline: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_every: Duration::from_secs(2),
            owner_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            owner_poll: Duration::from_secs(1),
            takeover_step: Duration::from_millis(500),
            rebalance_every: Duration::from_secs(5),
            catch_up: Duration::from_secs(3),
            max_batch: 256,
            request_timeout: Duration::from_secs(2),
            write_deadline: Duration::from_secs(5),
        }
    }
}

pub(crate) struct NodeInner<B> {
    pub(crate) name: String,
    pub(crate) bus: B,
    pub(crate) replica: Arc<Replica>,
    pub(crate) timing: Timing,
    pub(crate) driver: Arc<dyn PresenceDriver>,
    /// Per partition: states the driver computed on its own (timeouts,
    /// sync ends) waiting for the owner loop to write them.
    pub(crate) locals: Vec<mpsc::UnboundedSender<LocalChange>>,
    /// Per partition: commands from this node's own front door while it
    /// owns the partition, handed to the owner loop in process instead of
    /// through the bus (the same batch, append and answer; see
    /// `NodeHandle::write_command`).
    pub(crate) direct: Vec<mpsc::UnboundedSender<Request>>,
    owned: Mutex<BTreeMap<u16, u64>>,
    commands: AtomicU64,
    /// Turns false when the node is stopped: its in-flight writes then end
    /// without an answer, as a dead process's would.
    running: Watched<bool>,
    /// When the bus last answered the heartbeat (refusals count: the bus
    /// was there), for health checks.
    last_contact: Mutex<tokio::time::Instant>,
    /// How many times this node's entry in the nodes bucket was created:
    /// more than once means the others may have counted it dead meanwhile
    /// (and dropped what it had told them).
    incarnations: AtomicU64,
}

impl<B> NodeInner<B> {
    pub(crate) fn set_owned(&self, partition: u16, epoch: Option<u64>) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        match epoch {
            Some(epoch) => owned.insert(partition, epoch),
            None => owned.remove(&partition),
        };
    }
}

/// The subject node `name` listens on for `topic` (node names are letters,
/// digits, `-` and `_`: valid subject tokens).
fn node_subject(name: &str, topic: &str) -> String {
    format!("pres.node.{name}.{topic}")
}

/// A state the driver computed on its own, for its partition's log.
#[derive(Debug)]
pub(crate) struct LocalChange {
    pub(crate) user: String,
    pub(crate) state: serde_json::Value,
}

/// Why a write was not acknowledged. Nothing is promised about it: it may
/// or may not have been written, and the client should retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no owner of partition {0} answered in time")]
    NoOwner(u16),
    #[error("the write was written but this node's replica did not catch up in time")]
    ReplicaBehind,
    #[error("this node stopped")]
    Stopped,
}

/// A running node; dropping it (or [`Node::stop`]) ends all its tasks at
/// once, like `kill -9`: leases it held run out on their own.
pub struct Node<B: Bus> {
    inner: Arc<NodeInner<B>>,
    tasks: JoinSet<()>,
}

/// A cheap handle to a node's front door and replica.
#[derive(Clone)]
pub struct NodeHandle<B: Bus> {
    inner: Arc<NodeInner<B>>,
}

impl<B: Bus> Node<B> {
    /// Starts the node's tasks on the current runtime, writing each
    /// command's state as it is ([`Verbatim`]).
    pub fn start(name: &str, bus: B, timing: Timing) -> Self {
        Self::start_with(name, bus, timing, Arc::new(Verbatim))
    }

    /// Starts the node's tasks with the presence logic of `driver`.
    pub fn start_with(name: &str, bus: B, timing: Timing, driver: Arc<dyn PresenceDriver>) -> Self {
        let (locals, receivers): (Vec<_>, Vec<_>) =
            (0..PARTITIONS).map(|_| mpsc::unbounded_channel()).unzip();
        let (direct, direct_receivers): (Vec<_>, Vec<_>) =
            (0..PARTITIONS).map(|_| mpsc::unbounded_channel()).unzip();
        let inner = Arc::new(NodeInner {
            name: name.to_owned(),
            bus,
            replica: Arc::new(Replica::new()),
            timing,
            driver,
            locals,
            direct,
            owned: Mutex::new(BTreeMap::new()),
            commands: AtomicU64::new(0),
            running: Watched::new(true),
            last_contact: Mutex::new(tokio::time::Instant::now()),
            incarnations: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(heartbeat(inner.clone()));
        for ((partition, local), direct) in (0..PARTITIONS).zip(receivers).zip(direct_receivers) {
            tasks.spawn(replica::follow(
                inner.bus.clone(),
                inner.replica.clone(),
                inner.driver.clone(),
                partition,
            ));
            tasks.spawn(owner::run(inner.clone(), partition, local, direct));
        }
        Self { inner, tasks }
    }

    pub fn handle(&self) -> NodeHandle<B> {
        NodeHandle {
            inner: self.inner.clone(),
        }
    }

    /// Ends every task now, without releasing anything.
    pub fn stop(mut self) {
        self.inner.running.modify(|running| *running = false);
        self.tasks.abort_all();
    }
}

impl<B: Bus> Drop for Node<B> {
    fn drop(&mut self) {
        self.inner.running.modify(|running| *running = false);
        self.tasks.abort_all();
    }
}

impl<B: Bus> NodeHandle<B> {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.inner.replica
    }

    /// How long the bus has not answered this node's heartbeat: past the
    /// owner lease, the node has lost its partitions and should leave the
    /// load balancer.
    pub fn bus_silent_for(&self) -> Duration {
        self.inner
            .last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    pub fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    /// Queues a state the driver computed by itself (a timeout, a sync
    /// end) for the owner loop of the user's partition. Dropped if this
    /// node does not own it by the time the loop looks: the new owner's
    /// timers compute it again.
    pub fn publish_owned(&self, user: &str, state: serde_json::Value) {
        let partition = partition_of(user);
        let _ = self.inner.locals[usize::from(partition)].send(LocalChange {
            user: user.to_owned(),
            state,
        });
    }

    /// How many times this node has (re)entered the nodes bucket: when it
    /// grows past 1, the node was counted dead for a while.
    pub fn incarnations(&self) -> u64 {
        self.inner.incarnations.load(Ordering::Relaxed)
    }

    /// The nodes alive now (their heartbeat entries), or `None` when the
    /// bus does not answer.
    pub async fn live_nodes(&self) -> Option<Vec<String>> {
        let live = self.inner.bus.lease_list(LeaseBucket::Nodes).await.ok()?;
        Some(live.into_iter().map(|(name, _)| name).collect())
    }

    /// Whether this node owns `partition` now.
    pub fn owns(&self, partition: u16) -> bool {
        (self.inner.owned.lock().unwrap_or_else(|p| p.into_inner())).contains_key(&partition)
    }

    /// Partitions this node owns now, with their epochs.
    pub fn owned(&self) -> BTreeMap<u16, u64> {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes a user's state through its partition's owner and returns
    /// where it landed once this node's replica has applied it
    /// (read-your-writes on this node). `command_id` names the write; a
    /// retry may write it twice, which latest-wins state makes harmless.
    pub async fn write(
        &self,
        user: &str,
        state: serde_json::Value,
    ) -> Result<(u16, Seq, String), WriteError> {
        let id = format!(
            "{}-{}",
            self.inner.name,
            self.inner.commands.fetch_add(1, Ordering::Relaxed)
        );
        let command = Command {
            id: id.clone(),
            user: user.to_owned(),
            state,
        };
        tokio::select! {
            biased;
            _ = self.inner.running.wait_for(|running| !running) => Err(WriteError::Stopped),
            result = self.write_command(command) => result.map(|(p, seq)| (p, seq, id)),
        }
    }

    /// Requests other nodes send this node on `topic` with
    /// [`NodeHandle::tell_others`], until the stream is dropped.
    pub async fn listen(&self, topic: &str) -> Result<B::Requests, BusError> {
        self.inner
            .bus
            .serve(&node_subject(&self.inner.name, topic))
            .await
    }

    /// Sends `payload` on `topic` to every other live node (the nodes
    /// bucket) at once and waits until each has answered or `timeout`
    /// passed. Returns the nodes that did not answer; an error when the
    /// live nodes could not be read.
    pub async fn tell_others(
        &self,
        topic: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Vec<String>, BusError> {
        let live = self.inner.bus.lease_list(LeaseBucket::Nodes).await?;
        let asks = live
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| *name != self.inner.name)
            .map(|name| {
                let (bus, subject) = (self.inner.bus.clone(), node_subject(&name, topic));
                let payload = payload.clone();
                async move {
                    let answer = bus.request(&subject, payload, timeout).await;
                    (name, answer)
                }
            });
        let answers = futures::future::join_all(asks).await;
        Ok(answers
            .into_iter()
            .filter_map(|(name, answer)| answer.is_err().then_some(name))
            .collect())
    }

    /// A command to this node's own owner loop of `partition`, answered as
    /// a bus request would be.
    async fn request_direct(&self, partition: u16, payload: Bytes) -> Result<Bytes, BusError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let request = Request {
            payload,
            responder: Responder::Mem(answer),
        };
        if self.inner.direct[usize::from(partition)]
            .send(request)
            .is_err()
        {
            return Err(BusError::NoResponders(command_subject(partition)));
        }
        match tokio::time::timeout(self.inner.timing.request_timeout, answered).await {
            Ok(Ok(bytes)) => Ok(bytes),
            // Dropped unanswered (an unreadable command, a stopped loop).
            Ok(Err(_)) => Err(BusError::NoResponders(command_subject(partition))),
            Err(_) => Err(BusError::TimedOut),
        }
    }

    async fn write_command(&self, command: Command) -> Result<(u16, Seq), WriteError> {
        let timing = &self.inner.timing;
        let partition = partition_of(&command.user);
        let payload: Bytes = to_bytes(&command);
        let subject = command_subject(partition);
        let deadline = tokio::time::Instant::now() + timing.write_deadline;
        loop {
            // The owner's fast path: this node owns the partition, so its
            // owner loop takes the command in process, with no bus round
            // trip. If ownership ends meanwhile the loop answers "not
            // owner" and the next try goes through the bus.
            let answer = if self.owns(partition) {
                self.request_direct(partition, payload.clone()).await
            } else {
                self.inner
                    .bus
                    .request(&subject, payload.clone(), timing.request_timeout)
                    .await
            };
            match answer.map(|bytes| serde_json::from_slice::<CommandReply>(&bytes)) {
                Ok(Ok(CommandReply::Written { partition, seq })) => {
                    let caught_up = self
                        .inner
                        .replica
                        .wait_applied(partition, seq, timing.request_timeout)
                        .await;
                    return if caught_up {
                        Ok((partition, seq))
                    } else {
                        Err(WriteError::ReplicaBehind)
                    };
                }
                Ok(Ok(CommandReply::NotOwner))
                | Ok(Err(_))
                | Err(BusError::NoResponders(_) | BusError::TimedOut | BusError::Unavailable(_)) => {
                }
                Err(error) => tracing::debug!(%error, "cluster write"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NoOwner(partition));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Keeps the node's entry in the nodes bucket alive (its presence there is
/// what the others count as "live" when they rank owners).
async fn heartbeat<B: Bus>(node: Arc<NodeInner<B>>) {
    let mut revision: Option<u64> = None;
    let answered = |result: &Result<u64, BusError>| {
        if matches!(
            result,
            Ok(_) | Err(BusError::LeaseHeld | BusError::LeaseLost)
        ) {
            *node.last_contact.lock().unwrap_or_else(|p| p.into_inner()) =
                tokio::time::Instant::now();
        }
    };
    loop {
        let value = Bytes::from(node.name.clone());
        revision = match revision {
            Some(rev) => {
                let result = node
                    .bus
                    .lease_update(LeaseBucket::Nodes, &node.name, value, rev)
                    .await;
                answered(&result);
                result.ok()
            }
            None => None,
        };
        if revision.is_none() {
            // First beat, or the entry was lost (expired while cut off):
            // create it again; if an older incarnation's entry is still
            // live, wait for it to run out.
            let result = node
                .bus
                .lease_create(
                    LeaseBucket::Nodes,
                    &node.name,
                    Bytes::from(node.name.clone()),
                )
                .await;
            answered(&result);
            revision = result.ok();
            if revision.is_some() {
                node.incarnations.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(node.timing.heartbeat_every).await;
    }
}
