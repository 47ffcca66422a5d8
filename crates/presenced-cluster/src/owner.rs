//! Owning a partition: the lease, the epoch marker, and the one writer.
//!
//! Safety lives in the log, not in the lease: every append names the
//! sequence it must follow. A new owner first appends an epoch marker
//! after everything its replica has applied; from then on any append of
//! the old owner fails the check, so a paused or cut-off old owner learns
//! it was deposed and answers its pending commands "not owner". The lease
//! only decides who *tries* to own (liveness), so no clock is trusted for
//! safety.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bus::{Bus, BusError, LeaseBucket, Request, Seq};
use crate::node::{LocalChange, NodeInner};
use crate::partition::preference_order;
use crate::record::{to_bytes, Command, CommandReply, EpochMarker, Record, StateRecord};

/// The subject owners of `partition` serve commands on.
pub fn command_subject(partition: u16) -> String {
    format!("pres.own.{partition}.cmd")
}

pub(crate) fn owner_key(partition: u16) -> String {
    format!("p{partition}")
}

/// Runs for the node's life: takes the partition when it is free and this
/// node's turn comes, serves it until deposed, and tries again.
pub(crate) async fn run<B: Bus>(
    node: Arc<NodeInner<B>>,
    partition: u16,
    mut local: mpsc::UnboundedReceiver<LocalChange>,
    mut direct: mpsc::UnboundedReceiver<Request>,
) {
    loop {
        match try_acquire(&node, partition).await {
            Some(revision) => {
                let handed_over = serve(&node, partition, revision, &mut local, &mut direct).await;
                node.set_owned(partition, None);
                refuse_direct(&mut direct).await;
                if handed_over {
                    // Leave the free lease to the preferred node (it polls
                    // every `owner_poll`) instead of racing it for it.
                    tokio::time::sleep(node.timing.owner_poll * 3).await;
                }
            }
            None => {
                // Not the owner: whatever the driver computed for this
                // partition is stale; the owner's timers compute it.
                while local.try_recv().is_ok() {}
                refuse_direct(&mut direct).await;
                // A command that raced the end of ownership is refused at
                // once, not after the poll.
                let poll = tokio::time::sleep(node.timing.owner_poll);
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        _ = &mut poll => break,
                        Some(request) = direct.recv() => {
                            request.respond(to_bytes(&CommandReply::NotOwner)).await;
                        }
                    }
                }
            }
        }
    }
}

/// Takes the lease if it is free and this node's turn has come (its place
/// in the partition's preference order, one `takeover_step` per place, so
/// the preferred live node normally wins without a race). Returns the
/// lease revision, which is also the epoch.
async fn try_acquire<B: Bus>(node: &NodeInner<B>, partition: u16) -> Option<u64> {
    let key = owner_key(partition);
    if node
        .bus
        .lease_get(LeaseBucket::Owners, &key)
        .await
        .ok()?
        .is_some()
    {
        return None;
    }
    let live = node.bus.lease_list(LeaseBucket::Nodes).await.ok()?;
    let names: Vec<&str> = live.iter().map(|(name, _)| name.as_str()).collect();
    let place = preference_order(partition, names.iter().copied())
        .iter()
        .position(|name| *name == node.name)
        .unwrap_or(names.len());
    tokio::time::sleep(node.timing.takeover_step * place as u32).await;
    let value = Bytes::from(node.name.clone());
    node.bus
        .lease_create(LeaseBucket::Owners, &key, value)
        .await
        .ok()
}

/// Serves the partition under the lease taken at `revision` until the
/// lease is lost, an append fails, or another live node is preferred for
/// it (then true: handed over).
async fn serve<B: Bus>(
    node: &NodeInner<B>,
    partition: u16,
    revision: u64,
    local: &mut mpsc::UnboundedReceiver<LocalChange>,
    direct: &mut mpsc::UnboundedReceiver<Request>,
) -> bool {
    let epoch = revision;
    let key = owner_key(partition);
    let mut lease = Lease {
        revision,
        renewed: Instant::now(),
    };
    let Some(mut last) = write_marker(node, partition, epoch).await else {
        release(node, &key, lease.revision).await;
        return false;
    };
    let Ok(mut requests) = node.bus.serve(&command_subject(partition)).await else {
        release(node, &key, lease.revision).await;
        return false;
    };
    while local.try_recv().is_ok() {}
    node.driver
        .owned(partition, node.replica.users_of(partition));
    node.set_owned(partition, Some(epoch));
    tracing::info!(node = %node.name, partition, epoch, "partition owned");
    let mut renew = tokio::time::interval(node.timing.renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = node.timing.rebalance_every;
    let mut rebalance = tokio::time::interval_at(Instant::now() + every, every);
    rebalance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut preferred: Option<String> = None;
    let mut handed_over = false;
    loop {
        tokio::select! {
            biased;
            _ = renew.tick() => {
                if !lease.renew(node, &key).await {
                    break;
                }
            }
            _ = rebalance.tick() => {
                // Twice the same other node, so a node that only flickered
                // up (or a view of the nodes in flux) moves nothing.
                let now_preferred = preferred_elsewhere(node, partition).await;
                if now_preferred.is_some() && now_preferred == preferred {
                    tracing::info!(
                        node = %node.name,
                        partition,
                        to = now_preferred.as_deref().unwrap_or_default(),
                        "handing the partition to its preferred node"
                    );
                    handed_over = true;
                    break;
                }
                preferred = now_preferred;
            }
            request = requests.next() => {
                let Some(first) = request else { break };
                let batch = gather(first, &mut requests, direct, node.timing.max_batch);
                let changes = drain(local, node.timing.max_batch);
                match write_batch(node, partition, epoch, last, batch, changes).await {
                    Some(new_last) => last = new_last,
                    None => break,
                }
            }
            request = direct.recv() => {
                let Some(first) = request else { break };
                let batch = gather(first, &mut requests, direct, node.timing.max_batch);
                let changes = drain(local, node.timing.max_batch);
                match write_batch(node, partition, epoch, last, batch, changes).await {
                    Some(new_last) => last = new_last,
                    None => break,
                }
            }
            change = local.recv() => {
                let Some(first) = change else { break };
                let mut changes = vec![first];
                changes.extend(drain(local, node.timing.max_batch));
                match write_batch(node, partition, epoch, last, Vec::new(), changes).await {
                    Some(new_last) => last = new_last,
                    None => break,
                }
            }
        }
    }
    tracing::info!(node = %node.name, partition, epoch, "partition given up");
    drop(requests);
    node.set_owned(partition, None);
    node.driver
        .disowned(partition, node.replica.users_of(partition));
    release(node, &key, lease.revision).await;
    handed_over
}

/// The live node preferred over this one for `partition`, if any (`None`
/// also when the nodes cannot be read, or this node is not among them:
/// nothing moves on a partial view).
async fn preferred_elsewhere<B: Bus>(node: &NodeInner<B>, partition: u16) -> Option<String> {
    let live = node.bus.lease_list(LeaseBucket::Nodes).await.ok()?;
    let names: Vec<&str> = live.iter().map(|(name, _)| name.as_str()).collect();
    if !names.contains(&node.name.as_str()) {
        return None;
    }
    let first = *preference_order(partition, names.iter().copied()).first()?;
    (first != node.name).then(|| first.to_owned())
}

struct Lease {
    revision: u64,
    renewed: Instant,
}

impl Lease {
    /// Renews the lease; false when it is lost, or when renewals kept
    /// failing for longer than it lives (it has surely expired).
    async fn renew<B: Bus>(&mut self, node: &NodeInner<B>, key: &str) -> bool {
        let value = Bytes::from(node.name.clone());
        match node
            .bus
            .lease_update(LeaseBucket::Owners, key, value, self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.renewed = Instant::now();
                true
            }
            Err(BusError::LeaseLost) => false,
            Err(_) => self.renewed.elapsed() < node.timing.owner_ttl,
        }
    }
}

/// Catches the replica up with the log and appends the epoch marker after
/// it. If an old owner's last batch lands first the append fails; the
/// replica then applies that batch and the marker is tried again.
async fn write_marker<B: Bus>(node: &NodeInner<B>, partition: u16, epoch: u64) -> Option<Seq> {
    let marker = Record::Epoch(EpochMarker {
        node: node.name.clone(),
        epoch,
    })
    .encode();
    for _ in 0..5 {
        let last = node.bus.last_seq(partition).await.ok()?;
        if !node
            .replica
            .wait_applied(partition, last, node.timing.catch_up)
            .await
        {
            return None;
        }
        // A newer owner may have come and gone while this one was stopped
        // between taking the lease and writing its marker: the log then
        // already carries a higher epoch, and this lease is stale. (The
        // simulator found this: without the check, epochs went backwards.)
        // (Read the position first: the epoch read after it covers at
        // least everything up to it.)
        let expected = node.replica.applied().0[usize::from(partition)];
        if node.replica.epoch(partition) >= epoch {
            return None;
        }
        match node
            .bus
            .append(partition, expected, vec![marker.clone()])
            .await
        {
            Ok(seq) => {
                // Timers and devices are restored from a replica that has
                // everything up to the marker.
                node.replica
                    .wait_applied(partition, seq, node.timing.catch_up)
                    .await
                    .then_some(seq)?;
                return Some(seq);
            }
            Err(BusError::WrongLastSequence { .. }) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// A batch: `first`, then whatever else is waiting, from the bus and from
/// this node's own front door alike, up to `max`.
fn gather<S: futures::Stream<Item = Request> + Unpin>(
    first: Request,
    requests: &mut S,
    direct: &mut mpsc::UnboundedReceiver<Request>,
    max: usize,
) -> Vec<Request> {
    let mut batch = vec![first];
    while batch.len() < max {
        match direct.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    while batch.len() < max {
        match requests.next().now_or_never() {
            Some(Some(request)) => batch.push(request),
            _ => break,
        }
    }
    batch
}

/// Answers "not owner" to what this node's front door sent while the
/// partition was (or seemed) its own: the front door then goes through
/// the bus to whoever owns it now.
async fn refuse_direct(direct: &mut mpsc::UnboundedReceiver<Request>) {
    while let Ok(request) = direct.try_recv() {
        request.respond(to_bytes(&CommandReply::NotOwner)).await;
    }
}

fn drain(local: &mut mpsc::UnboundedReceiver<LocalChange>, max: usize) -> Vec<LocalChange> {
    let mut changes = Vec::new();
    while changes.len() < max {
        match local.try_recv() {
            Ok(change) => changes.push(change),
            Err(_) => break,
        }
    }
    changes
}

/// Has the driver apply a batch of commands, appends what they produced
/// and the driver's own changes after `last`, then answers each command.
/// Returns the new last sequence, or `None` when this node must stop
/// owning (deposed, or the outcome is unknown).
async fn write_batch<B: Bus>(
    node: &NodeInner<B>,
    partition: u16,
    epoch: u64,
    last: Seq,
    batch: Vec<Request>,
    changes: Vec<LocalChange>,
) -> Option<Seq> {
    let mut accepted = Vec::with_capacity(batch.len());
    let mut entries = Vec::with_capacity(batch.len() + changes.len());
    for request in batch {
        match serde_json::from_slice::<Command>(&request.payload) {
            Ok(command) => {
                // A command that changes nothing writes nothing; it is
                // answered with the batch's end, which covers every
                // earlier write of its user.
                let written = node.driver.apply(partition, &command).map(|state| {
                    let record = Record::State(StateRecord {
                        user: command.user,
                        epoch,
                        command: command.id,
                        state,
                    });
                    entries.push(record.encode());
                    entries.len()
                });
                accepted.push((request, written));
            }
            // A command this version cannot read: dropped, the sender times out.
            Err(error) => tracing::warn!(%error, "unreadable cluster command"),
        }
    }
    for change in changes {
        let record = Record::State(StateRecord {
            user: change.user,
            epoch,
            command: "local".to_owned(),
            state: change.state,
        });
        entries.push(record.encode());
    }
    let new_last = if entries.is_empty() {
        last
    } else {
        match node.bus.append(partition, last, entries).await {
            Ok(new_last) => new_last,
            Err(error) => {
                tracing::info!(node = %node.name, partition, %error, "append refused: no longer the owner");
                for (request, _) in accepted {
                    request.respond(to_bytes(&CommandReply::NotOwner)).await;
                }
                return None;
            }
        }
    };
    for (request, written) in accepted {
        let seq = written.map_or(new_last, |nth| last + nth as u64);
        let reply = CommandReply::Written { partition, seq };
        request.respond(to_bytes(&reply)).await;
    }
    Some(new_last)
}

async fn release<B: Bus>(node: &NodeInner<B>, key: &str, revision: u64) {
    // Best effort: if this fails the lease runs out by itself.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        node.bus.lease_release(LeaseBucket::Owners, key, revision),
    )
    .await;
}
