//! The [`Bus`] on NATS JetStream (async-nats).
//!
//! - Partition `p` is stream `PRES_1_<p>` (generation 1) on subjects
//!   `pres.log.<p>.<key>`, keeping one message per subject, file storage.
//!   An append publishes its entries pipelined, each with
//!   `Nats-Expected-Last-Sequence` = the one before it, so the first entry
//!   carries the fence and a batch cannot interleave with another writer.
//! - Leases are KV buckets `PRES_NODES` and `PRES_OWNERS` whose `max_age`
//!   is the time to live; compare-and-set is KV's expected revision.
//! - Requests are core NATS request/reply.
//!
//! Durability of an acknowledged append needs the server side too: R3 and
//! `sync_interval: always` in the servers' config (`scripts/nats-cluster`
//! writes it). [`JetStreamBus::connect`] refuses streams with fewer than 3
//! replicas or in memory unless `allow_unreplicated` is set.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream, Context};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use futures::TryStreamExt;

use crate::bus::{
    Bus, BusError, Lease, LeaseBucket, LogEntry, Request, Responder, Seq, FEED_PARTITION,
};
use crate::partition::PARTITIONS;
use crate::token::GENERATION;

#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// `nats://host:port` of one or more servers of the cluster.
    pub servers: Vec<String>,
    /// A `.creds` file (JWT and seed), when the servers require one.
    pub credentials: Option<std::path::PathBuf>,
    /// Streams and buckets are created with this many replicas (3 in
    /// production; 1 only with `allow_unreplicated`).
    pub replicas: usize,
    /// Lets a single server, or memory storage, carry the cluster: for tests
    /// and laptops, never for data that must survive a server's loss.
    pub allow_unreplicated: bool,
    pub node_ttl: Duration,
    pub owner_ttl: Duration,
    /// Prefix of every stream, bucket and subject name (letters, digits,
    /// `_`): lets tests, or two clusters, share NATS servers. Empty in
    /// production.
    pub namespace: String,
}

#[derive(Clone)]
pub struct JetStreamBus {
    namespace: String,
    client: async_nats::Client,
    js: Context,
    streams: Vec<stream::Stream>,
    feed: stream::Stream,
    nodes: kv::Store,
    owners: kv::Store,
}

fn stream_name(namespace: &str, partition: u16) -> String {
    format!("{namespace}PRES_{GENERATION}_{partition}")
}

fn subject_prefix(namespace: &str, partition: u16) -> String {
    format!("{namespace}pres.log.{partition}.")
}

fn feed_subject(namespace: &str) -> String {
    format!("{namespace}pres.feed.membership")
}

/// How long the membership feed keeps entries: a node down longer than
/// this bootstraps from PostgreSQL again instead of replaying.
const FEED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// JetStream's id deduplication window on the feed. The fence catches
/// zombies beyond it; the window covers a relay retrying its own append.
const FEED_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// The header carrying the outbox row id of a feed entry.
const OUTBOX_ID: &str = "Presenced-Outbox-Id";

fn outbox_id(headers: Option<&async_nats::HeaderMap>) -> Option<u64> {
    headers?.get(OUTBOX_ID)?.as_str().parse().ok()
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl JetStreamBus {
    /// Connects, creates the streams and buckets that are missing, and
    /// checks that existing ones are replicated and on disk.
    pub async fn connect(config: &JetStreamConfig) -> Result<Self, BusError> {
        let ns = &config.namespace;
        if !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(BusError::Refused(format!(
                "namespace {ns:?}: only letters, digits and _"
            )));
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("presenced")
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Unavailable(format!("{}: {e}", path.display())))?;
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| BusError::Unavailable(format!("{s}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(servers))
            .await
            .map_err(|_| BusError::Unavailable("no NATS server answered in 10 s".to_owned()))?
            .map_err(unavailable)?;
        check_version(&client.server_info().version)?;
        let js = jetstream::new(client.clone());
        let mut streams = Vec::with_capacity(usize::from(PARTITIONS));
        for partition in 0..PARTITIONS {
            let wanted = stream::Config {
                name: stream_name(ns, partition),
                subjects: vec![format!("{}>", subject_prefix(ns, partition))],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                allow_direct: true,
                ..Default::default()
            };
            let mut stream = js.get_or_create_stream(wanted).await.map_err(unavailable)?;
            let info = stream.info().await.map_err(unavailable)?;
            check_durable(
                &info.config.name,
                info.config.num_replicas,
                info.config.storage,
                config,
            )?;
            streams.push(stream);
        }
        let feed_config = stream::Config {
            name: format!("{ns}PRES_MEMBERSHIP"),
            subjects: vec![feed_subject(ns)],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: FEED_RETENTION,
            duplicate_window: FEED_DEDUP_WINDOW,
            allow_direct: true,
            ..Default::default()
        };
        let mut feed = js
            .get_or_create_stream(feed_config)
            .await
            .map_err(unavailable)?;
        let info = feed.info().await.map_err(unavailable)?;
        check_durable(
            &info.config.name,
            info.config.num_replicas,
            info.config.storage,
            config,
        )?;
        let nodes = bucket(&js, &format!("{ns}PRES_NODES"), config.node_ttl, config).await?;
        let owners = bucket(&js, &format!("{ns}PRES_OWNERS"), config.owner_ttl, config).await?;
        Ok(Self {
            namespace: ns.clone(),
            client,
            js,
            streams,
            feed,
            nodes,
            owners,
        })
    }

    /// Deletes this namespace's streams and buckets (tests clean up with it).
    pub async fn delete_all(&self) -> Result<(), BusError> {
        let ns = &self.namespace;
        let mut names: Vec<String> = (0..PARTITIONS).map(|p| stream_name(ns, p)).collect();
        names.push(format!("{ns}PRES_MEMBERSHIP"));
        names.push(format!("KV_{ns}PRES_NODES"));
        names.push(format!("KV_{ns}PRES_OWNERS"));
        for name in names {
            self.js.delete_stream(&name).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The server name of a partition stream's Raft leader (fault tests
    /// kill it).
    pub async fn leader_of(&self, partition: u16) -> Result<Option<String>, BusError> {
        let info = self.streams[usize::from(partition)]
            .get_info()
            .await
            .map_err(unavailable)?;
        Ok(info.cluster.and_then(|cluster| cluster.leader))
    }

    /// True while the client is connected to a server.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn store(&self, bucket: LeaseBucket) -> &kv::Store {
        match bucket {
            LeaseBucket::Nodes => &self.nodes,
            LeaseBucket::Owners => &self.owners,
        }
    }
}

/// The oldest server cluster mode is tested on; older ones (Debian's 2.9)
/// answer requests this client makes in ways it cannot read.
const MIN_SERVER: (u64, u64) = (2, 12);

fn check_version(version: &str) -> Result<(), BusError> {
    let mut parts = version.trim_start_matches('v').split('.');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let found = (next(), next());
    if found < MIN_SERVER {
        return Err(BusError::Refused(format!(
            "nats-server {version} is too old for cluster mode (needs {}.{} or newer)",
            MIN_SERVER.0, MIN_SERVER.1
        )));
    }
    Ok(())
}

/// An ordered consumer of `stream` from sequence `from` on (at least 1).
async fn ordered_from(
    stream: &stream::Stream,
    from: Seq,
) -> Result<consumer::pull::Ordered, BusError> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    consumer.messages().await.map_err(unavailable)
}

fn check_durable(
    name: &str,
    replicas: usize,
    storage: stream::StorageType,
    config: &JetStreamConfig,
) -> Result<(), BusError> {
    if config.allow_unreplicated {
        return Ok(());
    }
    if replicas < 3 || storage != stream::StorageType::File {
        return Err(BusError::Refused(format!(
            "JetStream stream {name} has {replicas} replica(s) on {storage:?} storage; cluster mode \
             needs 3 replicas on file storage (set cluster.allow_unreplicated: true only for a test \
             or a laptop)"
        )));
    }
    Ok(())
}

async fn bucket(
    js: &Context,
    name: &str,
    ttl: Duration,
    config: &JetStreamConfig,
) -> Result<kv::Store, BusError> {
    let store = match js.get_key_value(name).await {
        Ok(store) => store,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.to_owned(),
                history: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Unavailable(format!("creating KV bucket {name}: {e}")))?,
    };
    let info = js
        .get_stream(format!("KV_{name}"))
        .await
        .map_err(unavailable)?
        .get_info()
        .await
        .map_err(unavailable)?;
    check_durable(name, info.config.num_replicas, info.config.storage, config)?;
    if info.config.max_age != ttl {
        return Err(BusError::Refused(format!(
            "KV bucket {name} keeps entries {:?}, this node expects {ttl:?}: all nodes need the \
             same lease timing",
            info.config.max_age
        )));
    }
    Ok(store)
}

impl Bus for JetStreamBus {
    type Entries = BoxStream<'static, Result<LogEntry, BusError>>;
    type Requests = BoxStream<'static, Request>;

    async fn append(
        &self,
        partition: u16,
        expected_last: Seq,
        entries: Vec<(String, Bytes)>,
    ) -> Result<Seq, BusError> {
        let prefix = subject_prefix(&self.namespace, partition);
        let mut acks = Vec::with_capacity(entries.len());
        for (offset, (key, payload)) in entries.into_iter().enumerate() {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload)
                .expected_last_sequence(expected_last + offset as u64);
            match self
                .js
                .send_publish(format!("{prefix}{key}"), publish)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(error) if offset == 0 => return Err(unavailable(error)),
                // Earlier entries may be written: the outcome is unknown.
                Err(error) => return Err(unavailable(format!("after {offset} entries: {error}"))),
            }
        }
        let mut last = expected_last;
        for (offset, ack) in acks.into_iter().enumerate() {
            match ack.await {
                Ok(ack) => last = ack.sequence,
                Err(error)
                    if offset == 0
                        && error.kind()
                            == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    return Err(BusError::WrongLastSequence { actual: None });
                }
                Err(error) => return Err(unavailable(format!("entry {offset}: {error}"))),
            }
        }
        Ok(last)
    }

    async fn last_seq(&self, partition: u16) -> Result<Seq, BusError> {
        let info = self.streams[usize::from(partition)]
            .get_info()
            .await
            .map_err(unavailable)?;
        Ok(info.state.last_sequence)
    }

    async fn read_from(&self, partition: u16, from: Seq) -> Result<Self::Entries, BusError> {
        let messages = ordered_from(&self.streams[usize::from(partition)], from).await?;
        let prefix = subject_prefix(&self.namespace, partition);
        let entries = messages.map(move |message| {
            let message = message.map_err(unavailable)?;
            let seq = message.info().map_err(unavailable)?.stream_sequence;
            let key = message
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .unwrap_or_default()
                .to_owned();
            Ok(LogEntry {
                partition,
                seq,
                key,
                payload: message.payload.clone(),
            })
        });
        Ok(entries.boxed())
    }

    async fn lease_get(&self, bucket: LeaseBucket, key: &str) -> Result<Option<Lease>, BusError> {
        let entry = self.store(bucket).entry(key).await.map_err(unavailable)?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| Lease {
                value: entry.value,
                revision: entry.revision,
            }))
    }

    async fn lease_list(&self, bucket: LeaseBucket) -> Result<Vec<(String, Lease)>, BusError> {
        let keys: Vec<String> = self
            .store(bucket)
            .keys()
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut leases = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(lease) = self.lease_get(bucket, &key).await? {
                leases.push((key, lease));
            }
        }
        Ok(leases)
    }

    async fn lease_create(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
    ) -> Result<u64, BusError> {
        self.store(bucket)
            .create(key, value)
            .await
            .map_err(|error| match error.kind() {
                kv::CreateErrorKind::AlreadyExists => BusError::LeaseHeld,
                _ => unavailable(error),
            })
    }

    async fn lease_update(
        &self,
        bucket: LeaseBucket,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, BusError> {
        self.store(bucket)
            .update(key, value, revision)
            .await
            .map_err(|error| match error.kind() {
                kv::UpdateErrorKind::WrongLastRevision => BusError::LeaseLost,
                _ => unavailable(error),
            })
    }

    async fn lease_release(
        &self,
        bucket: LeaseBucket,
        key: &str,
        revision: u64,
    ) -> Result<(), BusError> {
        self.store(bucket)
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|error| {
                // The client reports a failed expected-revision check on
                // delete as "other"; the server's code 10071 says what it was.
                if error.kind() == kv::UpdateErrorKind::WrongLastRevision
                    || error.to_string().contains("10071")
                {
                    BusError::LeaseLost
                } else {
                    unavailable(error)
                }
            })
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let subject = format!("{}{subject}", self.namespace);
        match self.client.send_request(subject.clone(), request).await {
            Ok(message) => Ok(message.payload),
            Err(error) => Err(match error.kind() {
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders(subject),
                async_nats::RequestErrorKind::TimedOut => BusError::TimedOut,
                _ => unavailable(error),
            }),
        }
    }

    async fn feed_append(
        &self,
        expected_last: Seq,
        id: u64,
        payload: Bytes,
    ) -> Result<Seq, BusError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id.to_string())
            .expected_last_sequence(expected_last)
            .header(OUTBOX_ID, id.to_string().as_str());
        let ack = self
            .js
            .send_publish(feed_subject(&self.namespace), publish)
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(error)
                if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                Err(BusError::WrongLastSequence { actual: None })
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn feed_last(&self) -> Result<Option<(Seq, u64)>, BusError> {
        let last = self
            .feed
            .get_info()
            .await
            .map_err(unavailable)?
            .state
            .last_sequence;
        if last == 0 {
            return Ok(None);
        }
        let message = self.feed.direct_get(last).await.map_err(unavailable)?;
        let id = outbox_id(Some(&message.headers))
            .ok_or_else(|| unavailable("a membership feed entry without its outbox id"))?;
        Ok(Some((last, id)))
    }

    async fn feed_read_from(&self, from: Seq) -> Result<Self::Entries, BusError> {
        let messages = ordered_from(&self.feed, from).await?;
        let entries = messages.map(|message| {
            let message = message.map_err(unavailable)?;
            let seq = message.info().map_err(unavailable)?.stream_sequence;
            let id = outbox_id(message.headers.as_ref())
                .ok_or_else(|| unavailable("a membership feed entry without its outbox id"))?;
            Ok(LogEntry {
                partition: FEED_PARTITION,
                seq,
                key: id.to_string(),
                payload: message.payload.clone(),
            })
        });
        Ok(entries.boxed())
    }

    async fn serve(&self, subject: &str) -> Result<Self::Requests, BusError> {
        let subscriber = self
            .client
            .subscribe(format!("{}{subject}", self.namespace))
            .await
            .map_err(unavailable)?;
        let client = self.client.clone();
        let requests = subscriber.filter_map(move |message| {
            let client = client.clone();
            async move {
                let reply = message.reply?;
                Some(Request {
                    payload: message.payload,
                    responder: Responder::Nats { client, reply },
                })
            }
        });
        Ok(requests.boxed())
    }
}
