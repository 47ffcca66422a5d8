//! Access tokens cached on every node, and dropped on every node when
//! they die.
//!
//! Each node caches token owners (`homeserver/token_cache.rs`) so that a
//! request costs no PostgreSQL round trip. A token that dies on one node
//! (logout, logout/all, deactivation, a device's token replaced by a new
//! login) must be refused by every node once the request that killed it
//! has been answered. So the node that killed it tells every other live
//! node and waits until each has dropped it ([`revoke`]); each node's
//! listener ([`listen`]) drops it and answers.
//!
//! A node that cannot hear the bus would miss that message, so its cache
//! counts only while the bus answered it recently ([`cache_trusted`]:
//! within a heartbeat and a second). [`revoke`] waits a second longer
//! than that for a node that does not answer, so by the time it returns,
//! a node it could not reach has stopped using its cache (and emptied it).
//! A node whose listener had to be set up again empties its cache too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ruma_common::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::link::ClusterLink;

/// What a node calls to drop tokens from its cache: one device's
/// (`Some`), every device's of a user (`None`), or, with no user, all.
pub type ForgetTokens = Arc<dyn Fn(Option<(&UserId, Option<&DeviceId>)>) + Send + Sync>;

/// The topic nodes listen on ([`presenced_cluster::NodeHandle::listen`]).
const TOPIC: &str = "tokens";

/// The message: whose tokens died.
#[derive(Serialize, Deserialize)]
struct Revoked {
    user: OwnedUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<OwnedDeviceId>,
}

/// How recently the bus must have answered this node for its cache to
/// count: one heartbeat, and a second of slack.
fn trust_window(link: &ClusterLink) -> Duration {
    link.heartbeat_every() + Duration::from_secs(1)
}

/// Whether this node's token cache may be used now.
pub(crate) fn cache_trusted(link: &ClusterLink) -> bool {
    link.silent_for() < trust_window(link)
}

/// Tells every other live node that `user`'s tokens (one `device`'s, or
/// all) died, and returns once each has dropped them, or once a node that
/// does not answer can no longer be using its cache.
pub(crate) async fn revoke(link: &ClusterLink, user: &UserId, device: Option<&DeviceId>) {
    let message = Revoked {
        user: user.to_owned(),
        device: device.map(ToOwned::to_owned),
    };
    let payload = Bytes::from(serde_json::to_vec(&message).expect("serializable"));
    let wait = trust_window(link) + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match link.tell_others(TOPIC, payload.clone(), left).await {
            Ok(silent) if silent.is_empty() => return,
            Ok(silent) => {
                // Cut off (its cache stopped counting meanwhile), starting,
                // or dead; a node that is none of these and still did not
                // answer is the one case left open: say so.
                tracing::warn!(%user, ?silent, "nodes did not confirm dropping the tokens of a logout");
                // The wait is what makes a cut-off node's cache stale.
                tokio::time::sleep_until(deadline).await;
                return;
            }
            Err(error) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(%user, %error, "could not tell the other nodes that tokens died");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Drops the tokens other nodes report dead, for as long as the node runs.
pub(crate) fn listen(link: Arc<ClusterLink>, forget: ForgetTokens) {
    tokio::spawn(async move {
        loop {
            match link.listen(TOPIC).await {
                Ok(mut requests) => {
                    while let Some(request) = requests.next().await {
                        match serde_json::from_slice::<Revoked>(&request.payload) {
                            Ok(revoked) => forget(Some((&revoked.user, revoked.device.as_deref()))),
                            // From a newer version, say: to be safe, all.
                            Err(_) => forget(None),
                        }
                        request.respond(Bytes::from_static(b"{}")).await;
                    }
                }
                Err(error) => tracing::debug!(%error, "listening for dead tokens"),
            }
            if link.stopped() {
                return;
            }
            // Anything said while nobody listened is lost: start over.
            forget(None);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
