//! The in-memory bus: the [`Bus`] contract in one process, with fault hooks.
//!
//! Made for the deterministic simulator: it reads time only through
//! `tokio::time` (paused in the simulator), draws every delay from one
//! seeded generator, and keeps ordered maps only, so one seed replays the
//! same run. Every handle belongs to an *endpoint* (a node's connection);
//! faults act on endpoints:
//! - `cut`: calls fail with `Unavailable` and its subscriptions stop being
//!   served, as when a node loses its NATS connection;
//! - `freeze`: calls wait until `thaw`, as when a process is stopped;
//! - delays: each call waits a random time before it reaches the bus and
//!   again before its answer comes back, so an answer can be lost after the
//!   write happened (the ambiguous outcome real networks give).
//!
//! It also keeps every entry ever written ([`MemBus::history`]) for the
//! checkers; readers see only the newest entry per key, as on JetStream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::bus::{
    Bus, BusError, Lease, LeaseBucket, LogEntry, Request, Responder, Seq, FEED_PARTITION,
};
use crate::partition::PARTITIONS;
use crate::watched::Watched;

/// Times to live of the lease buckets, and the delay range of every call.
#[derive(Clone, Debug)]
pub struct MemBusConfig {
    pub node_ttl: Duration,
    pub owner_ttl: Duration,
    /// Each call waits a random time in this range (whole milliseconds) on
    /// its way in and again on its way out.
    pub delay: (Duration, Duration),
    pub seed: u64,
}

impl Default for MemBusConfig {
    fn default() -> Self {
        Self {
            node_ttl: Duration::from_secs(6),
            owner_ttl: Duration::from_secs(10),
            delay: (Duration::ZERO, Duration::ZERO),
            seed: 1,
        }
    }
}

/// A handle on the in-memory bus, speaking for one endpoint.
#[derive(Clone)]
pub struct MemBus {
    shared: Arc<Shared>,
    endpoint: Arc<str>,
}

struct Shared {
    config: MemBusConfig,
    state: Mutex<State>,
}

struct State {
    logs: Vec<Log>,
    feed: Feed,
    leases: BTreeMap<(LeaseBucket, String), (Lease, Instant)>,
    next_revision: u64,
    servers: BTreeMap<String, Vec<Server>>,
    endpoints: BTreeMap<Arc<str>, Endpoint>,
    rng: SplitMix64,
    /// Extra delay on every call, for "lag" faults.
    lag: Duration,
    /// Requests sent, per subject (what a test counts).
    requests: BTreeMap<String, u64>,
}

struct Log {
    last: Seq,
    /// Newest entry per key, by sequence (what readers see).
    live: BTreeMap<Seq, (String, Bytes)>,
    seq_of_key: BTreeMap<String, Seq>,
    history: Vec<LogEntry>,
    written: Arc<Watched<Seq>>,
}

struct Feed {
    entries: Vec<LogEntry>,
    ids: BTreeMap<u64, Seq>,
    written: Arc<Watched<Seq>>,
}

struct Server {
    endpoint: Arc<str>,
    sender: mpsc::UnboundedSender<Request>,
}

struct Endpoint {
    cut: bool,
    frozen: Arc<Watched<bool>>,
}

impl Endpoint {
    fn new() -> Self {
        Self {
            cut: false,
            frozen: Arc::new(Watched::new(false)),
        }
    }
}

impl MemBus {
    pub fn new(config: MemBusConfig) -> Self {
        let logs = (0..PARTITIONS)
            .map(|_| Log {
                last: 0,
                live: BTreeMap::new(),
                seq_of_key: BTreeMap::new(),
                history: Vec::new(),
                written: Arc::new(Watched::new(0)),
            })
            .collect();
        let rng = SplitMix64(config.seed);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                logs,
                feed: Feed {
                    entries: Vec::new(),
                    ids: BTreeMap::new(),
                    written: Arc::new(Watched::new(0)),
                },
                leases: BTreeMap::new(),
                next_revision: 1,
                servers: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                rng,
                lag: Duration::ZERO,
                requests: BTreeMap::new(),
            }),
        });
        Self {
            shared,
            endpoint: Arc::from("default"),
        }
    }

    /// A handle on the same bus for another endpoint (a node's connection).
    pub fn endpoint(&self, name: &str) -> Self {
        let endpoint: Arc<str> = Arc::from(name);
        self.state()
            .endpoints
            .entry(endpoint.clone())
            .or_insert_with(Endpoint::new);
        Self {
            shared: self.shared.clone(),
            endpoint,
        }
    }

    /// Cuts an endpoint off (`true`) or reconnects it (`false`).
    pub fn set_cut(&self, endpoint: &str, cut: bool) {
        let mut state = self.state();
        let entry = state
            .endpoints
            .entry(Arc::from(endpoint))
            .or_insert_with(Endpoint::new);
        entry.cut = cut;
    }

    /// Freezes an endpoint's calls (`true`) or lets them go on (`false`).
    pub fn set_frozen(&self, endpoint: &str, frozen: bool) {
        let mut state = self.state();
        let entry = state
            .endpoints
            .entry(Arc::from(endpoint))
            .or_insert_with(Endpoint::new);
        entry.frozen.modify(|value| *value = frozen);
    }

    /// Extra delay on every call from now on.
    pub fn set_lag(&self, lag: Duration) {
        self.state().lag = lag;
    }

    /// How many requests were sent on subjects starting with `prefix`.
    pub fn requests_sent(&self, prefix: &str) -> u64 {
        (self.state().requests)
            .iter()
            .filter(|(subject, _)| subject.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every entry ever written to a partition log, superseded ones included.
    pub fn history(&self, partition: u16) -> Vec<LogEntry> {
        self.state().logs[usize::from(partition)].history.clone()
    }

    /// The newest entry of every key of a partition log, by key.
    pub fn live_entries(&self, partition: u16) -> BTreeMap<String, LogEntry> {
        let state = self.state();
        let log = &state.logs[usize::from(partition)];
        log.live
            .iter()
            .map(|(seq, (key, payload))| {
                let entry = LogEntry {
                    partition,
                    seq: *seq,
                    key: key.clone(),
                    payload: payload.clone(),
                };
                (key.clone(), entry)
            })
            .collect()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug the simulator reports
        // itself; the state is still consistent enough to read.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One leg of a call: a random delay, then wait while frozen, then
    /// fail if cut.
    async fn leg(&self) -> Result<(), BusError> {
        let (delay, frozen) = {
            let mut state = self.state();
            // Whole milliseconds: tokio's timer wheel rounds to them, and
            // finer delays would make the order of timers in one tick
            // depend on where the paused clock started (not replayable).
            let (low, high) = self.shared.config.delay;
            let (low, high) = (low.as_millis() as u64, high.as_millis() as u64);
            let span = high.saturating_sub(low);
            let jitter = if span == 0 {
                0
            } else {
                state.rng.next() % (span + 1)
            };
            let delay = Duration::from_millis(low + jitter) + state.lag;
            let endpoint = state
                .endpoints
                .entry(self.endpoint.clone())
                .or_insert_with(Endpoint::new);
            (delay, endpoint.frozen.clone())
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // A frozen process does nothing until it is thawed.
        frozen.wait_for(|frozen| !frozen).await;
        if self.is_cut() {
            return Err(BusError::Unavailable(format!(
                "{} is cut off the bus",
                self.endpoint
            )));
        }
        Ok(())
    }

    fn is_cut(&self) -> bool {
        self.state()
            .endpoints
            .get(&self.endpoint)
            .is_some_and(|endpoint| endpoint.cut)
    }

    fn ttl(&self, bucket: LeaseBucket) -> Duration {
        match bucket {
            LeaseBucket::Nodes => self.shared.config.node_ttl,
            LeaseBucket::Owners => self.shared.config.owner_ttl,
        }
    }

    /// A lease that is still live, or `None` (expired ones are removed).
    fn live_lease(state: &mut State, bucket: LeaseBucket, key: &str) -> Option<Lease> {
        let slot = (bucket, key.to_owned());
        match state.leases.get(&slot) {
            Some((lease, expires)) if *expires > Instant::now() => Some(lease.clone()),
            Some(_) => {
                state.leases.remove(&slot);
                None
            }
            None => None,
        }
    }
}

impl Bus for MemBus {
    type Entries = BoxStream<'static, Result<LogEntry, BusError>>;
    type Requests = BoxStream<'static, Request>;

    async fn append(
        &self,
        partition: u16,
        expected_last: Seq,
        entries: Vec<(String, Bytes)>,
    ) -> Result<Seq, BusError> {
        self.leg().await?;
        let last = {
            let mut state = self.state();
            let log = &mut state.logs[usize::from(partition)];
            if log.last != expected_last {
                return Err(BusError::WrongLastSequence {
                    actual: Some(log.last),
                });
            }
            for (key, payload) in entries {
                log.last += 1;
                let seq = log.last;
                if let Some(old) = log.seq_of_key.insert(key.clone(), seq) {
                    log.live.remove(&old);
                }
                log.live.insert(seq, (key.clone(), payload.clone()));
                log.history.push(LogEntry {
                    partition,
                    seq,
                    key,
                    payload,
                });
            }
            let last = log.last;
            log.written.modify(|written| *written = last);
            log.last
        };
        // The write happened; the answer may still be lost on the way back.
        self.leg().await?;
        Ok(last)
    }

    async fn last_seq(&self, partition: u16) -> Result<Seq, BusError> {
        self.leg().await?;
        let last = self.state().logs[usize::from(partition)].last;
        self.leg().await?;
        Ok(last)
    }

    async fn read_from(&self, partition: u16, from: Seq) -> Result<Self::Entries, BusError> {
        self.leg().await?;
        let written = self.state().logs[usize::from(partition)].written.clone();
        let reader = (self.clone(), from.max(1), written);
        let entries = stream::unfold(Some(reader), move |reader| async move {
            let (bus, next, written) = reader?;
            loop {
                if let Err(error) = bus.leg().await {
                    return Some((Err(error), None));
                }
                let found = {
                    let state = bus.state();
                    let log = &state.logs[usize::from(partition)];
                    log.live
                        .range(next..)
                        .next()
                        .map(|(seq, (key, payload))| LogEntry {
                            partition,
                            seq: *seq,
                            key: key.clone(),
                            payload: payload.clone(),
                        })
                };
                if let Some(entry) = found {
                    let after = entry.seq + 1;
                    return Some((Ok(entry), Some((bus, after, written))));
                }
                written.wait_for(|last| *last >= next).await;
            }
        });
        Ok(entries.boxed())
    }

    async fn lease_get(&self, bucket: LeaseBucket, key: &str) -> Result<Option<Lease>, BusError> {
        self.leg().await?;
        let lease = Self::live_lease(&mut self.state(), bucket, key);
        self.leg().await?;
        Ok(lease)
    }

    async fn lease_list(&self, bucket: LeaseBucket) -> Result<Vec<(String, Lease)>, BusError> {
        self.leg().await?;
        let leases = {
            let mut state = self.state();
            let keys: Vec<String> = state
                .leases
                .keys()
                .filter(|(b, _)| *b == bucket)
                .map(|(_, key)| key.clone())
                .collect();
            keys.into_iter()
                .filter_map(|key| Self::live_lease(&mut state, bucket, &key).map(|l| (key, l)))
                .collect()
        };
        self.leg().await?;
        Ok(leases)
    }

    async fn lease_create(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
    ) -> Result<u64, BusError> {
        self.leg().await?;
        let revision = {
            let mut state = self.state();
            if Self::live_lease(&mut state, bucket, key).is_some() {
                return Err(BusError::LeaseHeld);
            }
            let revision = state.next_revision;
            state.next_revision += 1;
            let expires = Instant::now() + self.ttl(bucket);
            let lease = Lease { value, revision };
            state
                .leases
                .insert((bucket, key.to_owned()), (lease, expires));
            revision
        };
        self.leg().await?;
        Ok(revision)
    }

    async fn lease_update(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, BusError> {
        self.leg().await?;
        let new_revision = {
            let mut state = self.state();
            match Self::live_lease(&mut state, bucket, key) {
                Some(lease) if lease.revision == revision => {}
                _ => return Err(BusError::LeaseLost),
            }
            let new_revision = state.next_revision;
            state.next_revision += 1;
            let expires = Instant::now() + self.ttl(bucket);
            let lease = Lease {
                value,
                revision: new_revision,
            };
            state
                .leases
                .insert((bucket, key.to_owned()), (lease, expires));
            new_revision
        };
        self.leg().await?;
        Ok(new_revision)
    }

    async fn lease_release(
        &self,
        bucket: LeaseBucket,
        key: &str,
        revision: u64,
    ) -> Result<(), BusError> {
        self.leg().await?;
        {
            let mut state = self.state();
            match Self::live_lease(&mut state, bucket, key) {
                Some(lease) if lease.revision == revision => {
                    state.leases.remove(&(bucket, key.to_owned()));
                }
                _ => return Err(BusError::LeaseLost),
            }
        }
        self.leg().await
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.leg().await?;
        let (answer, answered) = oneshot::channel();
        let delivered = {
            let mut state = self.state();
            *state.requests.entry(subject.to_owned()).or_default() += 1;
            let cut: Vec<Arc<str>> = state
                .endpoints
                .iter()
                .filter(|(_, endpoint)| endpoint.cut)
                .map(|(name, _)| name.clone())
                .collect();
            let servers = state.servers.entry(subject.to_owned()).or_default();
            servers.retain(|server| !server.sender.is_closed());
            // The newest live subscriber gets it (a cut endpoint's
            // subscriptions are gone, as on NATS).
            let request = Request {
                payload,
                responder: Responder::Mem(answer),
            };
            servers
                .iter()
                .rev()
                .find(|server| !cut.contains(&server.endpoint))
                .map(|server| server.sender.send(request).is_ok())
                .unwrap_or(false)
        };
        if !delivered {
            return Err(BusError::NoResponders(subject.to_owned()));
        }
        let answer = match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(answer)) => answer,
            // The server dropped the request unanswered (it died).
            Ok(Err(_)) => return Err(BusError::NoResponders(subject.to_owned())),
            Err(_) => return Err(BusError::TimedOut),
        };
        self.leg().await?;
        Ok(answer)
    }

    async fn feed_append(
        &self,
        expected_last: Seq,
        id: u64,
        payload: Bytes,
    ) -> Result<Seq, BusError> {
        self.leg().await?;
        let seq = {
            let mut state = self.state();
            let feed = &mut state.feed;
            let last = feed.entries.len() as Seq;
            if let Some(seq) = feed.ids.get(&id) {
                *seq
            } else {
                if last != expected_last {
                    return Err(BusError::WrongLastSequence { actual: Some(last) });
                }
                feed.ids.insert(id, last + 1);
                feed.entries.push(LogEntry {
                    partition: FEED_PARTITION,
                    seq: last + 1,
                    key: id.to_string(),
                    payload,
                });
                feed.written.modify(|written| *written = last + 1);
                last + 1
            }
        };
        self.leg().await?;
        Ok(seq)
    }

    async fn feed_last(&self) -> Result<Option<(Seq, u64)>, BusError> {
        self.leg().await?;
        let last = self
            .state()
            .feed
            .entries
            .last()
            .map(|entry| (entry.seq, entry.key.parse().unwrap_or(0)));
        self.leg().await?;
        Ok(last)
    }

    async fn feed_read_from(&self, from: Seq) -> Result<Self::Entries, BusError> {
        self.leg().await?;
        let written = self.state().feed.written.clone();
        let reader = (self.clone(), from.max(1), written);
        let entries = stream::unfold(Some(reader), move |reader| async move {
            let (bus, next, written) = reader?;
            if let Err(error) = bus.leg().await {
                return Some((Err(error), None));
            }
            written.wait_for(|last| *last >= next).await;
            let entry = bus.state().feed.entries[(next - 1) as usize].clone();
            Some((Ok(entry), Some((bus, next + 1, written))))
        });
        Ok(entries.boxed())
    }

    async fn serve(&self, subject: &str) -> Result<Self::Requests, BusError> {
        self.leg().await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        self.state()
            .servers
            .entry(subject.to_owned())
            .or_default()
            .push(Server {
                endpoint: self.endpoint.clone(),
                sender,
            });
        let requests = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        });
        Ok(requests.boxed())
    }
}

/// A small seeded generator (no dependency, same numbers on every platform).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
