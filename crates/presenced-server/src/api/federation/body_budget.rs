//! How much federation request body presenced holds at once.
//!
//! A transaction body may be 8 MiB, and reading, parsing and checking its
//! signature holds it several times over (the bytes, a JSON tree, the
//! canonical form the signature covers). Bodies are only read once their
//! header and key are checked, but a server that does have a key could
//! still send many large bodies at once; so every body being read takes
//! its size (its `Content-Length`, or the route's limit when it has none)
//! from one budget first, and gives it back when its request is done. A
//! body that finds no room within [`WAIT`] gets 429 `M_LIMIT_EXCEEDED`:
//! the sending server retries the transaction later, as it does after any
//! failure.

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;

/// Bytes of federation bodies read and processed at once: four of the
/// largest transactions, or thousands of ordinary presence ones.
pub(crate) const BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;
/// How long a body waits for room before it is refused.
const WAIT: Duration = Duration::from_secs(5);
/// What a refused sender is told to wait.
const RETRY_AFTER_MS: u64 = 1000;

/// The shared budget (one per [`crate::api::state::AppState`]).
pub(crate) struct BodyBudget(std::sync::Arc<Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        Self(std::sync::Arc::new(Semaphore::new(BUDGET_BYTES / UNIT)))
    }
}

impl BodyBudget {
    /// Room for a body of `bytes` (capped at the whole budget), held until
    /// the permit is dropped.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let units = bytes.div_ceil(UNIT).clamp(1, BUDGET_BYTES / UNIT);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match tokio::time::timeout(WAIT, self.0.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::LimitExceeded {
                retry_after_ms: RETRY_AFTER_MS,
            }),
        }
    }

    /// Bytes of budget free now.
    #[cfg(test)]
    fn available_bytes(&self) -> usize {
        self.0.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_wait_for_room_then_are_refused() {
        let budget = BodyBudget::default();
        let big = budget.reserve(BUDGET_BYTES - 10 * UNIT).await.unwrap();
        let small = budget.reserve(5 * UNIT).await.unwrap();
        assert_eq!(budget.available_bytes(), 5 * UNIT);
        tokio::time::pause();
        let refused = budget.reserve(6 * UNIT).await;
        assert!(matches!(refused, Err(ApiError::LimitExceeded { .. })));
        drop(big);
        drop(small);
        assert_eq!(budget.available_bytes(), BUDGET_BYTES);
        // A body larger than the whole budget takes all of it, not more.
        let _all = budget.reserve(usize::MAX).await.unwrap();
        assert_eq!(budget.available_bytes(), 0);
    }
}
