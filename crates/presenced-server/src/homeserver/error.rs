//! [`Error`]: how a homeserver operation fails, in the homeserver's terms.
//! `api/error.rs` maps each variant to its Matrix `errcode` and status.

use std::error::Error as StdError;

use crate::store::StoreError;

/// A refused or failed homeserver operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed in a way the client can fix.
    #[error("{0}")]
    BadRequest(String),
    /// A JSON field is missing or of the wrong shape.
    #[error("{0}")]
    BadJson(String),
    /// The user may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The room or user does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The user ID is taken.
    #[error("User ID already taken.")]
    UserInUse,
    /// User-interactive auth must go on: the session, and why the attempted
    /// stage failed (if one was attempted).
    #[error("{}", failure.as_deref().unwrap_or("Authentication required"))]
    AuthRequired {
        /// The UIA session to continue.
        session: String,
        /// Why the attempted stage failed, if one was attempted.
        failure: Option<String>,
    },
    /// A rate limit refused the attempt.
    #[error("Too many requests")]
    LimitExceeded {
        /// When the client may try again.
        retry_after_ms: u64,
    },
    /// Storage or a blocking task failed; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl Error {
    /// Wraps any error as an internal one.
    pub fn internal(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserInUse => Self::UserInUse,
            other => Self::internal(other),
        }
    }
}
