//! What partition logs and owner commands carry.
//!
//! A partition log holds two kinds of entries, told apart by their key:
//! `s.<user>` is a user's newest state (one per user, since the log keeps
//! the newest entry per key), `e` is the owner's epoch marker. Payloads are
//! JSON: small, and readable with the `nats` CLI when operating a cluster.
//! A state record's `state` is [`encode_state`]'s form of the engine's
//! presence state.

mod presence;

pub use presence::{decode_state, encode_state};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Key of the epoch marker in every partition log.
pub const EPOCH_KEY: &str = "e";

/// A user's state as its owner wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub user: String,
    /// The owner's epoch when it wrote this record (fencing check for readers).
    pub epoch: u64,
    /// The command that wrote it (lets a checker match acknowledgements).
    pub command: String,
    /// The presence itself: [`encode_state`]'s JSON when an engine wrote it
    /// (the `Verbatim` driver writes a command's state as it came).
    pub state: serde_json::Value,
}

/// Written by a new owner before anything else: from here on, only its
/// records belong to the partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMarker {
    pub node: String,
    pub epoch: u64,
}

/// One decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    State(StateRecord),
    Epoch(EpochMarker),
}

/// The log key of a user's state. User IDs contain `.` (a subject
/// separator on NATS), so the ID is base64url-encoded.
pub fn state_key(user: &str) -> String {
    format!(
        "s.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user)
    )
}

impl Record {
    /// Decodes an entry; `None` for a key or payload this version does not know
    /// (a newer node's record: skipped, never fatal).
    pub fn decode(key: &str, payload: &[u8]) -> Option<Self> {
        if key == EPOCH_KEY {
            serde_json::from_slice(payload).ok().map(Record::Epoch)
        } else if key.starts_with("s.") {
            serde_json::from_slice(payload).ok().map(Record::State)
        } else {
            None
        }
    }

    /// The entry's key and payload.
    pub fn encode(&self) -> (String, Bytes) {
        match self {
            Self::State(state) => (state_key(&state.user), to_bytes(state)),
            Self::Epoch(marker) => (EPOCH_KEY.to_owned(), to_bytes(marker)),
        }
    }
}

/// What a front node asks a partition owner to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub user: String,
    pub state: serde_json::Value,
}

/// The owner's answer: where the command's record landed, or why it did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    Written {
        partition: u16,
        seq: u64,
    },
    /// This node does not own the partition (any more): ask again.
    NotOwner,
}

pub(crate) fn to_bytes(value: &impl Serialize) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
