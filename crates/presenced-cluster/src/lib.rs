//! Cluster mode: several presenced nodes sharing presence over a bus.
//!
//! Users hash into 16 partitions; each partition has one owner node at a
//! time (a lease on the bus), which is the only writer of the partition's
//! log; every node keeps a full replica of all logs and serves reads from
//! it. docs/cluster.md says what was built, why NATS JetStream, and the
//! choices made on the way.
//!
//! # Layout
//! - [`bus`]: the [`Bus`] contract; [`MemBus`] (in memory, fault hooks,
//!   for the simulator) and [`JetStreamBus`] (NATS JetStream) implement it.
//! - [`partition`]: user → partition, and the preferred owners.
//! - [`record`]: what logs and owner commands carry, and the one codec of
//!   a presence state in them.
//! - [`driver`]: the seam to the presence logic a node carries.
//! - `owner`: taking, fencing and serving a partition.
//! - [`replica`]: the full replica and the readers that feed it.
//! - [`relay`]: outbox rows into the membership feed, one relay at a time.
//! - [`token`]: vector sync tokens.
//! - [`sync_relay`]: which long-poll starts and ends reach the owner.
//! - [`node`]: one node (heartbeat, replica, owners, front door).

pub mod bus;
pub mod driver;
pub mod jetstream;
pub mod mem_bus;
pub mod node;
mod owner;
pub mod partition;
pub mod record;
pub mod relay;
pub mod replica;
pub mod sync_relay;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
mod watched;

pub use bus::{Bus, BusError, Lease, LeaseBucket, LogEntry, Request, Seq, FEED_PARTITION};
pub use driver::{PresenceDriver, Verbatim};
pub use jetstream::{JetStreamBus, JetStreamConfig};
pub use mem_bus::{MemBus, MemBusConfig};
pub use node::{Node, NodeHandle, Timing, WriteError};
pub use owner::command_subject;
pub use partition::{partition_of, PARTITIONS};
pub use replica::{Replica, ReplicatedState};
pub use token::VectorToken;
