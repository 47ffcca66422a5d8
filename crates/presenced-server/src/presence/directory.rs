//! The local user directory the `presenced.routers.ServerWide` router reads.

use std::sync::Arc;

use presenced_router::LocalUsers;
use ruma_common::OwnedUserId;

use crate::store::Store;

/// [`LocalUsers`] over the store: every account that is not deactivated.
///
/// The router calls it synchronously on each routing call, so this is a
/// store query under the store's mutex (one indexed scan of `users`): new
/// registrations and deactivations count at once. That suits the
/// organisation-sized servers `ServerWide` is meant for; a server with a
/// very large user base would want a cached snapshot here instead.
pub struct StoreDirectory {
    store: Arc<dyn Store>,
}

impl StoreDirectory {
    /// A directory over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl LocalUsers for StoreDirectory {
    fn local_users(&self) -> Vec<OwnedUserId> {
        self.store.local_users().unwrap_or_else(|e| {
            // The router has no error path for its directory: route to
            // nobody this time rather than fail the whole batch.
            tracing::error!("reading the local user directory failed: {e}");
            Vec::new()
        })
    }
}
