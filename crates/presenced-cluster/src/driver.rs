//! The seam between a node and the presence logic it carries.
//!
//! The cluster crate moves records; what a command *means* and what a
//! replicated record *does* belong to the driver above it (the server's
//! presence service around the engine). The owner loop asks the driver to
//! apply each command and writes what it returns; readers hand every state
//! record to it; ownership changes are announced with the replica's view
//! of the partition, so the engine can re-arm timers (`handle_own`) or drop
//! them (`handle_disown`).

use crate::record::{Command, StateRecord};

pub trait PresenceDriver: Send + Sync + 'static {
    /// On the owner: applies a command for a user of `partition` and
    /// returns the user's state to write, or `None` when nothing changed.
    fn apply(&self, partition: u16, command: &Command) -> Option<serde_json::Value>;

    /// On every node: a state record was applied to the replica. The
    /// driver ignores it for partitions it owns (it wrote it).
    fn replicated(&self, partition: u16, record: &StateRecord);

    /// This node now owns `partition`; `users` is the replica's view of it,
    /// complete up to the new owner's epoch marker.
    fn owned(&self, partition: u16, users: Vec<StateRecord>);

    /// This node gave `partition` up (deposed, lease lost, or stopped);
    /// `users` is the replica's view, which replaces anything the driver
    /// computed but could not write.
    fn disowned(&self, partition: u16, users: Vec<StateRecord>);
}

/// Writes each command's state as it is: the bus-level tests and the
/// process harness use it.
pub struct Verbatim;

impl PresenceDriver for Verbatim {
    fn apply(&self, _partition: u16, command: &Command) -> Option<serde_json::Value> {
        Some(command.state.clone())
    }

    fn replicated(&self, _partition: u16, _record: &StateRecord) {}

    fn owned(&self, _partition: u16, _users: Vec<StateRecord>) {}

    fn disowned(&self, _partition: u16, _users: Vec<StateRecord>) {}
}
